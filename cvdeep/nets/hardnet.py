"""HardNet (Mishchuk et al., NeurIPS 2017): the L2-Net body trained with a hardest-negative loss.

Input: each 32x32 patch standardised (mean 0, unbiased std + 1e-7), so the intensity
range does not matter. Output: L2-normalised 128-D. Official checkpoints (DagnyT/hardnet)
are ``{"state_dict": {"features.N.*": ...}, ...}``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..declaration import DescriptorConfig, InputConvention, ModelFamily, Variant
from ..weights import TRAINED_LICENSE, WeightSpec
from .l2net import l2_normalize, l2net_layers, standardize_patches
from .patch_descriptor import SIFT_SCALE_FACTOR, PatchDescriptor


class HardNet(PatchDescriptor):
    """HardNet: (N, 1, 32, 32) -> (N, 128)."""

    def __init__(self, scale_factor: float = SIFT_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=255.0)
        self.features = nn.Sequential(*l2net_layers(dropout=0.3))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.features(standardize_patches(patches, eps=1e-7)))

    def load_pretrained(self, checkpoint: Any) -> None:
        """Accept the official ``{"state_dict": ...}`` wrapper or a bare state_dict."""
        if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
            checkpoint = checkpoint["state_dict"]
        self.load_state_dict(checkpoint, strict=True)


_HARDNET_URL = "https://github.com/DagnyT/hardnet/raw/master/pretrained/"

FAMILIES = (
    ModelFamily(
        name="hardnet",
        public_name="HardNet",
        kind="patch",
        network=HardNet,
        config=DescriptorConfig,
        # The authors' one colour-image pipeline (examples/extract_DenseHardNet.py) averages R, G and B
        # (PIL RGB, np.mean over channels); their patch files are already gray.
        input=InputConvention(channels=1, gray="mean"),
        paper="Mishchuk et al., Working hard to know your neighbor's margins: Local descriptor learning loss, "
              "NeurIPS 2017",
        summary="HardNet: the L2-Net body trained with the hardest-in-batch triplet margin loss; "
                "128-D on 32x32 patches.",
        variants=(
            Variant(
                "hardnet-liberty-aug", "HardNet trained on Liberty with augmentation (official, MIT)",
                WeightSpec(
                    name="hardnet-liberty-aug", filename="hardnet/checkpoint_liberty_with_aug.pth", license="MIT",
                    source="DagnyT/hardnet pretrained/train_liberty_with_aug/checkpoint_liberty_with_aug.pth",
                    urls=(_HARDNET_URL + "train_liberty_with_aug/checkpoint_liberty_with_aug.pth",),
                ),
            ),
            Variant(
                "hardnet++", "HardNet++ trained on Brown and HPatches (official, MIT)",
                WeightSpec(
                    name="hardnet++", filename="hardnet/HardNet++.pth", license="MIT",
                    source="DagnyT/hardnet pretrained/pretrained_all_datasets/HardNet++.pth",
                    urls=(_HARDNET_URL + "pretrained_all_datasets/HardNet++.pth",),
                ),
            ),
            Variant(
                "hardnet-cvdeep",
                "HardNet trained by cvdeep (hardest-in-batch triplet loss) on homography-labelled patches of unlabeled "
                "photos (docs/models/hardnet-cvdeep.md)",
                WeightSpec(name="hardnet-cvdeep", filename="hardnet-cvdeep.pt", license=TRAINED_LICENSE,
                           sha256="8590f097c7027f5ebfc212d99886ba05e22386f7b9c311ebe81d084abe188ecb",
                           source="trained by cvdeep: docs/models/hardnet-cvdeep.md", packaged=True,
                           noncommercial=True),
                trained_by_cvdeep=True,
                input=InputConvention(channels=1),  # trained on cv2's IMREAD_GRAYSCALE photos (luminance)
            ),
        ),
    ),
)
