"""Helpers of the multi-scale extractors (Key.Net, R2D2, D2-Net): merging per-level detections."""
from __future__ import annotations

import torch

from .base import Features


def merge_levels(levels: list[Features], max_keypoints: int) -> Features:
    """Concatenate per-level features (same keys), sort by descending score (stable), keep the best
    ``max_keypoints`` (all when <= 0)."""
    merged = {key: torch.cat([level[key] for level in levels]) for key in levels[0]}
    order = torch.argsort(merged["scores"], descending=True, stable=True)
    if max_keypoints > 0:
        order = order[:max_keypoints]
    return {key: value[order] for key, value in merged.items()}
