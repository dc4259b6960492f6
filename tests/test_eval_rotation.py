"""The rotation test (``cvdeep.eval.rotation``): its ground truth, SIFT on a real image, the search, the command."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import cvdeep
from cvdeep.eval.rotation import (
    RotationBenchConfig,
    correct_matches,
    evaluate_angle,
    main,
    parse_angles,
    parse_rotations,
    rotate,
    rotation_geometry,
    run,
)
from cvdeep.eval.runner import PROTOCOL_BRUTE_FORCE, build_feature
from cvdeep.matching.pairs import PairMatcher, detect_features
from cvdeep.matching.rotation import match_with_rotation_search
from feature_checks import GRAF, load_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def graf_small(data_dir):
    return load_image(data_dir, GRAF, (320, 240))


@pytest.mark.parametrize("angle", [0, 90, 180, 270, -90, 360])
def test_right_angles_map_pixels_as_cv2_rotate(angle):
    height, width = 5, 7
    image = np.arange(height * width, dtype=np.uint8).reshape(height, width)
    matrix, canvas = rotation_geometry((width, height), angle)
    turned, same = rotate(image, angle)
    assert np.array_equal(same, matrix)
    assert turned.shape == (canvas[1], canvas[0])
    ys, xs = np.mgrid[0:height, 0:width]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    moved = cv2.transform(points[:, None], matrix)[:, 0]
    assert np.array_equal(moved, moved.round()), "right angles map pixel centres onto pixel centres exactly"
    moved = moved.round().astype(int)
    assert np.array_equal(turned[moved[:, 1], moved[:, 0]], image[ys.ravel(), xs.ravel()])
    assert np.array_equal(cv2.warpAffine(image, matrix, canvas, flags=cv2.INTER_NEAREST), turned)


def test_clockwise_90_is_the_documented_mapping():
    matrix, canvas = rotation_geometry((7, 5), 90)
    assert canvas == (5, 7)
    assert np.array_equal(matrix, [[0, -1, 4], [1, 0, 0]]), "(x, y) -> (H - 1 - y, x)"


@pytest.mark.parametrize("angle", [30, 60, 135, -45])
def test_general_angles_move_a_dot_where_the_matrix_says(angle):
    """A blurred dot at known places, turned by ``rotate`` (cv2.warpAffine), lands where cv2.transform
    of the matrix puts it; the matrix turns clockwise as cv2.getRotationMatrix2D does for -angle, and the
    canvas holds the whole image, no more."""
    width, height = 64, 48
    matrix, canvas = rotation_geometry((width, height), angle)
    assert np.allclose(matrix[:, :2], cv2.getRotationMatrix2D((0.0, 0.0), -angle, 1.0)[:, :2])
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    mapped = cv2.transform(corners[:, None], matrix)[:, 0]
    extent = mapped.max(axis=0) - mapped.min(axis=0)
    assert np.all(mapped >= -0.5 - 1e-9) and np.all(mapped <= np.array(canvas) - 0.5 + 1e-9)
    assert np.all(np.array(canvas) - extent < 1.0)
    for x, y in [(20.0, 15.0), (45.0, 30.0), (32.0, 10.0)]:
        dot = np.zeros((height, width), np.float32)
        dot[int(y), int(x)] = 1.0
        dot = cv2.GaussianBlur(dot, (0, 0), 2.0)
        turned, _ = rotate(dot, angle)
        assert turned.shape == (canvas[1], canvas[0])
        rows, columns = np.indices(turned.shape)
        centroid = np.array([(columns * turned).sum(), (rows * turned).sum()]) / turned.sum()
        expected = cv2.transform(np.array([[[x, y]]]), matrix)[0, 0]
        assert np.linalg.norm(centroid - expected) < 0.05


def test_correct_matches_counts_within_the_threshold():
    matrix, _ = rotation_geometry((10, 10), 90)
    first = np.array([[0.0, 0.0], [3.0, 4.0]])
    second = np.array([[9.0, 0.0], [5.0, 3.0], [7.0, 3.0]])  # (9, 0) and (5, 3) are exact; (7, 3) is 2 px off
    matches = np.array([[0, 0], [1, 1], [1, 2], [0, 1]])
    assert correct_matches(first, second, matches, matrix).tolist() == [True, True, True, False]
    assert correct_matches(first, second, matches, matrix, threshold=1.0).tolist() == [True, True, False, False]


def _sift_setup(image: np.ndarray):
    feature = build_feature("sift", 500)
    matcher = PairMatcher("mutual", feature, brute_force=PROTOCOL_BRUTE_FORCE)
    return feature, matcher, detect_features(feature, image)


@pytest.mark.parametrize("angle, minimum", [(0, 0.99), (30, 0.7), (90, 0.9), (180, 0.9)])
def test_sift_matches_a_real_image_against_itself_turned(graf_small, angle, minimum):
    feature, matcher, first = _sift_setup(graf_small)
    result = evaluate_angle(feature, matcher, first, graf_small, angle, rotations=1)
    print(angle, result)
    assert result["matches"] > 150 and result["ratio"] > minimum
    assert result["kept_rotation"] == 0


@pytest.mark.parametrize("angle", [30, 90])
def test_a_wrong_ground_truth_finds_no_correct_match(graf_small, angle):
    """The same matches scored with the turn the other way (same canvas size) are almost all wrong."""
    feature, matcher, first = _sift_setup(graf_small)
    turned, matrix = rotate(graf_small, angle)
    search = match_with_rotation_search(feature, matcher, first, turned, rotations=1)
    wrong, canvas = rotation_geometry((320, 240), -angle)
    assert canvas == (turned.shape[1], turned.shape[0])
    right = correct_matches(first.points, search.second.points, search.matches, matrix)
    swapped = correct_matches(first.points, search.second.points, search.matches, wrong)
    print(angle, right.mean(), swapped.mean())
    assert right.mean() > 0.7 and swapped.mean() < 0.05


def test_the_search_recovers_xfeat_at_90_degrees(graf_small):
    """XFeat is trained upright: at 90 degrees it fails without the search and succeeds with it, scored in
    the turned image's own frame."""
    feature = build_feature("xfeat", 500, device="cpu")
    matcher = PairMatcher("mutual", feature, brute_force=PROTOCOL_BRUTE_FORCE)
    first = detect_features(feature, graf_small)
    plain = evaluate_angle(feature, matcher, first, graf_small, 90, rotations=1)
    search = evaluate_angle(feature, matcher, first, graf_small, 90, rotations=4)
    print(plain, search)
    assert plain["ratio"] < 0.1
    assert search["kept_rotation"] == 270 and search["ratio"] > 0.8


