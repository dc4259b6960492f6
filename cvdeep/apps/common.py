"""Pieces every application shares: the command-line options and verified homographies.

Everything goes through the public cv2 contract (``detectAndCompute``, a
``DescriptorMatcher``, ``cv2.findHomography``), so any feature accepted by
``cvdeep.features.create`` (cvdeep models and the OpenCV baselines) works unchanged.
Reading images, features, matchers and the homography estimator are the ones the
benchmark uses too (``cvdeep.image``, ``cvdeep.matching``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from ..errors import Error
from ..matching.geometry import ESTIMATORS, find_homography
from ..matching.pairs import LOWE_RATIO, MATCHERS, Feature, ImageFeatures

# Brown & Lowe (IJCV 2007), section 3.2: two images overlap when n_inliers > ALPHA + BETA * n_overlap.
OVERLAP_ALPHA, OVERLAP_BETA = 8.0, 0.3


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


def pair_geometry(
    first: ImageFeatures,
    second: ImageFeatures,
    matches: np.ndarray,
    method: str = "magsac",
    threshold: float = 3.0,
) -> PairGeometry:
    """Robust homography from the tentative matches (``find_homography``), with the overlap statistics."""
    source = first.points[matches[:, 0]]
    homography, inliers = find_homography(source, second.points[matches[:, 1]], method, threshold)
    if homography is None:
        return PairGeometry(matches, None, inliers, len(matches))
    projected = cv2.perspectiveTransform(source.reshape(-1, 1, 2).astype(np.float64), homography).reshape(-1, 2)
    width, height = second.size
    inside = ((projected[:, 0] >= -0.5) & (projected[:, 0] < width - 0.5)
              & (projected[:, 1] >= -0.5) & (projected[:, 1] < height - 0.5))
    return PairGeometry(matches, homography, inliers, int(inside.sum()))


def create_features(name: str, nfeatures: int | None = None) -> Feature:
    """A detector by name (``cvdeep.features.create``), with ``nfeatures`` when given."""
    from ..features import create

    if nfeatures is None:
        return cast(Feature, create(name))
    try:
        return cast(Feature, create(name, nfeatures=nfeatures))
    except TypeError:  # OpenCV factories without that parameter (AKAZE)
        raise Error(f"features {name!r} take no nfeatures parameter") from None


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """--features, --nfeatures, --max-size: what every application asks of the detector."""
    parser.add_argument("--features", default="sift",
                        help="any name cvdeep.features.create accepts: sift, orb, akaze, aliked, disk, xfeat, ... "
                             "(default: sift)")
    parser.add_argument("--nfeatures", type=int, default=None,
                        help="maximum number of keypoints per image (default: the detector's own)")
    parser.add_argument("--max-size", type=int, default=None,
                        help="work on images downscaled so the longest side is at most this many pixels")


def add_matching_arguments(parser: argparse.ArgumentParser) -> None:
    """The feature options plus --matcher, --ratio, --estimator, --threshold."""
    add_feature_arguments(parser)
    parser.add_argument("--matcher", default="ratio", choices=MATCHERS,
                        help="tentative matches (default: ratio; lightglue: with aliked, disk or xfeat)")
    parser.add_argument("--ratio", type=float, default=LOWE_RATIO,
                        help=f"Lowe's ratio for --matcher ratio (default: {LOWE_RATIO})")
    parser.add_argument("--estimator", default="magsac", choices=sorted(ESTIMATORS),
                        help="robust estimator (default: magsac = cv2.USAC_MAGSAC)")
    parser.add_argument("--threshold", type=float, default=3.0,
                        help="inlier reprojection threshold in pixels (default: 3, as cv2.findHomography)")
