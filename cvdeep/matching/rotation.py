"""Test-time rotation search: match any feature against the second image turned by 0, 90, 180 and 270 degrees.

Most learned features (XFeat, ALIKED, SuperPoint, DISK) are trained upright and fail on a pair turned
by 90 degrees. The search describes the second image once per right-angle rotation (``cv2.rotate``:
exact, no interpolation), matches each against the first image with the same ``PairMatcher``, keeps
the rotation with the most matches (mutual nearest neighbours, ratio-test or LightGlue matches,
whichever the matcher makes) and returns the second image's keypoints in its *original* frame:
positions mapped back exactly, ``KeyPoint.angle`` turned back (OpenCV's convention: turning an image
clockwise by 90 degrees adds 90 to the angle of each of its structures; -1 stays -1), sizes as they
are. Cost: ``rotations`` detections of the second image and ``rotations`` matchings.

Pixel mapping (OpenCV's pixel-centre convention, image W x H):

- 90 (``cv2.ROTATE_90_CLOCKWISE``): (x, y) -> (H - 1 - y, x);
- 180 (``cv2.ROTATE_180``): (x, y) -> (W - 1 - x, H - 1 - y);
- 270 (``cv2.ROTATE_90_COUNTERCLOCKWISE``): (x, y) -> (y, W - 1 - x).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..errors import Error
from ..keypoints import keypoint_coordinates
from .pairs import Feature, ImageFeatures, PairMatcher, detect_features

ROTATIONS = (1, 2, 4)
"""Accepted numbers of rotations: none, 0/180, 0/90/180/270."""
_CODES = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def rotate_image(image: np.ndarray, degrees: int) -> np.ndarray:
    """``image`` turned clockwise (on screen) by 0, 90, 180 or 270 degrees with ``cv2.rotate``."""
    if degrees % 360 == 0:
        return image
    if degrees % 360 not in _CODES:
        raise Error(f"rotate_image: got {degrees} degrees; expected 0, 90, 180 or 270")
    return cv2.rotate(image, _CODES[degrees % 360])


def rotated_points(points: np.ndarray, degrees: int, size: tuple[int, int]) -> np.ndarray:
    """(N, 2) pixel positions of an image of ``size`` = (W, H) in that image turned clockwise by ``degrees``."""
    width, height = size
    x, y = points[:, 0], points[:, 1]
    turn = degrees % 360
    if turn == 0:
        return points.copy()
    if turn == 90:
        return np.stack([height - 1 - y, x], axis=1)
    if turn == 180:
        return np.stack([width - 1 - x, height - 1 - y], axis=1)
    if turn == 270:
        return np.stack([y, width - 1 - x], axis=1)
    raise Error(f"rotated_points: got {degrees} degrees; expected 0, 90, 180 or 270")


def unrotated_points(points: np.ndarray, degrees: int, size: tuple[int, int]) -> np.ndarray:
    """The inverse of ``rotated_points``: positions in the turned image -> the original (W, H) ``size`` image."""
    width, height = size
    turned_size = (height, width) if degrees % 180 else (width, height)
    return rotated_points(points, -degrees % 360, turned_size)


def unrotated_features(features: ImageFeatures, degrees: int, size: tuple[int, int]) -> ImageFeatures:
    """Features found on the image turned by ``degrees``, in the original image's frame of ``size`` = (W, H)."""
    if degrees % 360 == 0:
        return features
    points = unrotated_points(features.points.astype(np.float64), degrees, size).astype(np.float32)
    keypoints = tuple(
        cv2.KeyPoint(float(x), float(y), k.size, k.angle if k.angle == -1 else float((k.angle - degrees) % 360.0),
                     k.response, k.octave, k.class_id)
        for k, (x, y) in zip(features.keypoints, points)
    )
    return replace(features, keypoints=keypoints, points=keypoint_coordinates(keypoints), size=size)


@dataclass
class RotationSearch:
    """The kept rotation of the second image and what it gave.

    ``second``: the second image's features in its original frame; ``matches`` (M, 2) into the first
    image's and those features; ``rotation`` the clockwise turn (degrees) that matched best;
    ``counts`` the number of matches of every rotation tried.
    """

    second: ImageFeatures
    matches: np.ndarray
    rotation: int
    counts: dict[int, int]


def match_with_rotation_search(feature: Feature, matcher: PairMatcher, first: ImageFeatures, image: np.ndarray,
                               rotations: int = 4, mask: np.ndarray | None = None) -> RotationSearch:
    """Match ``first`` against ``image`` turned by each of ``rotations`` right angles; keep the best (see the
    module docstring). Ties go to the smaller rotation, so an upright pair stays at 0."""
    if rotations not in ROTATIONS:
        raise Error(f"rotations: got {rotations!r}; expected one of {', '.join(map(str, ROTATIONS))}")
    size = (image.shape[1], image.shape[0])
    best: tuple[int, ImageFeatures, np.ndarray] | None = None
    counts: dict[int, int] = {}
    for turn in range(0, 360, 360 // rotations):
        turned_mask = None if mask is None else rotate_image(mask, turn)
        features = detect_features(feature, rotate_image(image, turn), turned_mask)
        matches = matcher(first, features)
        counts[turn] = len(matches)
        if best is None or len(matches) > len(best[2]):
            best = (turn, features, matches)
    assert best is not None
    turn, features, matches = best
    return RotationSearch(unrotated_features(features, turn, size), matches, turn, counts)
