"""Descriptor matching: the OpenCV brute-force matcher contract, backed by cvdeep.ops kernels."""
from __future__ import annotations

from .bf import BFMatcher, BFMatcher_create

__all__ = ["BFMatcher", "BFMatcher_create"]
