"""Matchers with OpenCV's DescriptorMatcher interface: brute force (on the cvdeep.ops kernels) and LightGlue."""
from __future__ import annotations

from .bf import BFMatcher, BFMatcher_create
from .lightglue import LightGlue, LightGlue_create

__all__ = ["BFMatcher", "BFMatcher_create", "LightGlue", "LightGlue_create"]
