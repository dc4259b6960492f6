"""Vectorised conversion between ``cv2.KeyPoint`` tuples and arrays.

Building cv2.KeyPoint objects one attribute at a time costs microseconds each; here
one ``map`` over columns calls the binding's constructor directly, so thousands of
keypoints take about a millisecond.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class KeypointArrays:
    """Struct-of-arrays view of N keypoints (float32 unless noted)."""

    xy: np.ndarray  # (N, 2)
    size: np.ndarray  # (N,) diameter in pixels
    angle: np.ndarray  # (N,) degrees, -1 when unknown
    response: np.ndarray  # (N,)
    octave: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.xy)


def to_cv_keypoints(arrays: KeypointArrays) -> tuple[cv2.KeyPoint, ...]:
    """Arrays -> tuple of cv2.KeyPoint (class_id -1, as cv2.SIFT)."""
    n = len(arrays)
    if n == 0:
        return ()
    # One float64 block and one tolist() is the cheapest way to feed Python floats.
    block = np.empty((5, n), np.float64)
    block[:2] = arrays.xy.T
    block[2] = arrays.size
    block[3] = arrays.angle
    block[4] = arrays.response
    columns = block.tolist()
    if arrays.octave.any():  # octave 0 and class_id -1 are the constructor's defaults
        columns += [arrays.octave.tolist(), [-1] * n]
    return tuple(map(cv2.KeyPoint, *columns))


def keypoint_coordinates(keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """(N, 2) float32 array of the keypoints' (x, y) pixel coordinates; (0, 2) for none."""
    if len(keypoints) == 0:
        return np.zeros((0, 2), np.float32)
    return np.asarray(cv2.KeyPoint.convert(keypoints), np.float32).reshape(-1, 2).astype(np.float32, copy=False)


def keypoint_responses(keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """(N,) float32 array of the keypoints' ``response`` (detector score)."""
    return np.fromiter((kp.response for kp in keypoints), np.float32, len(keypoints))


def from_cv_keypoints(keypoints: Sequence[cv2.KeyPoint]) -> KeypointArrays:
    """Tuple of cv2.KeyPoint -> arrays."""
    n = len(keypoints)
    return KeypointArrays(
        xy=keypoint_coordinates(keypoints),
        size=np.fromiter((kp.size for kp in keypoints), np.float32, n),
        angle=np.fromiter((kp.angle for kp in keypoints), np.float32, n),
        response=keypoint_responses(keypoints),
        octave=np.fromiter((kp.octave for kp in keypoints), np.int32, n),
    )
