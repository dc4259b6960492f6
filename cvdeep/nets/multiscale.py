"""Helpers of the multi-scale extractors (Key.Net, R2D2, D2-Net): merging per-level detections."""
from __future__ import annotations

import torch

from .. import ops
from ..declaration import DetectorConfig
from .base import Features, on_valid_pixels


def no_keypoints(like: torch.Tensor, descriptor_size: int = 0) -> Features:
    """The features of a multi-scale extraction that found no level to work on (a tiny or very thin image)."""
    empty = like.new_zeros(0)
    features = {"keypoints": like.new_zeros((0, 2)), "scores": empty, "sizes": empty,
                "octaves": torch.zeros(0, dtype=torch.int32, device=like.device)}
    if descriptor_size:
        features["descriptors"] = like.new_zeros((0, descriptor_size))
    return features


def merge_levels(levels: list[Features], config: DetectorConfig, valid: torch.Tensor | None = None) -> Features:
    """Concatenate per-level features (same keys, keypoints in input pixels) and select.

    Keypoints whose input pixel is not ``valid`` (1, 1, H, W) are dropped first: a level's
    pixel maps back to a point that may fall just outside the valid pixel it was checked at.
    Hard NMS (each level already suppressed its own non-maxima): the keypoints scoring above
    ``config.detection_threshold``, sorted by descending score (stable), the best
    ``config.nfeatures`` (all when 0). Soft NMS: greedy Gaussian soft-NMS over all levels at
    once in input pixels, which also thins out detections of one structure at several scales.
    """
    merged = {key: torch.cat([level[key] for level in levels]) for key in levels[0]}
    if valid is not None:
        keep = on_valid_pixels(merged["keypoints"], valid)
        merged = {key: value[keep] for key, value in merged.items()}
    scores = merged["scores"]
    if config.nms == "soft":
        _, decayed, index = ops.soft_nms(
            merged["keypoints"], scores, config.soft_nms_sigma, config.nfeatures or -1, config.detection_threshold
        )
        selected = {key: value[index] for key, value in merged.items()}
        selected["scores"] = decayed
        return selected
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[scores[order] > config.detection_threshold]
    if config.nfeatures > 0:
        order = order[: config.nfeatures]
    return {key: value[order] for key, value in merged.items()}


def level_nms_radius(config: DetectorConfig) -> int:
    """Per-level NMS radius: the configured one, or 1 (3x3 maxima as soft-NMS candidates) in soft mode."""
    return 1 if config.nms == "soft" else config.nms_radius
