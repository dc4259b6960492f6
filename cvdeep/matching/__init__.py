"""Matching: OpenCV-style matchers (brute force on the cvdeep.ops kernels, LightGlue), the pair matcher,
the test-time rotation search and the homography estimator shared by the applications and the benchmark."""
from __future__ import annotations

from .bf import BFMatcher, BFMatcher_create
from .geometry import ESTIMATORS, find_homography
from .lightglue import LightGlue, LightGlue_create
from .pairs import MATCHERS, ImageFeatures, PairMatcher, detect_features
from .rotation import RotationSearch, match_with_rotation_search

__all__ = ["ESTIMATORS", "MATCHERS", "BFMatcher", "BFMatcher_create", "ImageFeatures", "LightGlue",
           "LightGlue_create", "PairMatcher", "RotationSearch", "detect_features", "find_homography",
           "match_with_rotation_search"]
