"""What every patch descriptor (DeepDesc, TFeat, HardNet, ...) shares.

``forward`` is the network alone: patches ``(N, 1, P, P)`` in the intensity range its
authors trained on -> descriptors ``(N, D)``. ``describe`` crops those patches around
any keypoints with ``cvdeep.ops.extract_patches`` and runs the network in chunks.
"""
from __future__ import annotations

from typing import Any

import torch

from ..ops import extract_patches  # float32 under autocast (cvdeep.precision)
from .base import Extractor

SIFT_SCALE_FACTOR = 12.0
"""Patch side in units of ``KeyPoint.size`` for SIFT keypoints. kornia_moons'
``laf_from_opencv_SIFT_kpts`` (by HardNet's author) turns an OpenCV SIFT keypoint into a
frame of half-side ``6 x size``, and kornia's ``DoGHardNet`` describes its 6-sigma DoG frames
scaled by two, i.e. half-side 12 sigma = ``6 x size`` (OpenCV's SIFT ``size`` is 2 sigma):
a patch side of ``12 x size``, twice the support of SIFT's own descriptor. All seven networks
were trained on patches of the same Brown/HPatches geometry, so they share it; each model
may override it in its config."""


class PatchDescriptor(Extractor):
    """Base of the patch descriptors: a network on square patches plus its patch geometry."""

    patch_size: int = 32
    descriptor_size: int = 128
    chunk: int = 512  # patches per forward pass: bounds activation memory (HardNet: ~70 MB) for any keypoint count

    def __init__(self, scale_factor: float, intensity_scale: float) -> None:
        """``scale_factor``: patch side in units of ``KeyPoint.size``; ``intensity_scale``:
        the value white takes in the network's input (255 or 1)."""
        super().__init__()
        self.scale_factor = float(scale_factor)
        self.intensity_scale = float(intensity_scale)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """Descriptors (N, D) of (N, 1, P, P) patches in [0, 1]: the network on its authors'
        intensity range. Inference (``describe``) and training both go through here."""
        return self(patches * self.intensity_scale)

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: Any = None,
    ) -> torch.Tensor:
        """Descriptors (N, D) of the patches around ``keypoints`` of a (1, 1, H, W) image in [0, 1]."""
        if sizes is None:
            raise ValueError(f"{type(self).__name__} needs keypoint sizes to crop its patches")
        rows = []
        for start in range(0, keypoints.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            patches = extract_patches(
                image, keypoints[part], sizes[part], None if angles is None else angles[part],
                self.patch_size, self.scale_factor,
            )
            rows.append(self.embed(patches))
        if not rows:
            return image.new_zeros((0, self.descriptor_size))
        return torch.cat(rows)
