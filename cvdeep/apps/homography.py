"""Homography between two photos: features, matching, robust estimation, a visual check.

Behind ``examples/homography.py`` and ``cvdeep match``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import Error
from ..image import limit_size, read_image
from ..matching.pairs import LOWE_RATIO, ImageFeatures, PairMatcher, detect_features
from ..matching.rotation import ROTATIONS, match_with_rotation_search
from ..progress import Steps
from .common import PairGeometry, add_matching_arguments, create_features, pair_geometry, resolve_pipeline

INLIER_COLOUR, OUTLIER_COLOUR = (80, 220, 60), (40, 40, 230)  # BGR


@dataclass
class HomographyResult:
    """Everything one run produced; the homography is in original pixel coordinates."""

    images: tuple[np.ndarray, np.ndarray]  # as processed (after ``max_size``)
    resizes: tuple[np.ndarray, np.ndarray]  # original -> processed pixel coordinates
    features: tuple[ImageFeatures, ImageFeatures]
    geometry: PairGeometry
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def homography(self) -> np.ndarray | None:
        """Maps original image-1 pixels to original image-2 pixels."""
        if self.geometry.homography is None:
            return None
        to_first, to_second = self.resizes
        homography = np.linalg.inv(to_second) @ self.geometry.homography @ to_first
        return homography / homography[2, 2]


def match_images(
    first: str | os.PathLike,
    second: str | os.PathLike,
    features: str = "sift",
    matcher: str = "ratio",
    estimator: str = "magsac",
    threshold: float = 3.0,
    ratio: float = LOWE_RATIO,
    max_size: int | None = None,
    nfeatures: int | None = None,
    progress: bool = False,
    rotations: int = 1,
) -> HomographyResult:
    """Estimate the homography from image ``first`` to image ``second`` (file paths); ``progress`` shows
    each step on a bar (stderr). ``rotations`` 4 (or 2) searches the second image's right-angle
    rotations for the one that matches best (``cvdeep.matching.rotation``); the result stays in the
    original frames."""
    timings: dict[str, float] = {}
    names = (Path(first).name, Path(second).name)

    @contextlib.contextmanager
    def stage(key: str, label: str) -> Iterator[None]:
        steps.start(label)
        tick = time.perf_counter()
        yield
        timings[key] = time.perf_counter() - tick
        steps.advance()

    start = time.perf_counter()
    with Steps(6 if rotations == 1 else 5, "cvdeep match", enabled=progress) as steps:
        with stage("read", "reading the images"):
            (image1, resize1), (image2, resize2) = (limit_size(read_image(path), max_size) for path in (first, second))
        with stage("setup", f"loading {features}" + (" and LightGlue" if matcher == "lightglue" else "")):
            detector = create_features(features, nfeatures)
            pair_matcher = PairMatcher(matcher, detector, ratio, name=features)
        with stage("features 1", f"features of {names[0]}"):
            features1 = detect_features(detector, image1)
        if rotations == 1:
            with stage("features 2", f"features of {names[1]}"):
                features2 = detect_features(detector, image2)
            with stage("match", f"matching ({matcher})"):
                matches = pair_matcher(features1, features2)
        else:
            with stage(f"features 2 and match x{rotations}", f"features of {names[1]} at {rotations} rotations"):
                search = match_with_rotation_search(detector, pair_matcher, features1, image2, rotations)
                features2, matches = search.second, search.matches
            key = f"features 2 and match x{rotations}"
            timings[f"{key} (kept {search.rotation} deg)"] = timings.pop(key)
        with stage("homography", f"homography ({estimator})"):
            geometry = pair_geometry(features1, features2, matches, estimator, threshold)
    timings["total"] = time.perf_counter() - start
    return HomographyResult((image1, image2), (resize1, resize2), (features1, features2), geometry, timings)


def _subset(mask: np.ndarray, limit: int) -> np.ndarray:
    """``mask`` thinned to at most ``limit`` true entries, evenly spread over the matches."""
    chosen = np.flatnonzero(mask)
    keep = np.zeros_like(mask)
    if len(chosen):
        keep[chosen[np.linspace(0, len(chosen) - 1, min(limit, len(chosen))).round().astype(int)]] = True
    return keep


def _caption(image: np.ndarray, text: str) -> None:
    """White text on a dark band in the top-left corner, drawn in place."""
    scale = 0.6
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (width + 12, height + baseline + 12), (0, 0, 0), -1)
    cv2.putText(image, text, (6, height + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_matches(result: HomographyResult, limit: int = 400) -> np.ndarray:
    """Both images side by side, inliers green over outliers red; at most ``limit`` drawn,
    sampled at the same rate from both so the picture keeps their proportion."""
    (image1, image2), (features1, features2), geometry = result.images, result.features, result.geometry
    dmatches = [cv2.DMatch(int(i), int(j), 0.0) for i, j in geometry.matches]
    rate = min(1.0, limit / max(1, len(dmatches)))
    outliers = len(dmatches) - geometry.inlier_count
    canvas: Any = None  # allocated by the first drawMatches (OpenCV's type stubs do not allow None)
    for colour, mask, flags in (
        (OUTLIER_COLOUR, _subset(~geometry.inliers, round(rate * outliers)), 0),
        (INLIER_COLOUR, _subset(geometry.inliers, round(rate * geometry.inlier_count)),
         cv2.DrawMatchesFlags_DRAW_OVER_OUTIMG),
    ):
        canvas = cv2.drawMatches(
            image1, features1.keypoints, image2, features2.keypoints, dmatches, canvas, matchColor=colour,
            matchesMask=mask.astype(np.uint8).tolist(), flags=flags | cv2.DrawMatchesFlags_NOT_DRAW_SINGLE_POINTS,
        )
    _caption(canvas, f"{len(dmatches)} matches: {geometry.inlier_count} inliers (green), {outliers} outliers (red)"
                     + (f"; {rate:.0%} of them drawn" if rate < 1.0 else ""))
    return canvas


def draw_overlay(result: HomographyResult, tile: int = 64) -> np.ndarray:
    """Image 2 warped into image 1's frame: blended half and half, and as a checkerboard with image 1."""
    (image1, image2), homography = result.images, result.geometry.homography
    if homography is None:
        raise Error("draw_overlay: no homography was found between the two images")
    height, width = image1.shape[:2]
    inverse = np.linalg.inv(homography)
    warped = cv2.warpPerspective(image2, inverse, (width, height))
    covered = cv2.warpPerspective(np.full(image2.shape[:2], 255, np.uint8), inverse, (width, height)) > 0
    blend = image1.copy()
    blend[covered] = cv2.addWeighted(image1, 0.5, warped, 0.5, 0.0)[covered]
    rows, columns = np.indices((height, width)) // tile
    checker = np.where((covered & ((rows + columns) % 2 == 1))[..., None], warped, image1)
    _caption(blend, "image 2 warped onto image 1 (50/50)")
    _caption(checker, "checkerboard: image 1 / warped image 2")
    return np.hstack([blend, checker])


