"""cvdeep.matching.pairs, geometry and cvdeep.image.read_image: the pieces the applications and the
benchmark share, on synthetic cases whose answers are known by construction."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeep import Error
from cvdeep.image import limit_size, read_image
from cvdeep.keypoints import keypoint_coordinates, keypoint_responses
from cvdeep.matching.geometry import find_homography
from cvdeep.matching.pairs import (
    MATCHERS,
    ImageFeatures,
    PairMatcher,
    detect_features,
    mutual_nearest_neighbours,
    nearest_neighbours,
    ratio_test,
)


class FixedFeature:
    """A Feature2D stand-in returning given keypoints and descriptors."""

    def __init__(self, descriptors: np.ndarray | None, norm: int = cv2.NORM_L2) -> None:
        count = 0 if descriptors is None else len(descriptors)
        self.keypoints = tuple(cv2.KeyPoint(float(i), 2.0 * i, 3.0, -1, float(i)) for i in range(count))
        self.descriptors, self.norm = descriptors, norm

    def detectAndCompute(self, image: np.ndarray, mask: np.ndarray | None) -> tuple:
        return self.keypoints, self.descriptors

    def defaultNorm(self) -> int:
        return self.norm

    def descriptorSize(self) -> int:
        return 32 if self.norm == cv2.NORM_HAMMING else 4

    def descriptorType(self) -> int:
        return cv2.CV_8U if self.norm == cv2.NORM_HAMMING else cv2.CV_32F


def features_of(descriptors: np.ndarray) -> ImageFeatures:
    return detect_features(FixedFeature(descriptors), np.zeros((40, 60, 3), np.uint8))


def test_keypoint_columns() -> None:
    keypoints = [cv2.KeyPoint(1.5, -2.25, 4.0, 30.0, 0.75), cv2.KeyPoint(7.0, 8.0, 1.0, -1.0, 0.5)]
    np.testing.assert_array_equal(keypoint_coordinates(keypoints), [[1.5, -2.25], [7.0, 8.0]])
    assert keypoint_coordinates(keypoints).dtype == np.float32 and keypoint_coordinates(()).shape == (0, 2)
    np.testing.assert_array_equal(keypoint_responses(keypoints), np.float32([0.75, 0.5]))


def test_detect_features_keeps_what_matchers_need() -> None:
    found = features_of(np.eye(3, 4, dtype=np.float32))
    assert len(found) == 3 and found.size == (60, 40) and found.seconds >= 0
    np.testing.assert_array_equal(found.points, [[0, 0], [1, 2], [2, 4]])
    part = found.subset(np.array([2, 0]))
    assert [kp.pt for kp in part.keypoints] == [(2.0, 4.0), (0.0, 0.0)]
    np.testing.assert_array_equal(part.descriptors, np.eye(3, 4, dtype=np.float32)[[2, 0]])


def test_nothing_found_gives_empty_descriptors_of_the_features_type() -> None:
    image = np.zeros((40, 60), np.uint8)
    binary = detect_features(FixedFeature(None, cv2.NORM_HAMMING), image)
    assert binary.descriptors.shape == (0, 32) and binary.descriptors.dtype == np.uint8
    assert binary.points.shape == (0, 2)
    assert detect_features(FixedFeature(None), image).descriptors.dtype == np.float32


def test_mutual_nearest_neighbours_recovers_a_permutation() -> None:
    rng = np.random.default_rng(2)
    descriptors = rng.normal(size=(200, 64)).astype(np.float32)
    order = rng.permutation(200)
    noisy = descriptors[order] + rng.normal(scale=0.05, size=(200, 64)).astype(np.float32)
    matches = mutual_nearest_neighbours(descriptors, noisy, cv2.NORM_L2)
    assert len(matches) == 200
    np.testing.assert_array_equal(order[matches[:, 1]], matches[:, 0])


def test_mutual_nearest_neighbours_drops_one_sided_pairs() -> None:
    a = np.array([[0.0], [1.0]], np.float32)
    b = np.array([[0.9]], np.float32)  # nearest of both; only a[1] is mutual
    np.testing.assert_array_equal(mutual_nearest_neighbours(a, b, cv2.NORM_L2), [[1, 0]])
    np.testing.assert_array_equal(nearest_neighbours(a, b, cv2.NORM_L2), [[0, 0], [1, 0]])


def test_hamming_matching_on_binary_descriptors() -> None:
    rng = np.random.default_rng(3)
    descriptors = rng.integers(0, 256, size=(50, 32), dtype=np.uint8)
    matches = mutual_nearest_neighbours(descriptors, descriptors[::-1].copy(), cv2.NORM_HAMMING)
    np.testing.assert_array_equal(matches[:, 1], 49 - matches[:, 0])


def test_ratio_test_rejects_ambiguous_matches() -> None:
    a = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    b = np.array([[0.1, 0.0], [5.0, 1.0], [5.0, -1.0]], np.float32)  # a[1] is as far from b[1] as from b[2]
    np.testing.assert_array_equal(ratio_test(a, b, cv2.NORM_L2), [[0, 0]])
    assert len(ratio_test(a, b[:1], cv2.NORM_L2)) == 0


@pytest.mark.parametrize("norm", [cv2.NORM_L2, cv2.NORM_HAMMING])
@pytest.mark.parametrize("method", ["nn", "ratio", "mutual"])
def test_cvdeep_and_opencv_brute_force_give_the_same_matches(method: str, norm: int) -> None:
    """On a noisy permutation (some rows unmatched): clear matches, ties and near-ties alike."""
    rng = np.random.default_rng(4)
    rows = rng.permutation(300)[:250]
    if norm == cv2.NORM_HAMMING:
        a = rng.integers(0, 256, size=(300, 32), dtype=np.uint8)
        flips = [rng.integers(0, 256, size=(250, 32), dtype=np.uint8) for _ in range(3)]
        b = a[rows] ^ (flips[0] & flips[1] & flips[2])  # about one bit in eight flipped
    else:
        a = rng.normal(size=(300, 16)).astype(np.float32)
        b = a[rows] + rng.normal(scale=0.5, size=(250, 16)).astype(np.float32)
    first, second = features_of(a), features_of(b)
    feature = FixedFeature(a, norm)
    ours = PairMatcher(method, feature)(first, second)
    opencv = PairMatcher(method, feature, brute_force=cv2.BFMatcher)(first, second)
    assert 50 < len(ours) <= 300
    np.testing.assert_array_equal(ours, opencv)


def test_pair_matcher_refuses_bad_settings() -> None:
    feature = FixedFeature(np.zeros((1, 4), np.float32))
    with pytest.raises(Error, match=", ".join(MATCHERS)):
        PairMatcher("magic", feature)
    with pytest.raises(Error, match="ratio"):
        PairMatcher("ratio", feature, ratio=1.5)
    with pytest.raises(Error, match="aliked, aliked-n16, disk, xfeat; got 'sift'"):
        PairMatcher("lightglue", cv2.SIFT_create(), name="sift")
    with pytest.raises(Error, match="got 'FixedFeature'"):
        PairMatcher("lightglue", feature)


def test_matching_nothing_gives_no_pairs() -> None:
    empty = detect_features(FixedFeature(None), np.zeros((8, 8), np.uint8))
    some = features_of(np.eye(3, 4, dtype=np.float32))
    for method in ("nn", "ratio", "mutual"):
        matcher = PairMatcher(method, FixedFeature(None))
        assert matcher(empty, some).shape == (0, 2) and matcher(some, empty).shape == (0, 2)


def test_find_homography_recovers_a_projective_map_despite_outliers() -> None:
    truth = np.array([[1.05, 0.08, -20], [-0.06, 0.97, 15], [5e-5, -3e-5, 1]])
    xs, ys = np.meshgrid(np.linspace(50, 590, 10), np.linspace(50, 430, 8))
    source = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    target = cv2.perspectiveTransform(source[:, None].astype(np.float64), truth)[:, 0].astype(np.float32)
    target[::5] += 40.0  # 20% outliers
    for method in ("magsac", "ransac"):
        homography, inliers = find_homography(source, target, method, 1.0)
        np.testing.assert_allclose(homography / homography[2, 2], truth, rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(inliers, np.arange(len(source)) % 5 != 0)
    homography, inliers = find_homography(source[:3], target[:3])
    assert homography is None and inliers.tolist() == [False] * 3


def test_find_homography_refuses_bad_settings() -> None:
    points = np.zeros((4, 2), np.float32)
    with pytest.raises(Error, match="magsac"):
        find_homography(points, points, "nonsense")
    with pytest.raises(Error, match="positive"):
        find_homography(points, points, "ransac", 0.0)
    with pytest.raises(Error, match="4 source points but 3"):
        find_homography(points, points[:3])


def test_read_image_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(Error, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(Error, match="is a directory"):
        read_image(tmp_path)
    (tmp_path / "notes.png").write_text("not pixels")
    with pytest.raises(Error, match="not an image"):
        read_image(tmp_path / "notes.png")
    grey = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    image = read_image(tmp_path / "grey.png")
    assert image.shape == (12, 20, 3) and (image[..., 0] == grey).all()


def test_limit_size_maps_pixel_centres() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    same, identity = limit_size(image, None)
    assert same is image and (identity == np.eye(3)).all()
    small, to_small = limit_size(image, 50)
    assert small.shape == (25, 50, 3)
    # the centre of the top-left 4x4 block of the original is the centre of the first pixel
    np.testing.assert_allclose(to_small @ [1.5, 1.5, 1.0], [0.0, 0.0, 1.0])
    with pytest.raises(Error, match="positive"):
        limit_size(image, 0)
