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

from ..declaration import DescriptorConfig, InputConvention, ModelFamily, Variant
from ..weights import WeightSpec
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

    weight: torch.Tensor  # buffers
    bias: torch.Tensor

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
    mean: torch.Tensor  # buffers
    std: torch.Tensor

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


_DEEPDESC_FILES = (
    # split, iteration, training sets, sha256
    (4, "073000", "a subset of Liberty, Yosemite and Notre Dame",
     "e89b84c2fe5c86e342684a0e67653f2dfafac00b92182ede4ef86e9279dfd36b"),
    (1, "072000", "Liberty + Yosemite", "e2e7d1b9b274510e4cd86ab0ce70228703c002f2142b26939c7d6335a2876267"),
    (2, "104000", "Liberty + Notre Dame", "bdf83f8d6bc05455eceb0d64036da8e9727826deb3fd2e444513e7d9e9f84017"),
    (3, "067000", "Yosemite + Notre Dame", "e34f186da5bb29563b11372b4eccf48d0d25595b45641a5e7a5fc9f39a245fd3"),
)


def _deepdesc_variant(split: int, iteration: str, trained_on: str, sha256: str) -> Variant:
    file = f"CNN3_p8_n8_split{split}_{iteration}.t7"
    return Variant(
        f"deepdesc-split{split}",
        f"DeepDesc CNN3 trained on {trained_on}" + (" (the authors' recommended model)" if split == 4 else ""),
        WeightSpec(
            name=f"deepdesc-split{split}", filename=f"deepdesc/{file}", sha256=sha256, license="CC-BY-NC-SA-4.0",
            noncommercial=True, reader="cvdeep.nets.deepdesc:read_checkpoint",
            source=f"etrulls/deepdesc-release models/{file}",
            urls=(f"https://github.com/etrulls/deepdesc-release/raw/master/models/{file}",),
        ),
    )


FAMILIES = (
    ModelFamily(
        name="deepdesc",
        public_name="DeepDesc",
        kind="patch",
        network=DeepDesc,
        config=DescriptorConfig,
        # The authors' example (example.lua) converts with Lua torch's image.rgb2y: 0.299 R + 0.587 G
        # + 0.114 B on the float image, not rounded to 8 bits.
        input=InputConvention(channels=1, gray="luminance_float"),
        paper="Simo-Serra et al., Discriminative Learning of Deep Convolutional Feature Point Descriptors, ICCV 2015",
        summary="DeepDesc: a 3-layer CNN on 64x64 patches, 128-D, trained with hard positive/negative mining. "
        "Official weights: CC BY-NC-SA 4.0 (non-commercial; a warning is emitted).",
        variants=tuple(_deepdesc_variant(*entry) for entry in _DEEPDESC_FILES),
    ),
)
