"""Metrics for local features on image pairs related by a known homography.

Conventions: points are ``(x, y)`` pixel coordinates of their own image (OpenCV's), a
homography maps image A's pixels to image B's, and every function is plain NumPy/OpenCV
so that any feature -- cvdeep or OpenCV -- is scored by the same code.

Protocols (see docs/RESULTS.md):

- **MMA** (D2-Net, Dusmanu et al. CVPR 2019): a match is correct at threshold ``t`` when
  the reference keypoint, warped by the ground truth, lands within ``t`` px of its matched
  keypoint. The accuracy of a pair is the fraction of its matches that are correct (0 when
  it has no match); MMA is the mean of that over pairs.
- **Homography accuracy** (SuperPoint, DeTone et al. CVPRW 2018): the four corners of the
  reference image are warped by the estimated and by the true homography; a pair is
  correct at ``t`` when their mean distance is at most ``t`` px. Estimation uses
  ``cv2.findHomography`` with ``cv2.RANSAC`` and a 3 px reprojection threshold
  (OpenCV's defaults: 2000 iterations, confidence 0.995).
- **Repeatability / localisation error** (SuperPoint): keypoints of each image that fall
  inside the other image once warped; a keypoint is repeated when its nearest warped
  counterpart lies within 3 px; the localisation error is the mean of those distances.
- **Matching score** (LF-Net / SuperPoint): correct matches at 3 px divided by the number
  of keypoints in the shared view, averaged over both images.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..matching.geometry import find_homography

#: Pixel thresholds of the MMA curve (D2-Net plots 1..10).
MMA_THRESHOLDS = tuple(range(1, 11))
#: Mean corner error thresholds of the homography accuracy (SuperPoint reports 1, 3, 5; 10 is common since).
HOMOGRAPHY_THRESHOLDS = (1, 3, 5, 10)
#: Distance under which a keypoint counts as repeated / a match as correct for the matching score.
CORRECT_DISTANCE = 3.0
#: ``cv2.findHomography`` settings used for the homography accuracy (``cvdeep.matching.geometry.ESTIMATORS``).
RANSAC_METHOD = "ransac"
RANSAC_THRESHOLD = 3.0


def warp_points(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points mapped by a 3x3 homography (float64)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ np.asarray(homography).T
    return homogeneous[:, :2] / homogeneous[:, 2:]


def inside_image(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Mask of the points whose pixel centre lies within an image of ``shape`` (H, W, ...)."""
    height, width = shape[:2]
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def match_errors(points_a: np.ndarray, points_b: np.ndarray, matches: np.ndarray,
                 homography: np.ndarray) -> np.ndarray:
    """Distance in image B between each matched B point and its A point warped by ``homography``.

    ``matches`` is ``(M, 2)`` int: index into ``points_a``, index into ``points_b``.
    """
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    warped = warp_points(np.asarray(points_a)[matches[:, 0]], homography)
    return np.linalg.norm(warped - np.asarray(points_b, dtype=np.float64)[matches[:, 1]], axis=1)


def matching_accuracy(errors: np.ndarray, thresholds: tuple[float, ...] = MMA_THRESHOLDS) -> np.ndarray:
    """Fraction of matches with error ``<= t`` for each threshold; zeros when there is no match."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0:
        return np.zeros(len(thresholds))
    return np.array([np.mean(errors <= t) for t in thresholds])


def estimate_homography(points_a: np.ndarray, points_b: np.ndarray) -> np.ndarray | None:
    """The protocol's homography A -> B from matched points (``find_homography`` with RANSAC, 3 px),
    or None with fewer than 4 matches or on failure."""
    return find_homography(points_a, points_b, RANSAC_METHOD, RANSAC_THRESHOLD)[0]


def corner_error(estimated: np.ndarray | None, truth: np.ndarray, shape: tuple[int, ...]) -> float:
    """Mean distance between the reference image's corners warped by both homographies (inf if none)."""
    if estimated is None:
        return float("inf")
    height, width = shape[:2]
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], dtype=np.float64)
    distances = np.linalg.norm(warp_points(corners, estimated) - warp_points(corners, truth), axis=1)
    return float(distances.mean()) if np.isfinite(distances).all() else float("inf")


def nearest_distances(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each point, the distance to its nearest neighbour among ``others`` (inf if none)."""
    if len(points) == 0:
        return np.zeros(0)
    if len(others) == 0:
        return np.full(len(points), np.inf)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    nearest = matcher.match(np.ascontiguousarray(points, np.float32), np.ascontiguousarray(others, np.float32))
    indices = np.array([m.trainIdx for m in nearest], dtype=np.int64)
    return np.linalg.norm(np.asarray(points, np.float64) - np.asarray(others, np.float64)[indices], axis=1)


def shared_view(points_a: np.ndarray, points_b: np.ndarray, homography: np.ndarray,
                shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the A points that land inside B and of the B points that land inside A."""
    in_b = inside_image(warp_points(points_a, homography), shape_b)
    in_a = inside_image(warp_points(points_b, np.linalg.inv(homography)), shape_a)
    return in_b, in_a


def repeatability(points_a: np.ndarray, points_b: np.ndarray, homography: np.ndarray,
                  shape_a: tuple[int, ...], shape_b: tuple[int, ...],
                  threshold: float = CORRECT_DISTANCE) -> tuple[float, float]:
    """(repeatability, localisation error in px) of two detections, SuperPoint's definition.

    Repeatability is 0 and the localisation error NaN when nothing is in the shared view
    or nothing repeats.
    """
    in_b, in_a = shared_view(points_a, points_b, homography, shape_a, shape_b)
    warped_a = warp_points(points_a, homography)[in_b]
    kept_b = np.asarray(points_b, np.float64)[in_a]
    if len(warped_a) + len(kept_b) == 0:
        return 0.0, float("nan")
    distances = np.concatenate([nearest_distances(warped_a, kept_b), nearest_distances(kept_b, warped_a)])
    repeated = distances <= threshold
    localisation = float(distances[repeated].mean()) if repeated.any() else float("nan")
    return float(repeated.sum() / len(distances)), localisation


def matching_score(errors: np.ndarray, in_view_a: int, in_view_b: int, threshold: float = CORRECT_DISTANCE) -> float:
    """Correct matches over keypoints in the shared view, averaged over both images (0 if none)."""
    correct = float(np.sum(np.asarray(errors) <= threshold))
    ratios = [correct / count for count in (in_view_a, in_view_b) if count > 0]
    return float(np.mean(ratios)) if ratios else 0.0
