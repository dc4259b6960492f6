"""Pieces every application shares: reading images, features, matching, verified homographies.

Everything goes through the public cv2 contract (``detectAndCompute``, a
``DescriptorMatcher``, ``cv2.findHomography``), so any feature accepted by
``cvdeep.features.create`` (cvdeep models and the OpenCV baselines) works unchanged.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import Error

ESTIMATORS = {
    "magsac": cv2.USAC_MAGSAC,
    "usac": cv2.USAC_DEFAULT,
    "ransac": cv2.RANSAC,
    "rho": cv2.RHO,
    "lmeds": cv2.LMEDS,
}
LOWE_RATIO = 0.8  # Lowe (IJCV 2004), section 7.1
# Brown & Lowe (IJCV 2007), section 3.2: two images overlap when n_inliers > ALPHA + BETA * n_overlap.
OVERLAP_ALPHA, OVERLAP_BETA = 8.0, 0.3


def read_image(path: str | os.PathLike, max_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a colour image, downscaled so its longest side is at most ``max_size``.

    Returns the image and the homography from original to returned pixel coordinates
    (the identity when not resized).
    """
    path = Path(path)
    if not path.exists():
        raise Error(f"{path}: no such file")
    if path.is_dir():
        raise Error(f"{path}: is a directory; expected an image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise Error(f"{path}: not an image OpenCV can read (jpg, png, ppm, pgm, tif, bmp, webp, ...)")
    if max_size is not None and max_size <= 0:
        raise Error(f"max_size must be a positive number of pixels; got {max_size}")
    height, width = image.shape[:2]
    if max_size is None or max(height, width) <= max_size:
        return image, np.eye(3)
    scale = max_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scaling_matrix(size[0] / width, size[1] / height)


def scaling_matrix(scale_x: float, scale_y: float) -> np.ndarray:
    """Homography of a resize by (scale_x, scale_y), pixel centres at integer coordinates."""
    return np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])


@dataclass
class ImageFeatures:
    """Keypoints and descriptors of one image, plus what LightGlue needs (points, size)."""

    keypoints: tuple[cv2.KeyPoint, ...]
    descriptors: np.ndarray | None
    points: np.ndarray  # (N, 2) float32, pixel coordinates of the image the features come from
    size: tuple[int, int]  # (width, height) of that image


def detect(detector: object, image: np.ndarray) -> ImageFeatures:
    """``detectAndCompute`` on one image, with the keypoint coordinates as an array."""
    keypoints, descriptors = detector.detectAndCompute(image, None)
    points = cv2.KeyPoint_convert(keypoints).reshape(-1, 2).astype(np.float32) if keypoints else np.zeros((0, 2), np.float32)
    return ImageFeatures(tuple(keypoints), descriptors, points, (image.shape[1], image.shape[0]))


def available_matchers() -> tuple[str, ...]:
    """Matcher names accepted by :class:`PairMatcher` in this installation."""
    import cvdeep

    return ("nn", "ratio", "mutual") + (("lightglue",) if hasattr(cvdeep, "LightGlue_create") else ())


def _brute_force(norm: int, cross_check: bool = False) -> cv2.DescriptorMatcher:
    """cvdeep's BFMatcher (same contract, faster) when this installation has it, else OpenCV's."""
    import cvdeep

    return getattr(cvdeep, "BFMatcher", cv2.BFMatcher)(norm, crossCheck=cross_check)


class PairMatcher:
    """Tentative matches between two images.

    ``nn``: nearest neighbour; ``ratio``: Lowe's ratio test; ``mutual``: nearest neighbours
    both ways; ``lightglue``: cvdeep's LightGlue for the detector's family (aliked, disk, xfeat).
    """

    def __init__(self, method: str, detector: object, ratio: float = LOWE_RATIO):
        accepted = available_matchers()
        if method not in accepted:
            hint = " (lightglue needs a cvdeep build with cvdeep.LightGlue_create)" if method == "lightglue" else ""
            raise Error(f"unknown matcher {method!r}; accepted: {', '.join(accepted)}{hint}")
        if not 0.0 < ratio <= 1.0:
            raise Error(f"ratio must be in (0, 1]; got {ratio}")
        self.method, self.ratio = method, ratio
        if method == "lightglue":
            import cvdeep

            if not isinstance(detector, cvdeep.Feature2D):
                raise Error(f"the lightglue matcher works with cvdeep's learned features; got {type(detector).__name__}")
            self._matcher = cvdeep.LightGlue_create(features=detector.getModel())
        else:
            self._matcher = _brute_force(detector.defaultNorm(), cross_check=method == "mutual")

    def __call__(self, first: ImageFeatures, second: ImageFeatures) -> np.ndarray:
        """(M, 2) int array of (index in first, index in second)."""
        if first.descriptors is None or second.descriptors is None or not len(first.keypoints) or not len(second.keypoints):
            return np.zeros((0, 2), np.int64)
        if self.method == "ratio":
            candidates = self._matcher.knnMatch(first.descriptors, second.descriptors, k=2)
            matches = [c[0] for c in candidates if len(c) == 2 and c[0].distance < self.ratio * c[1].distance]
        else:
            if self.method == "lightglue":
                self._matcher.setPairInfo(first.points, second.points, first.size, second.size)
            matches = self._matcher.match(first.descriptors, second.descriptors)
        return np.array([(m.queryIdx, m.trainIdx) for m in matches], np.int64).reshape(-1, 2)


