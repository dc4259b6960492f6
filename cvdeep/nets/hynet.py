"""HyNet (Tian et al., NeurIPS 2020) and SDGMNet (Deng et al., 2022): one architecture.

The L2-Net topology with Filter Response Normalisation + TLU in place of BatchNorm + ReLU
(also on the input patch), biased convolutions, and a bias-free 8x8 convolution followed
by a BatchNorm without affine parameters; L2-normalised 128-D output. Official keys:
``layer1..layer7`` (``layerK.i.weight/bias/eps/tau``).

The two differ in their input: HyNet's authors (and Key.Net's HyNet pipeline) feed
0..255 patches, SDGMNet was trained on ``ToTensor`` patches in 0..1. FRN divides by the
root mean square plus eps=1e-6, so the range matters for faint patches. SDGMNet's
checkpoints also hold each parameter a second time under ``features.K-1.*`` (an alias
Sequential of the same layers); ``load_pretrained`` accepts and checks them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..declaration import DescriptorConfig, InputConvention, ModelFamily, Variant
from ..weights import TRAINED_LICENSE, WeightSpec
from .l2net import l2_normalize
from .patch_descriptor import SIFT_SCALE_FACTOR, PatchDescriptor


class FilterResponseNorm(nn.Module):
    """FRN: x / sqrt(mean over H, W of x^2 + |eps|) * weight + bias, per sample and channel."""

    eps: torch.Tensor  # a buffer

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("eps", torch.tensor([eps]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.pow(2).mean(dim=(2, 3), keepdim=True)
        return x * torch.rsqrt(mean_square + self.eps.abs()) * self.weight + self.bias


class ThresholdedLinearUnit(nn.Module):
    """TLU: max(x, tau) with a learned threshold per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.tau = nn.Parameter(-torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.max(x, self.tau)


def _conv_frn_tlu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), FilterResponseNorm(cout), ThresholdedLinearUnit(cout)]


class HyNet(PatchDescriptor):
    """HyNet / SDGMNet: (N, 1, 32, 32) -> (N, 128); ``intensity_scale`` 255 (HyNet) or 1 (SDGMNet)."""

    def __init__(self, intensity_scale: float = 255.0, scale_factor: float = SIFT_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=intensity_scale)
        self.layer1 = nn.Sequential(FilterResponseNorm(1), ThresholdedLinearUnit(1), *_conv_frn_tlu(1, 32))
        self.layer2 = nn.Sequential(*_conv_frn_tlu(32, 32))
        self.layer3 = nn.Sequential(*_conv_frn_tlu(32, 64, stride=2))
        self.layer4 = nn.Sequential(*_conv_frn_tlu(64, 64))
        self.layer5 = nn.Sequential(*_conv_frn_tlu(64, 128, stride=2))
        self.layer6 = nn.Sequential(*_conv_frn_tlu(128, 128))
        self.layer7 = nn.Sequential(nn.Dropout(0.3), nn.Conv2d(128, 128, 8, bias=False),
                                    nn.BatchNorm2d(128, affine=False))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5, self.layer6, self.layer7):
            x = layer(x)
        return l2_normalize(x)

    def load_pretrained(self, checkpoint: Any) -> None:
        """Accept a bare state_dict or SDGMNet's ``{"model_state_dict": ...}`` with its ``features.*`` aliases."""
        if isinstance(checkpoint, dict) and "model_state_dict" in checkpoint:
            checkpoint = checkpoint["model_state_dict"]
        state = {}
        aliases = {}
        for key, value in checkpoint.items():
            if key.startswith("features."):
                index, _, rest = key[len("features."):].partition(".")
                aliases[f"layer{int(index) + 1}.{rest}"] = value
            else:
                state[key] = value
        for key, value in aliases.items():
            if key not in state or not torch.equal(state[key], value):
                raise ValueError(f"checkpoint alias features.* disagrees with {key!r}; not an SDGMNet/HyNet file")
        self.load_state_dict(state, strict=True)


_NO_LICENSE = "none stated upstream (no LICENSE file in the official repository)"
_HYNET_FILES = (("liberty", "HyNet_LIB.pth"), ("notredame", "HyNet_ND.pth"), ("yosemite", "HyNet_YOS.pth"))
_SDGMNET_FILES = (("liberty", "li"), ("notredame", "no"), ("yosemite", "yo"))

FAMILIES = (
    ModelFamily(
        name="hynet",
        public_name="HyNet",
        kind="patch",
        network=HyNet,
        config=DescriptorConfig,
        input=InputConvention(channels=1),  # Key.Net-Pytorch's HyNet pipeline reads cv2.imread(path, 0)
        paper="Tian et al., HyNet: Learning Local Descriptor with Hybrid Similarity Measure and Triplet Loss, "
              "NeurIPS 2020",
        summary="HyNet: an FRN/TLU network trained with a hybrid similarity loss; 128-D on 32x32 patches (MIT).",
        variants=tuple(
            Variant(
                f"hynet-{subset}", f"HyNet trained on {subset}, fed 0..255 patches (official)",
                WeightSpec(
                    name=f"hynet-{subset}", filename=f"hynet/{file}", license="MIT",
                    source=f"axelBarroso/Key.Net-Pytorch model/HyNet/weights/{file} (HyNet authors' release)",
                    urls=(f"https://github.com/axelBarroso/Key.Net-Pytorch/raw/main/model/HyNet/weights/{file}",),
                ),
                network_args={"intensity_scale": 255.0},
            )
            for subset, file in _HYNET_FILES
        ),
    ),
    ModelFamily(
        name="sdgmnet",
        public_name="SDGMNet",
        kind="patch",
        network=HyNet,
        config=DescriptorConfig,
        input=InputConvention(channels=1),  # gray patches (Brown/HPatches); cv2's luminance for images
        paper="Deng et al., SDGMNet: Statistic-based Dynamic Gradient Modulation for Local Descriptor Learning, 2022",
        summary="SDGMNet: the HyNet architecture trained with statistic-based dynamic gradient modulation of the "
        "triplet loss; 128-D on 32x32 patches in 0..1.",
        variants=tuple(
            Variant(
                f"sdgmnet-{subset}", f"SDGMNet (HyNet architecture) trained on {subset}, fed 0..1 patches (official)",
                WeightSpec(
                    name=f"sdgmnet-{subset}", filename=f"sdgmnet/model_{tag}.pt", license=_NO_LICENSE,
                    source=f"ACuOoOoO/SDGMNet pretrained/models/model_{tag}.pt",
                    urls=(f"https://github.com/ACuOoOoO/SDGMNet/raw/main/pretrained/models/model_{tag}.pt",),
                ),
                network_args={"intensity_scale": 1.0},
            )
            for subset, tag in _SDGMNET_FILES
        ) + (
            Variant(
                "sdgmnet-cvdeep",
                "SDGMNet trained by cvdeep with the SDGM loss on homography-labelled patches of unlabeled photos "
                "(docs/models/sdgmnet-cvdeep.md)",
                WeightSpec(name="sdgmnet-cvdeep", filename="sdgmnet-cvdeep.pt", license=TRAINED_LICENSE,
                           sha256="921448178f3b3eb980d79d7c096d85558b9d615d4ab20d1822122e83a86d2dcb",
                           source="trained by cvdeep: docs/models/sdgmnet-cvdeep.md", packaged=True,
                           noncommercial=True),
                network_args={"intensity_scale": 1.0},
                trained_by_cvdeep=True,
            ),
        ),
    ),
)
