"""Helpers of the R2D2 / Key.Net tests: shrinking real image pairs with their homography."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cvdeep.keypoints import keypoint_coordinates


def shrink(image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` resized by ``scale`` (area interpolation) and the 3x3 map from its pixels to the new ones."""
    height, width = image.shape[:2]
    size = (round(width * scale), round(height * scale))
    sx, sy = size[0] / width, size[1] / height
    # pixel centres: x' = (x + 0.5) * s - 0.5
    to_small = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), to_small


def shrink_pair(image1: np.ndarray, image2: np.ndarray, homography: np.ndarray, scale: float):
    """Both images shrunk by ``scale`` and the homography between the shrunk images."""
    small1, s1 = shrink(image1, scale)
    small2, s2 = shrink(image2, scale)
    return small1, small2, s2 @ homography @ np.linalg.inv(s1)


def keypoint_xy(keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """(N, 2) float64 (x, y) of the keypoints."""
    return keypoint_coordinates(keypoints).astype(np.float64)
