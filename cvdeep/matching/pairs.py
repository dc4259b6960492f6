"""Features of one image and tentative matches between two: shared by the applications and the benchmark.

``detect_features`` runs any OpenCV-style feature (``cv2.SIFT``, a cvdeep class, a
detector + descriptor pair) and keeps what matchers and metrics need; ``PairMatcher``
turns two such feature sets into ``(M, 2)`` index pairs with one of ``MATCHERS``:

- ``nn``: each query descriptor's nearest neighbour;
- ``ratio``: Lowe's ratio test (IJCV 2004, section 7.1), nearest below ``ratio`` times the second nearest;
- ``mutual``: nearest neighbours both ways (``crossCheck=True``; D2-Net's matcher);
- ``lightglue``: cvdeep's LightGlue for the features it has weights for (``LightGlue.model_names``).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

import cv2
import numpy as np
import torch

from ..errors import Error
from ..keypoints import keypoint_coordinates
from ..models import lightglue_pairings
from .bf import BFMatcher
from .lightglue import LightGlue

#: Lowe's ratio (IJCV 2004, section 7.1).
LOWE_RATIO = 0.8
#: Names accepted by :class:`PairMatcher`.
MATCHERS = ("nn", "ratio", "mutual", "lightglue")

#: ``(normType, crossCheck) -> DescriptorMatcher``: ``cvdeep.BFMatcher`` or ``cv2.BFMatcher``.
BruteForceFactory = Callable[[int, bool], Any]


class Feature(Protocol):
    """What the applications and the benchmark call on a feature (any ``cv2.Feature2D``)."""

    def detectAndCompute(self, image: np.ndarray, mask: np.ndarray | None) -> tuple[Any, Any]: ...

    def defaultNorm(self) -> int: ...

    def descriptorSize(self) -> int: ...

    def descriptorType(self) -> int: ...


@dataclass
class ImageFeatures:
    """Keypoints and descriptors of one image, with what matchers and metrics need beside them."""

    keypoints: tuple[cv2.KeyPoint, ...]
    descriptors: np.ndarray  # (N, D); (0, D) of the feature's type when nothing was found
    points: np.ndarray  # (N, 2) float32 (x, y) pixels of the image the features come from
    size: tuple[int, int]  # (width, height) of that image
    seconds: float = 0.0  # wall time of detectAndCompute

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, keep: np.ndarray) -> ImageFeatures:
        """The features at the indices ``keep``, in that order."""
        keep = np.asarray(keep, dtype=np.int64)
        keypoints = tuple(self.keypoints[i] for i in keep.tolist())
        return replace(self, keypoints=keypoints, descriptors=self.descriptors[keep], points=self.points[keep])


def empty_descriptors(feature: Feature) -> np.ndarray:
    """(0, D) descriptors of ``feature``'s size and type (uint8 for binary ones, else float32)."""
    dtype = np.uint8 if feature.descriptorType() == cv2.CV_8U else np.float32
    return np.zeros((0, feature.descriptorSize()), dtype)


def detect_features(feature: Feature, image: np.ndarray, mask: np.ndarray | None = None) -> ImageFeatures:
    """``feature.detectAndCompute(image, mask)`` (timed), with the keypoint coordinates as an array."""
    start = time.perf_counter()
    keypoints, descriptors = feature.detectAndCompute(image, mask)
    seconds = time.perf_counter() - start
    keypoints = tuple(keypoints)
    if descriptors is None or len(keypoints) == 0:
        descriptors = empty_descriptors(feature)
    return ImageFeatures(keypoints, np.asarray(descriptors), keypoint_coordinates(keypoints),
                         (image.shape[1], image.shape[0]), seconds)


# --- descriptor matching, the one implementation of nn / ratio / mutual ---------------------


def _as_pairs(matches: Sequence[Any]) -> np.ndarray:
    return np.array([(m.queryIdx, m.trainIdx) for m in matches], np.int64).reshape(-1, 2)


def _prepare(descriptors1: np.ndarray, descriptors2: np.ndarray, norm: int) -> tuple[np.ndarray, np.ndarray]:
    """Hamming norms need uint8 rows; the L1/L2 family float32."""
    dtype = np.uint8 if norm in (cv2.NORM_HAMMING, cv2.NORM_HAMMING2) else np.float32
    return np.ascontiguousarray(descriptors1, dtype), np.ascontiguousarray(descriptors2, dtype)


def nearest_neighbours(descriptors1: np.ndarray, descriptors2: np.ndarray, norm: int,
                       brute_force: BruteForceFactory = BFMatcher, cross_check: bool = False) -> np.ndarray:
    """(M, 2) pairs (row of 1, its nearest row of 2); with ``cross_check`` only the pairs that are
    each other's nearest neighbour."""
    if len(descriptors1) == 0 or len(descriptors2) == 0:
        return _as_pairs([])
    return _as_pairs(brute_force(norm, cross_check).match(*_prepare(descriptors1, descriptors2, norm)))


def mutual_nearest_neighbours(descriptors1: np.ndarray, descriptors2: np.ndarray, norm: int,
                              brute_force: BruteForceFactory = BFMatcher) -> np.ndarray:
    """(M, 2) pairs of rows that are each other's nearest neighbour (``crossCheck=True``; D2-Net's matcher)."""
    return nearest_neighbours(descriptors1, descriptors2, norm, brute_force, cross_check=True)


