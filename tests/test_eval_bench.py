"""One small end-to-end benchmark run on real images (OpenCV baselines; any feature takes this path)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeep import Error
from cvdeep.eval import BenchConfig, main, run, runner, write_outputs
from cvdeep.eval.datasets import load_oxford
from cvdeep.eval.runner import PROTOCOL_BRUTE_FORCE, build_feature, evaluate_pair, extract
from cvdeep.matching.pairs import PairMatcher


@pytest.fixture(scope="module")
def oxford_root(data_dir: Path) -> Path:
    return data_dir / "oxford_affine" / "images"


@pytest.fixture(scope="module")
def ubc_results(oxford_root: Path) -> dict:
    config = BenchConfig(dataset="oxford", root=str(oxford_root), features=["sift", "orb"], sequences=["ubc"],
                         max_keypoints=500)
    return run(config, show_progress=False)


def test_every_feature_scores_every_pair(ubc_results: dict) -> None:
    assert [r["feature"] for r in ubc_results["results"]] == ["sift", "orb"]
    for entry in ubc_results["results"]:
        assert len(entry["pairs"]) == 5 and len(entry["images"]) == 6
        assert entry["precision"] == "fp32"  # what ran (OpenCV features: always fp32)
        assert set(entry["summary"]) == {"all", "JPEG"}
        summary = entry["summary"]["all"]
        mma = np.array(summary["mma"])
        assert np.all(np.diff(mma) >= 0) and 0 <= mma[0] and mma[-1] <= 1
        assert summary["keypoints_per_image"] <= 500
        assert 0 < summary["repeatability"] <= 1 and summary["ms_per_image"] > 0


def test_baselines_match_a_jpeg_sequence_well(ubc_results: dict) -> None:
    """ubc only changes JPEG quality (identity homographies): both baselines must find
    mostly correct matches and the right homography on the mildest pair."""
    for entry in ubc_results["results"]:
        assert entry["summary"]["all"]["mma"][2] > 0.5, entry["feature"]
        assert entry["pairs"][0]["corner_error"] < 3, entry["feature"]


def test_outputs_are_strict_json_a_table_and_a_plot(ubc_results: dict, tmp_path: Path) -> None:
    written = write_outputs(ubc_results, tmp_path / "bench.json")
    def reject(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")
    loaded = json.loads((tmp_path / "bench.json").read_text(), parse_constant=reject)
    assert loaded["config"]["max_keypoints"] == 500 and loaded["machine"]["opencv"] == cv2.__version__
    table = (tmp_path / "bench.md").read_text()
    assert "| sift |" in table and "| orb |" in table and "**JPEG**" in table
    pytest.importorskip("matplotlib")
    assert tmp_path / "bench.png" in written and (tmp_path / "bench.png").stat().st_size > 1000


def test_a_wrong_ground_truth_is_detected(oxford_root: Path) -> None:
    """The same matches scored against a homography shifted by 20 px are almost all wrong."""
    leuven = load_oxford(oxford_root, ["leuven"])[0]
    sift = build_feature("sift", 500)
    reference, target = (extract(sift, leuven.read_image(i), 500) for i in (0, 1))
    truth = leuven.homographies[0]
    shifted = np.array([[1, 0, 20], [0, 1, 0], [0, 0, 1]]) @ truth
    mutual = PairMatcher("mutual", sift, brute_force=PROTOCOL_BRUTE_FORCE)
    good = evaluate_pair(reference, target, truth, mutual)
    bad = evaluate_pair(reference, target, shifted, mutual)
    assert good["mma"][2] > 0.6 and bad["mma"][2] < 0.05
    assert good["corner_error"] < 3 < bad["corner_error"]


def test_max_keypoints_keeps_the_strongest(oxford_root: Path) -> None:
    image = load_oxford(oxford_root, ["graf"])[0].read_image(0)
    sift = cv2.SIFT_create()
    keypoints, _ = sift.detectAndCompute(image, None)
    strongest = np.sort([kp.response for kp in keypoints])[::-1]
    capped = extract(sift, image, 100)  # cv2.SIFT_create() has no cap of its own here
    assert len(capped.points) == len(capped.keypoints) == len(capped.descriptors) == 100
    assert capped.points.tolist() == [list(kp.pt) for kp in capped.keypoints]
    assert {kp.pt for kp in capped.keypoints} <= {kp.pt for kp in keypoints if kp.response >= strongest[99]}


def test_command_line_reports_bad_input(oxford_root: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "oxford", "--root", str(oxford_root), "--features", "nosuchfeature", "--quiet"])
    assert exit_info.value.code == 2
    assert "nosuchfeature" in capsys.readouterr().err


def test_detector_plus_descriptor_composes_two_features(oxford_root: Path) -> None:
    image = load_oxford(oxford_root, ["graf"])[0].read_image(0)
    composed = build_feature("orb+sift", 300)
    extraction = extract(composed, image, 300)
    assert composed.defaultNorm() == cv2.NORM_L2
    assert 0 < len(extraction.points) <= 300
    assert extraction.descriptors.shape == (len(extraction.points), 128)


def test_a_pair_without_keypoints_scores_zero_without_failing() -> None:
    blank = np.full((120, 160, 3), 127, np.uint8)
    sift = build_feature("sift", 100)
    empty = extract(sift, blank, 100)
    assert len(empty.points) == 0 and empty.descriptors.shape == (0, 128)
    result = evaluate_pair(empty, empty, np.eye(3), PairMatcher("mutual", sift, brute_force=PROTOCOL_BRUTE_FORCE))
    assert result["matches"] == 0 and max(result["mma"]) == 0.0
    assert result["corner_error"] == float("inf") and result["repeatability"] == 0.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lightglue_pipeline_is_one_flag(oxford_root: Path, precision: str) -> None:
    """XFeat + LighterGlue through the same runner: on ubc (JPEG only, identity homographies) most
    matches are right (0.90 at 3 px when written, in either precision) and the matcher and its
    precision are recorded with the results."""
    config = BenchConfig(dataset="oxford", root=str(oxford_root), features=["xfeat"], matcher="lightglue",
                         sequences=["ubc"], max_keypoints=500, lightglue_precision=precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 on a CPU without it: fp32, with a notice
        results = run(config, show_progress=False)
    summary = results["results"][0]["summary"]["all"]
    assert results["config"]["matcher"] == "lightglue" and results["config"]["lightglue_precision"] == precision
    assert summary["matches_per_pair"] > 100 and summary["mma"][2] > 0.8


def test_lightglue_refuses_features_without_weights_before_describing(
        oxford_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_description(*args: object) -> None:
        raise AssertionError("an image was described before the bad pairing was refused")

    monkeypatch.setattr(runner, "detect_features", no_description)
    config = BenchConfig(dataset="oxford", root=str(oxford_root), features=["xfeat", "sift"], matcher="lightglue",
                         sequences=["ubc"])
    with pytest.raises(Error, match="aliked, aliked-n16, disk, xfeat; got 'sift'"):
        run(config, show_progress=False)