def draw_result(result: HomographyResult) -> np.ndarray:
    """The matches on top, the warped overlays below (when a homography was found)."""
    top = draw_matches(result)
    if result.geometry.homography is None:
        return top
    bottom = draw_overlay(result)
    width = max(top.shape[1], bottom.shape[1])
    rows = [np.pad(part, ((0, 0), (0, width - part.shape[1]), (0, 0))) for part in (top, bottom)]
    return np.vstack(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``examples/homography.py`` and ``cvdeep match``."""
    parser.add_argument("image1", help="first image (the homography maps its pixels into image2)")
    parser.add_argument("image2", help="second image")
    add_matching_arguments(parser)
    parser.add_argument("--rotations", type=int, default=1, choices=ROTATIONS,
                        help="describe image2 turned by this many right angles (4: 0/90/180/270) and keep the turn "
                        "with the most matches; for features that are not rotation-invariant (default 1: no search)")
    parser.add_argument("--out", default=None, help="write the visualisation (matches and overlay) to this image file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no log messages")


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments, print the report; raise ``Error`` when the images do not overlap."""
    pipeline = resolve_pipeline(args.features, args.matcher, args.nfeatures)
    print(f"features: {pipeline.features}   matcher: {pipeline.matcher}   estimator: {args.estimator} "
          f"({args.threshold:g} px)   [{pipeline.reason}]", flush=True)
    result = match_images(
        args.image1, args.image2, pipeline.features, pipeline.matcher, args.estimator, args.threshold,
        args.ratio, args.max_size, args.nfeatures, progress=not getattr(args, "quiet", False),
        rotations=getattr(args, "rotations", 1),
    )
    features1, features2 = result.features
    geometry = result.geometry
    print(f"keypoints: {len(features1.keypoints)} / {len(features2.keypoints)}")
    share = 100.0 * geometry.inlier_count / max(1, len(geometry.matches))
    print(f"matches: {len(geometry.matches)} tentative, {geometry.inlier_count} inliers ({share:.1f}%), "
          f"overlap confidence {geometry.confidence:.2f} (overlap when > 1)")
    print("timing (ms): " + " | ".join(f"{stage} {1000 * seconds:.1f}" for stage, seconds in result.timings.items()))
    if args.out:
        if not cv2.imwrite(args.out, draw_result(result)):
            raise Error(f"{args.out}: cannot write an image there (check the directory and the extension)")
        print(f"wrote {args.out}")
    homography = result.homography
    if homography is None or not geometry.overlaps:
        raise Error(
            f"{args.image1} and {args.image2} do not overlap: {geometry.inlier_count} of {len(geometry.matches)} "
            "matches agree on a homography, too few to trust it"
        )
    print("H (image1 -> image2, original pixels):")
    for row in homography:
        print("".join(f"{value:16.8g}" for value in row))
    return 0
