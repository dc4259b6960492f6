"""Matching: OpenCV-style matchers (brute force on the cvdeep.ops kernels, LightGlue), the pair matcher
and the homography estimator shared by the applications and the benchmark."""
from __future__ import annotations

from .bf import BFMatcher, BFMatcher_create
from .geometry import ESTIMATORS, find_homography
from .lightglue import LightGlue, LightGlue_create
from .pairs import MATCHERS, ImageFeatures, PairMatcher, detect_features

__all__ = ["ESTIMATORS", "MATCHERS", "BFMatcher", "BFMatcher_create", "ImageFeatures", "LightGlue",
           "LightGlue_create", "PairMatcher", "detect_features", "find_homography"]
