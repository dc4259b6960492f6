"""DeepDesc (Simo-Serra et al., ICCV 2015), the released CNN3 model.

64x64 patch in 0..255, normalised per pixel by the training set's mean and std maps,
then three stages of conv -> tanh -> L2 pooling, with Torch7's subtractive normalisation
(a 5x5 Gaussian local mean shared by all channels, divided by its response to a constant
image so the borders are not darkened) after the first two. Output 128-D, not normalised.
Keys follow the Torch7 file read by ``cvdeep.nets.torch7``: ``desc.<index>.*``, ``mean``, ``std``.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .patch_descriptor import SIFT_SCALE_FACTOR, PatchDescriptor
from .torch7 import t7_state_dict


class L2Pooling(nn.Module):
    """sqrt of the sum of squares over non-overlapping k x k windows (Torch7 SpatialLPPooling, p=2)."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.pow(2), self.kernel).mul(self.kernel**2).sqrt()


class SubtractiveNormalization(nn.Module):
    """x minus a local mean over space and channels; the mean is border-corrected."""

    def __init__(self, channels: int, kernel: int = 5) -> None:
        super().__init__()
        self.register_buffer("weight", torch.full((1, channels, kernel, kernel), 1.0 / (channels * kernel**2)))
        self.register_buffer("bias", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.weight.shape[-1] // 2
        local_mean = F.conv2d(x, self.weight, self.bias, padding=padding)
        coverage = F.conv2d(torch.ones_like(x[:1]), self.weight, self.bias, padding=padding)
        return x - local_mean / coverage


class DeepDesc(PatchDescriptor):
    """DeepDesc CNN3: (N, 1, 64, 64) in 0..255 -> (N, 128)."""

    patch_size = 64
    chunk = 256  # its first layer keeps 32 x 58 x 58 floats per patch

    def __init__(self, scale_factor: float = SIFT_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=255.0)
        self.register_buffer("mean", torch.full((1, 64, 64), 128.0))
        self.register_buffer("std", torch.full((1, 64, 64), 64.0))
        self.desc = nn.Sequential(
            nn.Conv2d(1, 32, 7), nn.Tanh(), L2Pooling(2), SubtractiveNormalization(32),
            nn.Conv2d(32, 64, 6), nn.Tanh(), L2Pooling(3), SubtractiveNormalization(64),
            nn.Conv2d(64, 128, 5), nn.Tanh(), L2Pooling(4), nn.Flatten(),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.desc((patches - self.mean) / self.std)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The official ``CNN3_*.t7`` as a state_dict for ``DeepDesc`` (the weights hub's reader)."""
    return t7_state_dict(path)
