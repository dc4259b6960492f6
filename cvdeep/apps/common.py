"""Pieces every application shares: the command-line options and verified homographies.

Everything goes through the public cv2 contract (``detectAndCompute``, a
``DescriptorMatcher``, ``cv2.findHomography``), so any feature name of ``cvdeep.feature_names``
(cvdeep models, the OpenCV baselines, ``DETECTOR+DESCRIPTOR``) works unchanged.
Reading images, features, matchers and the homography estimator are the ones the
benchmark uses too (``cvdeep.image``, ``cvdeep.matching``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import NamedTuple, cast

import cv2
import numpy as np

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
    """A feature by name (``cvdeep.feature_names``: baselines, cvdeep families and models, ``name[param=value]``,
    ``DETECTOR+DESCRIPTOR``), with ``nfeatures`` when given."""
    from ..feature_names import create_feature

    return cast(Feature, create_feature(name, nfeatures))


#: Keypoints of the default learned pipeline when --nfeatures is not given (LightGlue's cost grows with them).
DEFAULT_KEYPOINTS = 2048


class Pipeline(NamedTuple):
    """The features and matcher a command runs, and why (printed by the commands)."""

    features: str
    matcher: str
    reason: str


def _weights_here(model: str) -> bool:
    from ..models import get_model
    from ..weights import is_local

    spec = get_model(model)[1].weights
    return spec is None or is_local(spec)


def default_pipeline(nfeatures: int | None = None) -> Pipeline:
    """The best pipeline that runs offline with the weights already here, never downloading:
    ALIKED + LightGlue, else ALIKED + mutual nearest neighbours (LightGlue's weights missing),
    else XFeat + LighterGlue (or mutual), else SIFT + Lowe's ratio test."""
    from ..models import families, lightglue_pairings, preferred_model

    cap = "" if nfeatures is not None else f"[nfeatures={DEFAULT_KEYPOINTS}]"
    pairings = lightglue_pairings()
    for name in ("aliked", "xfeat"):
        model = preferred_model(families()[name])
        if not _weights_here(model):
            continue
        features = (name if model == families()[name].default_model else model) + cap
        glue = pairings.get(model)  # LightGlue is trained on one model of the family
        if glue is not None and _weights_here(glue[1]):
            return Pipeline(features, "lightglue", f"{name} and {glue[1]} weights are here")
        return Pipeline(features, "mutual", f"{name} weights are here, LightGlue's are not "
                        f"(cvdeep weights fetch {glue[1] if glue else 'lightglue-aliked'})")
    return Pipeline("sift", "ratio", "no learned weights here: fetch them with "
                    "`cvdeep weights fetch aliked-n16 lightglue-aliked` (or xfeat)")


def resolve_pipeline(features: str | None, matcher: str | None, nfeatures: int | None = None) -> Pipeline:
    """The command's pipeline: what was asked, the rest from ``default_pipeline`` (with --features given
    and no --matcher, the matcher is Lowe's ratio test). Feature names are checked here."""
    from ..feature_names import check_feature_name

    if features is None:
        chosen = default_pipeline(nfeatures)
        if matcher is not None:
            return Pipeline(chosen.features, matcher, f"default features ({chosen.reason})")
        return Pipeline(chosen.features, chosen.matcher, f"default pipeline ({chosen.reason})")
    check_feature_name(features)
    if matcher == "lightglue" and nfeatures is None and "nfeatures=" not in features:
        return Pipeline(_with_parameter(features, f"nfeatures={DEFAULT_KEYPOINTS}"), matcher,
                        f"as asked, at most {DEFAULT_KEYPOINTS} keypoints per image for LightGlue (--nfeatures to "
                        "change)")
    return Pipeline(features, matcher or "ratio", "as asked" if matcher else "matcher: the default ratio test")


def _with_parameter(name: str, parameter: str) -> str:
    """``disk`` -> ``disk[p]``, ``disk[nms=soft]`` -> ``disk[nms=soft,p]``."""
    return f"{name[:-1]},{parameter}]" if name.endswith("]") else f"{name}[{parameter}]"


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """--features, --nfeatures, --max-size: what every application asks of the detector."""
    parser.add_argument("--features", default=None,
                        help="a feature name: sift, orb, akaze, brisk, aliked, disk, xfeat, ... (`cvdeep models`), "
                             "with parameters (xfeat[nms=soft]) or as DETECTOR+DESCRIPTOR (sift+hardnet, "
                             "keynet+hynet). Default: the best learned pipeline whose weights are here (ALIKED + "
                             "LightGlue, else XFeat, else SIFT; the command says which)")
    parser.add_argument("--nfeatures", type=int, default=None,
                        help="maximum number of keypoints per image (default: the detector's own; "
                             f"{DEFAULT_KEYPOINTS} for the default learned pipeline and with --matcher lightglue)")
    parser.add_argument("--max-size", type=int, default=None,
                        help="work on images downscaled so the longest side is at most this many pixels")


def add_matching_arguments(parser: argparse.ArgumentParser) -> None:
    """The feature options plus --matcher, --ratio, --estimator, --threshold."""
    add_feature_arguments(parser)
    parser.add_argument("--matcher", default=None, choices=MATCHERS,
                        help="tentative matches: nn, ratio (Lowe), mutual, lightglue (with aliked, disk or xfeat). "
                             "Default: the default pipeline's with no --features, else ratio")
    parser.add_argument("--ratio", type=float, default=LOWE_RATIO,
                        help=f"Lowe's ratio for --matcher ratio (default: {LOWE_RATIO})")
    parser.add_argument("--estimator", default="magsac", choices=sorted(ESTIMATORS),
                        help="robust estimator (default: magsac = cv2.USAC_MAGSAC)")
    parser.add_argument("--threshold", type=float, default=3.0,
                        help="inlier reprojection threshold in pixels (default: 3, as cv2.findHomography)")
