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

from ..declaration import DescriptorConfig, InputConvention, ModelFamily, Variant
from ..weights import WeightSpec
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


_TFEAT_FILES = (
    ("liberty", "1f2e9516b03c45876161da006ce8047e0a66ef08cc91d3fbf96a75f1a80f445a"),
    ("notredame", "71b9fe3e2a5ec4b90eb5c92c9eb0565504fba8bd2b6a7fa3b7e79d9df6e146a6"),
    ("yosemite", "548d65103b9e4d7c1f9242d613df96df14a456a2b44565f2c7faed7cbd928e8d"),
)

FAMILIES = (
    ModelFamily(
        name="tfeat",
        public_name="TFeat",
        kind="patch",
        network=TFeat,
        config=DescriptorConfig,
        input=InputConvention(channels=1),  # the authors' OpenCV demo reads images with cv2.imread(path, 0)
        paper="Balntas et al., Learning local feature descriptors with triplets and shallow convolutional neural "
        "networks, BMVC 2016",
        summary="TFeat: a shallow triplet network on 32x32 patches, 128-D (MIT).",
        variants=tuple(
            Variant(
                f"tfeat-{subset}",
                f"TFeat trained on {subset}",
                WeightSpec(
                    name=f"tfeat-{subset}", filename=f"tfeat/tfeat-{subset}.params", sha256=sha256, license="MIT",
                    source=f"vbalnt/tfeat pretrained-models/tfeat-{subset}.params",
                    urls=(f"https://github.com/vbalnt/tfeat/raw/master/pretrained-models/tfeat-{subset}.params",),
                ),
            )
            for subset, sha256 in _TFEAT_FILES
        ),
    ),
)
