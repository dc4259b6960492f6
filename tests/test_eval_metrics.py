"""cvdeep.eval.metrics on synthetic cases whose answers are known by construction."""
from __future__ import annotations

import numpy as np
import pytest

from cvdeep.eval import metrics

SHAPE = (480, 640, 3)


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=np.float64)


@pytest.fixture
def grid() -> np.ndarray:
    """A 10x8 grid of points well inside a 640x480 image."""
    xs, ys = np.meshgrid(np.linspace(50, 590, 10), np.linspace(50, 430, 8))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def identity_matches(count: int) -> np.ndarray:
    return np.stack([np.arange(count), np.arange(count)], axis=1)


def test_warp_points_applies_the_projective_division() -> None:
    homography = np.array([[2, 0, 1], [0, 3, -1], [0, 0, 2]], dtype=np.float64)
    warped = metrics.warp_points(np.array([[1.0, 1.0], [0.0, 0.0]]), homography)
    np.testing.assert_allclose(warped, [[1.5, 1.0], [0.5, -0.5]])


def test_perfect_matches_are_all_correct_at_every_threshold(grid: np.ndarray) -> None:
    homography = np.array([[0.9, 0.1, 12], [-0.05, 1.1, -7], [1e-4, 2e-5, 1]])
    target = metrics.warp_points(grid, homography)
    errors = metrics.match_errors(grid, target, identity_matches(len(grid)), homography)
    np.testing.assert_allclose(errors, 0, atol=1e-9)
    np.testing.assert_array_equal(metrics.matching_accuracy(errors), np.ones(len(metrics.MMA_THRESHOLDS)))


def test_a_two_pixel_shift_fails_at_one_pixel_and_passes_at_three(grid: np.ndarray) -> None:
    target = grid + [2.0, 0.0]
    errors = metrics.match_errors(grid, target, identity_matches(len(grid)), np.eye(3))
    accuracy = dict(zip(metrics.MMA_THRESHOLDS, metrics.matching_accuracy(errors)))
    assert accuracy[1] == 0.0 and accuracy[2] == 1.0 and accuracy[3] == 1.0


def test_accuracy_is_the_fraction_of_correct_matches(grid: np.ndarray) -> None:
    target = grid.copy()
    target[:20] += [0.0, 5.5]  # 20 of 80 matches off by 5.5 px
    errors = metrics.match_errors(grid, target, identity_matches(len(grid)), np.eye(3))
    accuracy = dict(zip(metrics.MMA_THRESHOLDS, metrics.matching_accuracy(errors)))
    assert accuracy[5] == pytest.approx(0.75) and accuracy[6] == 1.0


def test_matches_index_into_the_keypoint_lists(grid: np.ndarray) -> None:
    order = np.random.default_rng(0).permutation(len(grid))
    target = metrics.warp_points(grid, translation(10, -4))[order]
    right = np.stack([order, np.arange(len(grid))], axis=1)  # target[j] is grid[order[j]]
    wrong = np.stack([np.arange(len(grid)), np.arange(len(grid))], axis=1)
    assert metrics.matching_accuracy(metrics.match_errors(grid, target, right, translation(10, -4)))[0] == 1.0
    assert metrics.matching_accuracy(metrics.match_errors(grid, target, wrong, translation(10, -4)))[-1] < 0.1


def test_no_match_scores_zero() -> None:
    errors = metrics.match_errors(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((0, 2), int), np.eye(3))
    np.testing.assert_array_equal(metrics.matching_accuracy(errors), np.zeros(len(metrics.MMA_THRESHOLDS)))


def test_corner_error_of_a_translation_is_its_length() -> None:
    assert metrics.corner_error(translation(3, 4), np.eye(3), SHAPE) == pytest.approx(5.0)
    assert metrics.corner_error(np.eye(3), np.eye(3), SHAPE) == 0.0
    assert metrics.corner_error(None, np.eye(3), SHAPE) == float("inf")


def test_ransac_recovers_the_homography_despite_outliers(grid: np.ndarray) -> None:
    truth = np.array([[1.05, 0.08, -20], [-0.06, 0.97, 15], [5e-5, -3e-5, 1]])
    target = metrics.warp_points(grid, truth)
    target[::5] = np.random.default_rng(1).uniform(0, 400, size=(len(target[::5]), 2))  # 20% outliers
    estimated = metrics.estimate_homography(grid, target)
    assert metrics.corner_error(estimated, truth, SHAPE) < 0.01
    assert metrics.estimate_homography(grid[:3], target[:3]) is None


def test_repeatability_of_identical_detections_is_one_with_zero_error(grid: np.ndarray) -> None:
    homography = translation(7, -3)
    rep, localisation = metrics.repeatability(grid, metrics.warp_points(grid, homography), homography, SHAPE, SHAPE)
    assert rep == 1.0 and localisation == pytest.approx(0.0, abs=1e-6)


def test_repeatability_threshold_and_localisation_error(grid: np.ndarray) -> None:
    rep, localisation = metrics.repeatability(grid, grid + [0.0, 2.0], np.eye(3), SHAPE, SHAPE)
    assert rep == 1.0 and localisation == pytest.approx(2.0, abs=1e-5)
    rep, localisation = metrics.repeatability(grid, grid + [4.0, 0.0], np.eye(3), SHAPE, SHAPE)
    assert rep == 0.0 and np.isnan(localisation)


def test_only_keypoints_in_the_shared_view_count(grid: np.ndarray) -> None:
    homography = translation(-320, 0)  # the right half of A is the left half of B
    target = metrics.warp_points(grid, homography)
    keep = target[:, 0] >= 0
    in_b, in_a = metrics.shared_view(grid, target[keep], homography, SHAPE, SHAPE)
    assert in_b.sum() == keep.sum() and in_a.all()
    rep, _ = metrics.repeatability(grid, target[keep], homography, SHAPE, SHAPE)
    assert rep == 1.0  # the A points that leave B do not lower it


def test_matching_score_divides_by_keypoints_in_view() -> None:
    errors = np.array([0.5, 1.0, 2.9, 3.5, 10.0])
    assert metrics.matching_score(errors, in_view_a=10, in_view_b=6) == pytest.approx((3 / 10 + 3 / 6) / 2)
    assert metrics.matching_score(np.zeros(0), 0, 0) == 0.0


def test_nearest_distances() -> None:
    points = np.array([[0.0, 0.0], [10.0, 10.0]])
    others = np.array([[3.0, 4.0], [10.0, 11.0], [100.0, 100.0]])
    np.testing.assert_allclose(metrics.nearest_distances(points, others), [5.0, 1.0])
    assert np.isinf(metrics.nearest_distances(points, np.zeros((0, 2)))).all()
