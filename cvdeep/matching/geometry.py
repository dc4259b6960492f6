"""Robust homography estimation from matched points: the one estimator of the applications and the benchmark."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import Error

#: Robust estimators of ``cv2.findHomography`` by name.
ESTIMATORS = {
    "magsac": cv2.USAC_MAGSAC,
    "usac": cv2.USAC_DEFAULT,
    "ransac": cv2.RANSAC,
    "rho": cv2.RHO,
    "lmeds": cv2.LMEDS,
}


def find_homography(
    source: np.ndarray, target: np.ndarray, method: str = "magsac", threshold: float = 3.0
) -> tuple[np.ndarray | None, np.ndarray]:
    """Homography mapping the (N, 2) ``source`` points onto the matched ``target`` points.

    ``method`` names a robust estimator of ``ESTIMATORS`` (OpenCV's settings for each),
    ``threshold`` is the inlier reprojection error in pixels. Returns the 3x3 homography, or
    None with fewer than four matches or when OpenCV finds no finite one, and the (N,) bool
    inlier mask (all False without a homography).
    """
    if method not in ESTIMATORS:
        raise Error(f"unknown homography estimator {method!r}; accepted: {', '.join(ESTIMATORS)}")
    if threshold <= 0:
        raise Error(f"the reprojection threshold must be positive; got {threshold}")
    source = np.asarray(source).reshape(-1, 2)
    target = np.asarray(target).reshape(-1, 2)
    if len(source) != len(target):
        raise Error(f"find_homography: {len(source)} source points but {len(target)} target points")
    no_inliers = np.zeros(len(source), bool)
    if len(source) < 4:
        return None, no_inliers
    homography, mask = cv2.findHomography(source, target, ESTIMATORS[method], threshold)
    if homography is None or not np.isfinite(homography).all():
        return None, no_inliers
    return homography, mask.ravel().astype(bool)
