"""SOSNet (Tian et al., CVPR 2019): the L2-Net body with second-order similarity regularisation.

Input: ``InstanceNorm2d(1)`` (per-patch mean/variance, eps 1e-5) on a 32x32 patch in 0..255;
output L2-normalised 128-D (the official ``LocalResponseNorm(256, 256, 0.5, 0)`` over 128
channels is exactly an L2 normalisation). Official keys: ``layers.N.*``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..declaration import DescriptorConfig, InputConvention, ModelFamily, Variant
from ..weights import WeightSpec
from .l2net import l2_normalize, l2net_layers
from .patch_descriptor import SIFT_SCALE_FACTOR, PatchDescriptor


class SOSNet(PatchDescriptor):
    """SOSNet: (N, 1, 32, 32) -> (N, 128)."""

    def __init__(self, scale_factor: float = SIFT_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=255.0)
        self.layers = nn.Sequential(nn.InstanceNorm2d(1, affine=False), *l2net_layers(dropout=0.1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.layers(patches))


FAMILIES = (
    ModelFamily(
        name="sosnet",
        public_name="SOSNet",
        kind="patch",
        network=SOSNet,
        config=DescriptorConfig,
        input=InputConvention(channels=1),  # the authors' extraction script: cv2.cvtColor(img, COLOR_BGR2GRAY)
        paper="Tian et al., SOSNet: Second Order Similarity Regularization for Local Descriptor Learning, CVPR 2019",
        summary="SOSNet: the L2-Net body trained with second-order similarity regularisation; 128-D on 32x32 patches "
        "(no licence stated upstream).",
        variants=(
            Variant(
                "sosnet-liberty", "SOSNet trained on Liberty (official)",
                WeightSpec(
                    name="sosnet-liberty", filename="sosnet/sosnet_32x32_liberty.pth",
                    license="none stated upstream (no LICENSE file in the official repository)",
                    source="scape-research/SOSNet sosnet-weights/sosnet_32x32_liberty.pth",
                    urls=("https://github.com/scape-research/SOSNet/raw/master/sosnet-weights/sosnet_32x32_liberty.pth",
                          "https://github.com/yuruntian/SOSNet/raw/master/sosnet-weights/sosnet_32x32_liberty.pth"),
                ),
            ),
        ),
    ),
)
