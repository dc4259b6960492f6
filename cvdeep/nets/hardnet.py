"""HardNet (Mishchuk et al., NeurIPS 2017): the L2-Net body trained with a hardest-negative loss.

Input: each 32x32 patch standardised (mean 0, unbiased std + 1e-7), so the intensity
range does not matter. Output: L2-normalised 128-D. Official checkpoints (DagnyT/hardnet)
are ``{"state_dict": {"features.N.*": ...}, ...}``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

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
