"""The example scripts, run end to end as a user runs them, on real images."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvdeep
from conftest import ROOT, read_homography
from cvdeep.eval.metrics import corner_error

EXAMPLES = ROOT / "examples"
CVDEEP_LINE = "detector = cvdeep.XFeat_create()"
SIFT_LINE = "detector = cv2.SIFT_create()"


def run_script(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def printed_homography(stdout: str) -> np.ndarray:
    rows = stdout.split("H (image1 -> image2, original pixels):\n", 1)[1].splitlines()[:3]
    return np.array([[float(value) for value in row.split()] for row in rows])


def sift_version(tmp_path: Path) -> Path:
    """The SIFT original: the cvdeep example with its one detector line changed back."""
    source = (EXAMPLES / "switch_from_sift.py").read_text().splitlines(keepends=True)
    assert sum(line.strip() == CVDEEP_LINE for line in source) == 1
    script = tmp_path / "sift_version.py"
    script.write_text("".join(SIFT_LINE + "\n" if line.strip() == CVDEEP_LINE else line for line in source))
    return script


def test_switch_from_sift_differs_in_one_line(tmp_path: Path) -> None:
    original = (EXAMPLES / "switch_from_sift.py").read_text().splitlines()
    switched = sift_version(tmp_path).read_text().splitlines()
    assert len(original) == len(switched)
    assert [(a, b) for a, b in zip(original, switched) if a != b] == [(CVDEEP_LINE, SIFT_LINE)]


def recovered_error(stdout: str) -> float:
    match = re.search(r"mean corner error of the recovered homography: ([0-9.]+) px", stdout)
    assert match, stdout
    return float(match.group(1))


def test_sift_version_offline_sample(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the offline sample photo ships with matplotlib")
    result = run_script(sift_version(tmp_path), "--out", "sift.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert recovered_error(result.stdout) < 1.0
    assert cv2.imread(str(tmp_path / "sift.png")) is not None


@pytest.mark.skipif(not hasattr(cvdeep, "XFeat_create"), reason="XFeat is not part of this cvdeep build yet")
def test_cvdeep_version_offline_sample(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the offline sample photo ships with matplotlib")
    result = run_script(EXAMPLES / "switch_from_sift.py", "--out", "xfeat.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert recovered_error(result.stdout) < 2.0
    assert cv2.imread(str(tmp_path / "xfeat.png")) is not None


def test_sift_version_on_two_given_images(tmp_path: Path, data_dir: Path) -> None:
    sequence = data_dir / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill"
    small = []
    for name in ("1.ppm", "2.ppm"):
        image = cv2.imread(str(sequence / name))
        small.append(tmp_path / f"small_{name}.png")
        cv2.imwrite(str(small[-1]), cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    result = run_script(sift_version(tmp_path), str(small[0]), str(small[1]), "--out", "out.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "inliers:" in result.stdout and cv2.imread(str(tmp_path / "out.png")) is not None


@pytest.mark.parametrize("pair", ["graf", "churchill"])
def test_homography_example_against_ground_truth(pair: str, tmp_path: Path, data_dir: Path) -> None:
    if pair == "graf":
        folder = data_dir / "oxford_affine" / "images" / "graf"
        first, second, truth = folder / "img1.ppm", folder / "img2.ppm", read_homography(folder / "H1to2p")
    else:
        folder = data_dir / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill"
        first, second, truth = folder / "1.ppm", folder / "2.ppm", read_homography(folder / "H_1_2")
    viz = tmp_path / "viz.png"
    result = run_script(EXAMPLES / "homography.py", str(first), str(second), "--features", "sift",
                        "--max-size", "640", "--out", str(viz), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert corner_error(printed_homography(result.stdout), truth, cv2.imread(str(first)).shape) < 3.0
    assert re.search(r"matches: \d+ tentative, \d+ inliers", result.stdout)
    assert all(stage in result.stdout for stage in ("features 1", "features 2", "match", "homography"))
    drawing = cv2.imread(str(viz))
    assert drawing is not None and drawing.shape[0] > 640  # matches on top, overlays below


def test_panorama_example_weir(tmp_path: Path, data_dir: Path) -> None:
    folder = data_dir / "panorama_stitching_tutorial" / "imgs"
    out = tmp_path / "pano.jpg"
    inputs = [str(folder / f"weir_{i}.jpg") for i in (3, 1, 2)]  # unordered on purpose
    result = run_script(EXAMPLES / "panorama.py", *inputs, "--max-size", "500", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "3 of 3 images" in result.stdout
    panorama = cv2.imread(str(out))
    assert panorama is not None
    assert 1.5 * 500 < panorama.shape[1] < 3.0 * 500 and panorama.shape[0] < 1.5 * 500


def test_panorama_example_refuses_non_overlapping(tmp_path: Path, data_dir: Path) -> None:
    folder = data_dir / "panorama_stitching_tutorial" / "imgs"
    out = tmp_path / "pano.jpg"
    inputs = [str(folder / name) for name in ("weir_1.jpg", "weir_noise.jpg", "weir_2.jpg")]
    result = run_script(EXAMPLES / "panorama.py", *inputs, "--max-size", "400", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in re.split(r"[\r\n]+", result.stderr) if line.strip()]  # progress bar, then the error
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0] and "weir_noise.jpg" in errors[0]
    assert "Traceback" not in result.stderr and not out.exists()
