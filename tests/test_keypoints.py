"""Vectorised KeyPoint conversion keeps every attribute."""
from __future__ import annotations

import cv2
import numpy as np

from cvdeep.keypoints import KeypointArrays, from_cv_keypoints, to_cv_keypoints


def test_round_trip_keeps_every_attribute():
    rng = np.random.default_rng(1)
    n = 257
    arrays = KeypointArrays(
        xy=rng.uniform(-5, 500, (n, 2)).astype(np.float32),
        size=rng.uniform(1, 40, n).astype(np.float32),
        angle=rng.uniform(0, 360, n).astype(np.float32),
        response=rng.uniform(0, 1, n).astype(np.float32),
        octave=rng.integers(0, 4, n).astype(np.int32),
    )
    keypoints = to_cv_keypoints(arrays)
    assert len(keypoints) == n and all(isinstance(kp, cv2.KeyPoint) and kp.class_id == -1 for kp in keypoints)
    back = from_cv_keypoints(keypoints)
    for name in ("xy", "size", "angle", "response", "octave"):
        assert np.array_equal(getattr(back, name), getattr(arrays, name)), name


def test_zero_octaves_and_empty():
    arrays = KeypointArrays(np.ones((3, 2), np.float32), np.ones(3, np.float32), -np.ones(3, np.float32),
                            np.ones(3, np.float32), np.zeros(3, np.int32))
    assert [kp.octave for kp in to_cv_keypoints(arrays)] == [0, 0, 0]
    assert to_cv_keypoints(from_cv_keypoints(())) == ()