@dataclass
class PairGeometry:
    """A homography between two images and how well the matches support it."""

    matches: np.ndarray  # (M, 2) tentative matches
    homography: np.ndarray | None  # maps image 1 pixels to image 2 pixels
    inliers: np.ndarray  # (M,) bool
    overlap_matches: int  # tentative matches whose image-1 point maps inside image 2

    @property
    def inlier_count(self) -> int:
        return int(self.inliers.sum())

    @property
    def confidence(self) -> float:
        """Brown & Lowe's overlap score: above 1 the two images overlap."""
        if self.homography is None:
            return 0.0
        return self.inlier_count / (OVERLAP_ALPHA + OVERLAP_BETA * self.overlap_matches)

    @property
    def overlaps(self) -> bool:
        return self.confidence > 1.0


def estimate_homography(
    first: ImageFeatures,
    second: ImageFeatures,
    matches: np.ndarray,
    method: str = "magsac",
    threshold: float = 3.0,
) -> PairGeometry:
    """Robust homography from the tentative matches, with the overlap statistics."""
    if method not in ESTIMATORS:
        raise Error(f"unknown homography estimator {method!r}; accepted: {', '.join(ESTIMATORS)}")
    if threshold <= 0:
        raise Error(f"the reprojection threshold must be positive; got {threshold}")
    inliers = np.zeros(len(matches), bool)
    if len(matches) < 4:
        return PairGeometry(matches, None, inliers, len(matches))
    source = first.points[matches[:, 0]]
    target = second.points[matches[:, 1]]
    homography, mask = cv2.findHomography(source, target, ESTIMATORS[method], threshold)
    if homography is None or not np.isfinite(homography).all():
        return PairGeometry(matches, None, inliers, len(matches))
    inliers = mask.ravel().astype(bool)
    projected = cv2.perspectiveTransform(source.reshape(-1, 1, 2).astype(np.float64), homography).reshape(-1, 2)
    width, height = second.size
    inside = (projected[:, 0] >= -0.5) & (projected[:, 0] < width - 0.5) & (projected[:, 1] >= -0.5) & (projected[:, 1] < height - 0.5)
    return PairGeometry(matches, homography, inliers, int(inside.sum()))


def create_features(name: str, nfeatures: int | None = None) -> object:
    """A detector by name (``cvdeep.features.create``), with ``nfeatures`` when given."""
    from ..features import create

    if nfeatures is None:
        return create(name)
    try:
        return create(name, nfeatures=nfeatures)
    except TypeError:  # OpenCV factories without that parameter (AKAZE)
        raise Error(f"features {name!r} take no nfeatures parameter") from None


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """--features, --nfeatures, --max-size: what every application asks of the detector."""
    parser.add_argument("--features", default="sift", help="any name cvdeep.features.create accepts: sift, orb, akaze, aliked, disk, xfeat, ... (default: sift)")
    parser.add_argument("--nfeatures", type=int, default=None, help="maximum number of keypoints per image (default: the detector's own)")
    parser.add_argument("--max-size", type=int, default=None, help="work on images downscaled so the longest side is at most this many pixels")


def add_matching_arguments(parser: argparse.ArgumentParser) -> None:
    """The feature options plus --matcher, --ratio, --estimator, --threshold."""
    add_feature_arguments(parser)
    parser.add_argument("--matcher", default="ratio", choices=available_matchers(), help="tentative matches (default: ratio)")
    parser.add_argument("--ratio", type=float, default=LOWE_RATIO, help=f"Lowe's ratio for --matcher ratio (default: {LOWE_RATIO})")
    parser.add_argument("--estimator", default="magsac", choices=sorted(ESTIMATORS), help="robust estimator (default: magsac = cv2.USAC_MAGSAC)")
    parser.add_argument("--threshold", type=float, default=3.0, help="inlier reprojection threshold in pixels (default: 3, as cv2.findHomography)")
