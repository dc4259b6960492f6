"""The ``cvdeep`` command, subcommand by subcommand, on real images."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, read_homography
from cvdeep.apps.panorama import stitch
from cvdeep.cli import build_parser, main
from cvdeep.eval.metrics import corner_error
from cvdeep.models import weight_specs
from test_examples import printed_homography

COMMANDS = ["match", "panorama", "extract", "models", "weights", "train", "export", "retrieve"]


def one_error_line(captured: pytest.CaptureResult, *words: str) -> str:
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("cvdeep ") and "error:" in lines[0]
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


def test_console_script_help() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "cvdeep.cli", "--help"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0
    assert all(command in result.stdout for command in COMMANDS)


def subcommands() -> list[str]:
    return list(build_parser()._subparsers._group_actions[0].choices)


def test_bench_is_offered_exactly_when_cvdeep_eval_exists() -> None:
    import importlib.util

    assert set(subcommands()) - {"bench"} == set(COMMANDS)
    assert ("bench" in subcommands()) == (importlib.util.find_spec("cvdeep.eval") is not None)


@pytest.mark.parametrize("command", subcommands())
def test_help_for_every_command(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: cvdeep {command}" in capsys.readouterr().out


def test_match_on_churchill(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    folder = data_dir / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill"
    viz = tmp_path / "viz.png"
    assert main(["match", str(folder / "1.ppm"), str(folder / "2.ppm"), "--max-size", "640", "--matcher", "mutual",
                 "--out", str(viz)]) == 0
    out = capsys.readouterr().out
    truth = read_homography(folder / "H_1_2")
    assert corner_error(printed_homography(out), truth, cv2.imread(str(folder / "1.ppm")).shape) < 3.0
    assert cv2.imread(str(viz)) is not None


def test_match_with_lightglue_is_one_flag(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    seq = data_dir / "oxford_affine" / "images" / "graf"
    assert main(["match", str(seq / "img1.ppm"), str(seq / "img2.ppm"), "--features", "xfeat",
                 "--matcher", "lightglue", "--max-size", "640"]) == 0
    out = capsys.readouterr().out
    assert "matcher: lightglue" in out
    truth = read_homography(seq / "H1to2p")
    assert corner_error(printed_homography(out), truth, cv2.imread(str(seq / "img1.ppm")).shape) < 3.0


def test_match_errors_are_one_line(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    graf = data_dir / "oxford_affine" / "images" / "graf" / "img1.ppm"
    assert main(["match", str(tmp_path / "missing.jpg"), str(graf)]) == 1
    one_error_line(capsys.readouterr(), "missing.jpg", "no such file")

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not pixels")
    assert main(["match", str(graf), str(not_an_image)]) == 1
    one_error_line(capsys.readouterr(), "notes.jpg", "not an image")

    noise = data_dir / "panorama_stitching_tutorial" / "imgs" / "weir_noise.jpg"
    assert main(["match", str(graf), str(noise), "--max-size", "400"]) == 1
    one_error_line(capsys.readouterr(), "do not overlap")

    assert main(["match", str(graf), str(graf), "--features", "no-such-feature"]) == 1
    one_error_line(capsys.readouterr(), "no-such-feature", "accepted")


def test_panorama_budapest_unordered(data_dir: Path) -> None:
    folder = data_dir / "panorama_stitching_tutorial" / "imgs"
    paths = [folder / f"budapest{i}.jpg" for i in (4, 1, 6, 2, 5, 3)]
    panorama = stitch(paths, max_size=480, nfeatures=1500)
    assert sorted(panorama.placed) == list(range(6)) and not panorama.rejected
    height, width = panorama.image.shape[:2]
    # six photos of a map, two rows of three: the canvas is about 2-3 photos wide and 1.5-2.5 high
    assert 1.8 * 480 < width < 3.5 * 480 and 1.2 * 340 < height < 3.0 * 340
    for corners in panorama.corners.values():
        assert (corners >= -1).all() and (corners <= [width + 1, height + 1]).all()
        centre = np.round(corners.mean(axis=0)).astype(int)
        assert panorama.image[centre[1], centre[0]].any()  # something was drawn where each photo lies


def test_panorama_command_non_overlapping(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    folder = data_dir / "panorama_stitching_tutorial" / "imgs"
    inputs = [str(folder / name) for name in ("weir_noise.jpg", "weir_2.jpg", "weir_1.jpg", "weir_3.jpg")]
    out = tmp_path / "pano.jpg"
    assert main(["panorama", *inputs, "--max-size", "400", "--out", str(out)]) == 1
    one_error_line(capsys.readouterr(), "weir_noise.jpg", "--skip-unmatched")
    assert not out.exists()

    assert main(["panorama", *inputs, "--max-size", "400", "--out", str(out), "--skip-unmatched"]) == 0
    printed = capsys.readouterr().out
    assert "skipped weir_noise.jpg" in printed and "3 of 4 images" in printed
    assert len(re.findall(r"^placed weir_\d\.jpg", printed, re.M)) == 3
    assert cv2.imread(str(out)).shape[1] > 1.5 * 400

    assert main(["panorama", inputs[1], "--out", str(out)]) == 1
    one_error_line(capsys.readouterr(), "at least two images")


def make_image_folder(root: Path, data_dir: Path) -> Path:
    """Three small real photos, one in a subfolder, and a file that is not an image."""
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    source = data_dir / "oxford_affine" / "images" / "graf"
    for name, target in (("img1.ppm", "a.png"), ("img2.ppm", "b.jpg"), ("img3.ppm", "sub/c.png")):
        image = cv2.imread(str(source / name))
        cv2.imwrite(str(folder / target), cv2.resize(image, (320, 256), interpolation=cv2.INTER_AREA))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_extract_layout_and_resume(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    h5py = pytest.importorskip("h5py")
    folder = make_image_folder(tmp_path, data_dir)
    out = tmp_path / "features.h5"
    command = ["extract", str(folder), "--features", "sift", "--nfeatures", "300", "--max-size", "200",
               "--out", str(out), "--quiet"]
    assert main(command) == 0
    assert "3 images extracted, 0 already there" in capsys.readouterr().out
    with h5py.File(out, "r") as store:
        assert store.attrs["features"] == "sift"
        names = sorted(name for name in ("a.png", "b.jpg", "sub/c.png") if name in store)
        assert names == ["a.png", "b.jpg", "sub/c.png"]
        group = store["sub/c.png"]
        keypoints, descriptors = group["keypoints"][()], group["descriptors"][()]
        assert keypoints.ndim == 2 and keypoints.shape[1] == 2 and 0 < len(keypoints) <= 300
        assert descriptors.shape == (128, len(keypoints))  # hloc stores (D, N)
        assert group["scores"].shape == (len(keypoints),)
        assert list(group["image_size"][()]) == [320, 256]
        # keypoints are in original pixels although extraction ran at 200 px
        assert keypoints[:, 0].max() > 200 and (keypoints >= -0.5).all() and (keypoints < [320, 256]).all()

    with h5py.File(out, "a") as store:
        del store["b.jpg/scores"]  # as if interrupted while writing b.jpg
    assert main(command) == 0
    assert "1 images extracted, 2 already there" in capsys.readouterr().out

    assert main([*command[:3], "orb", *command[4:]]) == 1
    one_error_line(capsys.readouterr(), "features='sift'")


def test_extract_from_list_and_errors(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    h5py = pytest.importorskip("h5py")
    folder = make_image_folder(tmp_path, data_dir)
    listing = folder / "list.txt"
    listing.write_text("a.png\nsub/c.png\n")
    out = tmp_path / "listed.h5"
    assert main(["extract", str(listing), "--out", str(out), "--quiet"]) == 0
    with h5py.File(out, "r") as store:
        assert "a.png" in store and "sub/c.png" in store and "b.jpg" not in store

    assert main(["extract", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    one_error_line(capsys.readouterr(), "nowhere", "no such file or directory")
    listing.write_text("a.png\nnotes.txt\n")
    assert main(["extract", str(listing), "--out", str(tmp_path / "other.h5"), "--quiet"]) == 1
    one_error_line(capsys.readouterr(), "notes.txt", "not an image")


def test_models_and_weights(capsys: pytest.CaptureFixture) -> None:
    from cvdeep.models import list_models

    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in list_models())
    assert main(["weights", "list"]) == 0
    printed = capsys.readouterr().out
    assert "cache:" in printed and all(spec.name in printed for spec in weight_specs().values())
    assert main(["weights", "path", "no-such-weights"]) == 1
    one_error_line(capsys.readouterr(), "no-such-weights")
