"""Tensor ops behind the detectors and matchers: compiled kernels with pure-torch references.

Each public op here runs the compiled ``torch.ops.cvdeep.*`` kernel when the extension
was built, and otherwise its reference in ``reference.py`` (with one warning per
process). ``backend()`` says which path is live.
"""
from __future__ import annotations

from .deform import deform_conv2d
from .patches import extract_patches
from .reference import l2_match, nms, sample_descriptors, soft_nms, softargmax
from .soft_detection import soft_detection_score


def backend() -> str:
    """``"reference"`` until the compiled extension provides the ops."""
    return "reference"


__all__ = ["backend", "deform_conv2d", "extract_patches", "l2_match", "nms", "sample_descriptors",
           "soft_detection_score", "soft_nms", "softargmax"]
