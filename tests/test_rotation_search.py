"""Test-time rotation search (``cvdeep.matching.rotation``, ``cvdeep match --rotations 4``).

XFeat is trained upright: on a real image against itself turned by 90 degrees it finds almost no
correct match, and with the search it finds them again, reported in the original frames.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import cvdeep
from cvdeep.apps.homography import match_images
from cvdeep.matching.pairs import PairMatcher, detect_features
from cvdeep.matching.rotation import (
    match_with_rotation_search,
    rotate_image,
    rotated_points,
    unrotated_features,
    unrotated_points,
)
from feature_checks import GRAF, load_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_point_mapping_is_cv2_rotate_exactly(degrees):
    height, width = 5, 7
    image = np.arange(height * width, dtype=np.int32).reshape(height, width)
    turned = rotate_image(image, degrees)
    ys, xs = np.mgrid[0:height, 0:width]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    moved = rotated_points(points, degrees, (width, height)).round().astype(int)
    assert np.array_equal(turned[moved[:, 1], moved[:, 0]], image[ys.ravel(), xs.ravel()])
    assert np.array_equal(unrotated_points(moved.astype(np.float64), degrees, (width, height)), points)
    with pytest.raises(cvdeep.Error, match="degrees"):
        rotated_points(points, 45, (width, height))


def test_keypoints_come_back_in_the_original_frame(data_dir):
    """SIFT on the image turned by 90 degrees, brought back, agrees with SIFT on the image: positions
    and angles (OpenCV's angle, clockwise on screen, loses the 90 degrees again)."""
    gray = cv2.cvtColor(load_image(data_dir, GRAF, (320, 256)), cv2.COLOR_BGR2GRAY)
    sift = cv2.SIFT_create(200)
    upright = detect_features(sift, gray)
    back = unrotated_features(detect_features(sift, rotate_image(gray, 90)), 90, (320, 256))
    assert back.size == (320, 256)
    distance = np.linalg.norm(back.points[:, None] - upright.points[None], axis=2)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(back)), nearest] < 1.0
    assert close.mean() > 0.6
    turns = np.array([(back.keypoints[i].angle - upright.keypoints[j].angle + 180) % 360 - 180
                      for i, j in zip(np.flatnonzero(close), nearest[close])])
    assert np.median(np.abs(turns)) < 1.0


def _correct(first_points: np.ndarray, second_points: np.ndarray, matches: np.ndarray, height: int) -> np.ndarray:
    """Matches whose second point is the first point's image under the 90-degree turn (within 3 px)."""
    truth = rotated_points(first_points[matches[:, 0]].astype(np.float64), 90, (0, height))
    return np.linalg.norm(truth - second_points[matches[:, 1]], axis=1) < 3.0


def test_xfeat_finds_a_90_degree_turn_only_with_the_search(data_dir):
    image = load_image(data_dir, GRAF, (320, 256))
    turned = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    feature = cvdeep.XFeat_create(1000, device="cpu")
    matcher = PairMatcher("mutual", feature)
    first = detect_features(feature, image)
    plain = detect_features(feature, turned)
    plain_matches = matcher(first, plain)
    plain_correct = _correct(first.points, plain.points, plain_matches, 256)
    search = match_with_rotation_search(feature, matcher, first, turned, rotations=4)
    correct = _correct(first.points, search.second.points, search.matches, 256)
    print(f"without search {plain_correct.sum()} of {len(plain_matches)} correct; with search {correct.sum()} of "
          f"{len(search.matches)} (kept {search.rotation} deg, counts {search.counts})")
    assert plain_correct.mean() < 0.05
    assert search.rotation == 270, "turning the image back by 270 degrees clockwise makes it upright"
    assert search.counts[270] == max(search.counts.values()) == len(search.matches)
    assert correct.mean() > 0.8 and correct.sum() > 20 * max(1, plain_correct.sum())
    assert search.second.size == (256, 320), "the second image's own frame"
    xy = search.second.points
    assert xy[:, 0].max() <= 255 and xy[:, 1].max() <= 319
    assert np.allclose(xy, np.array([k.pt for k in search.second.keypoints], np.float32))


def test_match_command_searches_rotations(data_dir, tmp_path, capsys):
    image = load_image(data_dir, GRAF, (320, 256))
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(first), image)
    cv2.imwrite(str(second), cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))
    result = match_images(first, second, "xfeat", "mutual", rotations=4, nfeatures=1000)
    truth = np.array([[0.0, -1.0, 255.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # (x, y) -> (255 - y, x)
    assert result.homography is not None
    corners = np.float64([[0, 0], [319, 0], [0, 255], [319, 255]])[:, None]
    error = cv2.perspectiveTransform(corners, result.homography) - cv2.perspectiveTransform(corners, truth)
    assert np.abs(error).max() < 2.0
    from cvdeep.cli import main

    assert main(["match", str(first), str(second), "--features", "xfeat", "--matcher", "mutual", "--rotations", "4",
                 "--nfeatures", "1000"]) == 0
    assert "kept 270 deg" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["match", str(first), str(second), "--rotations", "3"])
