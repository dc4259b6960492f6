"""Descriptor matchers the benchmark can use, by name.

A matcher takes two descriptor arrays and the feature's OpenCV norm and returns ``(M, 2)``
int indices (A, B). ``register_matcher`` lets other parts of cvdeep (e.g. LightGlue) add
theirs without touching the runner.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ..errors import Error

Matcher = Callable[[np.ndarray, np.ndarray, int], np.ndarray]

#: Lowe's ratio (IJCV 2004) used by the "ratio" matcher.
LOWE_RATIO = 0.8


def _as_pairs(pairs: list[tuple[int, int]]) -> np.ndarray:
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _prepare(descriptors_a: np.ndarray, descriptors_b: np.ndarray, norm: int) -> tuple[np.ndarray, np.ndarray]:
    """Hamming norms need uint8 rows; the L2 family float32."""
    dtype = np.uint8 if norm in (cv2.NORM_HAMMING, cv2.NORM_HAMMING2) else np.float32
    return np.ascontiguousarray(descriptors_a, dtype), np.ascontiguousarray(descriptors_b, dtype)


def mutual_nearest_neighbours(descriptors_a: np.ndarray, descriptors_b: np.ndarray, norm: int) -> np.ndarray:
    """Pairs that are each other's nearest neighbour (D2-Net's matcher; ``crossCheck=True``)."""
    if len(descriptors_a) == 0 or len(descriptors_b) == 0:
        return _as_pairs([])
    a, b = _prepare(descriptors_a, descriptors_b, norm)
    matches = cv2.BFMatcher(norm, crossCheck=True).match(a, b)
    return _as_pairs([(m.queryIdx, m.trainIdx) for m in matches])


def ratio_test(descriptors_a: np.ndarray, descriptors_b: np.ndarray, norm: int,
               ratio: float = LOWE_RATIO) -> np.ndarray:
    """A -> B nearest neighbours whose distance is below ``ratio`` times the second nearest."""
    if len(descriptors_a) == 0 or len(descriptors_b) < 2:
        return _as_pairs([])
    a, b = _prepare(descriptors_a, descriptors_b, norm)
    knn = cv2.BFMatcher(norm).knnMatch(a, b, k=2)
    return _as_pairs([(m[0].queryIdx, m[0].trainIdx) for m in knn
                      if len(m) == 2 and m[0].distance < ratio * m[1].distance])


MATCHERS: dict[str, Matcher] = {"mutual": mutual_nearest_neighbours, "ratio": ratio_test}


def register_matcher(name: str, matcher: Matcher) -> None:
    """Make ``matcher`` available to ``cvdeep bench --matcher name``."""
    MATCHERS[name.lower()] = matcher


def get_matcher(name: str) -> Matcher:
    """The matcher registered under ``name``; ``cvdeep.Error`` listing the accepted names otherwise."""
    matcher = MATCHERS.get(name.lower())
    if matcher is None:
        raise Error(f"matcher: got {name!r}; expected one of {', '.join(sorted(MATCHERS))}")
    return matcher