def test_command_writes_the_results_of_one_sequence(data_dir, tmp_path, capsys):
    out = tmp_path / "rotation.json"
    assert main(["--features", "sift", "--sequences", "graf", "--angles", "0,90", "--rotations", "1,2",
                 "--max-keypoints", "300", "--root", str(data_dir), "--out", str(out), "--quiet"]) == 0
    results = json.loads(out.read_text())
    assert [(e["feature"], e["rotations"]) for e in results["results"]] == [("sift", 1), ("sift", 2)]
    for entry in results["results"]:
        assert set(entry["summary"]) == {"0", "90"}
        assert [(p["sequence"], p["angle"]) for p in entry["pairs"]] == [("graf", 0.0), ("graf", 90.0)]
        assert entry["summary"]["0"]["correct_ratio"] > 0.99 and entry["summary"]["90"]["correct_ratio"] > 0.9
        assert entry["summary"]["90"]["correct_matches"] > 200
    assert "| sift (search x2) |" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert out.with_suffix(".png").stat().st_size > 0


def test_bad_inputs_say_what_is_accepted(data_dir):
    with pytest.raises(cvdeep.Error, match="'abc' is not a number"):
        parse_angles("0,abc")
    with pytest.raises(cvdeep.Error, match="finite"):
        parse_angles("0,inf")
    with pytest.raises(cvdeep.Error, match="'3'.*1, 2, 4"):
        parse_rotations("1,3")
    config = RotationBenchConfig(features=["sift"], root=str(data_dir), sequences=["graf"])
    for change, message in [({"features": ["nosuchfeature"]}, "unknown feature 'nosuchfeature'"),
                            ({"features": []}, "features: got an empty list"),
                            ({"angles": []}, "angles: got an empty list"),
                            ({"angles": [0.0, 90.0, 90.0]}, "each angle may be given once"),
                            ({"rotations": [3]}, "expected search settings among 1, 2, 4"),
                            ({"sequences": ["nosuchsequence"]}, "not found")]:
        with pytest.raises(cvdeep.Error, match=message):
            run(RotationBenchConfig(**{**config.__dict__, **change}), show_progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--angles", "x", "--root", str(data_dir)])
    assert exit_info.value.code == 2