def ratio_test(descriptors1: np.ndarray, descriptors2: np.ndarray, norm: int, ratio: float = LOWE_RATIO,
               brute_force: BruteForceFactory = BFMatcher) -> np.ndarray:
    """(M, 2) nearest neighbours 1 -> 2 closer than ``ratio`` times the second nearest (Lowe's test)."""
    if len(descriptors1) == 0 or len(descriptors2) < 2:
        return _as_pairs([])
    candidates = brute_force(norm, False).knnMatch(*_prepare(descriptors1, descriptors2, norm), k=2)
    return _as_pairs([c[0] for c in candidates if len(c) == 2 and c[0].distance < ratio * c[1].distance])


def descriptor_distances(descriptors1: np.ndarray, descriptors2: np.ndarray, norm: int) -> np.ndarray:
    """(M,) float64 distances between the rows of two (M, D) arrays under an OpenCV norm (``BFMatcher``'s)."""
    first, second = _prepare(descriptors1, descriptors2, norm)
    if norm in (cv2.NORM_HAMMING, cv2.NORM_HAMMING2):
        if norm == cv2.NORM_HAMMING2:
            raise Error("descriptor_distances: NORM_HAMMING2 is not supported; accepted: NORM_L1, NORM_L2, "
                        "NORM_L2SQR, NORM_HAMMING")
        return np.unpackbits(np.bitwise_xor(first, second), axis=1).sum(axis=1).astype(np.float64)
    difference = first.astype(np.float64) - second.astype(np.float64)
    if norm == cv2.NORM_L1:
        return np.abs(difference).sum(axis=1)
    squared = (difference * difference).sum(axis=1)
    return squared if norm == cv2.NORM_L2SQR else np.sqrt(squared)


class PairMatcher:
    """Tentative matches between the features of two images: ``matcher(first, second) -> (M, 2)``
    int64 pairs (index into ``first``, index into ``second``).

    ``method`` is one of ``MATCHERS``; ``feature`` is the feature that made the descriptors
    (its ``defaultNorm()`` for brute force; its family picks LightGlue's weights, and a
    feature LightGlue has no weights for is refused with ``cvdeep.Error``). ``brute_force``
    builds the brute-force matcher (``cvdeep.BFMatcher`` by default, ``cv2.BFMatcher`` gives
    the same matches); ``device`` and ``lightglue_precision`` are LightGlue's (its default device
    when None). ``name`` is how error messages call the feature (default: its class name).
    """

    def __init__(self, method: str, feature: Feature, ratio: float = LOWE_RATIO,
                 brute_force: BruteForceFactory = BFMatcher, device: str | torch.device | None = None,
                 name: str | None = None, lightglue_precision: str = "fp32") -> None:
        if method not in MATCHERS:
            raise Error(f"unknown matcher {method!r}; accepted: {', '.join(MATCHERS)}")
        if not 0.0 < ratio <= 1.0:
            raise Error(f"ratio must be in (0, 1]; got {ratio}")
        self.method, self.ratio, self.brute_force = method, ratio, brute_force
        self.norm = int(feature.defaultNorm())
        self.lightglue: LightGlue | None = None
        if method == "lightglue":
            pairings = lightglue_pairings()
            getter = getattr(feature, "getModel", None)
            model = getter() if callable(getter) else None
            if model not in pairings:
                accepted = ", ".join(sorted(pairings))
                raise Error(f"matcher 'lightglue': LightGlue has weights for the features {accepted}; "
                            f"got {name or type(feature).__name__!r}")
            self.lightglue = LightGlue(model, device="cpu" if device is None else device,
                                       precision=lightglue_precision)

    def __call__(self, first: ImageFeatures, second: ImageFeatures) -> np.ndarray:
        if self.lightglue is not None:
            return self.match_with_scores(first, second)[0]
        return self._brute_force(first, second)

    def match_with_scores(self, first: ImageFeatures, second: ImageFeatures) -> tuple[np.ndarray, np.ndarray]:
        """The matches and a (M,) float32 score each, higher is better: LightGlue's confidence (most confident
        first, as ``LightGlue.match``), or 1 / (1 + descriptor distance) for the brute-force matchers."""
        if self.lightglue is not None:
            if len(first) == 0 or len(second) == 0:
                return _as_pairs([]), np.zeros(0, np.float32)
            pairs, confidences = self.lightglue.match_features(first.points, first.descriptors, first.size,
                                                               second.points, second.descriptors, second.size)
            order = np.argsort(-confidences, kind="stable")
            return pairs[order], confidences[order]
        pairs = self._brute_force(first, second)
        distances = descriptor_distances(first.descriptors[pairs[:, 0]], second.descriptors[pairs[:, 1]], self.norm)
        return pairs, (1.0 / (1.0 + distances)).astype(np.float32)

    def _brute_force(self, first: ImageFeatures, second: ImageFeatures) -> np.ndarray:
        if self.method == "ratio":
            return ratio_test(first.descriptors, second.descriptors, self.norm, self.ratio, self.brute_force)
        if self.method == "mutual":
            return mutual_nearest_neighbours(first.descriptors, second.descriptors, self.norm, self.brute_force)
        return nearest_neighbours(first.descriptors, second.descriptors, self.norm, self.brute_force)
