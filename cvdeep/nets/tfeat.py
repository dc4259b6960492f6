"""TFeat (Balntas et al., BMVC 2016): a shallow triplet-trained network on 32x32 patches.

InstanceNorm (per-patch mean/std) -> conv7x7 32 -> tanh -> maxpool 2 -> conv6x6 64 -> tanh
-> linear 4096 -> 128 -> tanh. The output is not L2-normalised (as the original). Keys as
in vbalnt/tfeat ``TNet``: ``features.{1,4}``, ``descr.0``. The authors' OpenCV demo crops
``3 x KeyPoint.size`` around BRISK keypoints; for SIFT-sized keypoints the default here is
the patch side of the other Brown-trained descriptors (see ``patch_descriptor``).
"""
from __future__ import annotations

import torch
from torch import nn

from .patch_descriptor import SIFT_SCALE_FACTOR, PatchDescriptor


class TFeat(PatchDescriptor):
    """TFeat: (N, 1, 32, 32) -> (N, 128)."""

    def __init__(self, scale_factor: float = SIFT_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=255.0)
        self.features = nn.Sequential(
            nn.InstanceNorm2d(1, affine=False),
            nn.Conv2d(1, 32, 7),
            nn.Tanh(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 6),
            nn.Tanh(),
        )
        self.descr = nn.Sequential(nn.Linear(64 * 8 * 8, 128), nn.Tanh())

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.descr(self.features(patches).flatten(1))
