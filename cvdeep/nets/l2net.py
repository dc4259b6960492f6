"""L2-Net (Tian et al., CVPR 2017) and its central-surround (CS) variant.

Seven convolutions on a 32x32 patch (3x3: 32, 32, 64 stride 2, 64, 128 stride 2, 128;
then 8x8 -> 128), each followed by a BatchNorm without affine parameters and, except
the last, a ReLU; the output is L2-normalised. HardNet and SOSNet reuse this body
(``l2net_layers``). Input as in the authors' MatConvNet code: 0..255 intensities, the
training set's per-pixel mean subtracted, then each patch standardised.
The CS variant runs a second tower on the central 32x32 of a 64x64 patch while the
first sees the whole patch at half resolution, and concatenates both (256-D).

The official weights are MatConvNet ``.mat`` files; this module loads a torch
state_dict with the keys of ``L2Net.state_dict()`` (``tower.*``, ``center_tower.*``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .patch_descriptor import SIFT_SCALE_FACTOR, PatchDescriptor

L2_EPS = 1e-10


def l2net_layers(dropout: float) -> list[nn.Module]:
    """The L2-Net body in the official module order (HardNet's ``features.N`` indices)."""
    layers: list[nn.Module] = []
    widths = [(1, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
    for cin, cout, stride in widths:
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(cout, affine=False), nn.ReLU()]
    layers += [nn.Dropout(dropout), nn.Conv2d(128, 128, 8, bias=False), nn.BatchNorm2d(128, affine=False)]
    return layers


def l2_normalize(descriptors: torch.Tensor) -> torch.Tensor:
    """Rows divided by sqrt(sum of squares + 1e-10), as the reference implementations do."""
    flat = descriptors.flatten(1)
    return flat / flat.pow(2).sum(dim=1, keepdim=True).add(L2_EPS).sqrt()


def standardize_patches(patches: torch.Tensor, eps: float) -> torch.Tensor:
    """Each patch to zero mean and unit (unbiased) standard deviation; ``eps`` added to the std."""
    std, mean = torch.std_mean(patches, dim=(1, 2, 3), keepdim=True)
    return (patches - mean) / (std + eps)


class L2NetTower(nn.Module):
    """One L2-Net tower on 32x32 patches in 0..255."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(1, 1, 32, 32))
        self.features = nn.Sequential(*l2net_layers(dropout=0.0))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        centred = standardize_patches(patches - self.pixel_mean, eps=1e-12)
        return l2_normalize(self.features(centred))


class L2Net(PatchDescriptor):
    """L2-Net descriptor: (N, 1, 32, 32) -> (N, 128), or CS: (N, 1, 64, 64) -> (N, 256)."""

    def __init__(self, central_surround: bool = False, scale_factor: float = SIFT_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=255.0)
        self.central_surround = central_surround
        self.tower = L2NetTower()
        if central_surround:
            self.center_tower = L2NetTower()
            self.patch_size, self.descriptor_size = 64, 256

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if not self.central_surround:
            return self.tower(patches)
        surround = F.avg_pool2d(patches, 2)  # the whole 64x64 patch at 32x32
        center = patches[..., 16:48, 16:48]
        return torch.cat([self.tower(surround), self.center_tower(center)], dim=1)
