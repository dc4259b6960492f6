"""The ``cvdeep`` command, subcommand by subcommand, on real images."""
from __future__ import annotations

import argparse
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
from cvdeep.weights import resolve
from test_examples import printed_homography

COMMANDS = ["match", "panorama", "extract", "pairs", "models", "weights", "train", "export", "retrieve"]


def one_error_line(captured: pytest.CaptureResult, *words: str) -> str:
    """The one ``cvdeep <command>: error: ...`` line, last on stderr (progress bars may come before it)."""
    lines = [line for line in re.split(r"[\r\n]+", captured.err) if line.strip()]
    errors = [line for line in lines if line.startswith("cvdeep ") and ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], captured.err
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


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
    assert main(["match", str(graf), str(noise), "--max-size", "400", "--features", "sift"]) == 1
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
    assert main(["panorama", *inputs, "--max-size", "400", "--out", str(out), "--features", "sift", "--quiet"]) == 1
    one_error_line(capsys.readouterr(), "weir_noise.jpg", "--skip-unmatched")
    assert not out.exists()

    assert main(["panorama", *inputs, "--max-size", "400", "--out", str(out), "--skip-unmatched",
                 "--features", "sift", "--quiet"]) == 0
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


# --- one vocabulary of feature names in every command -------------------------------------------------

FEATURE_COMMANDS = ("match", "panorama", "extract", "bench")


def feature_command(command: str, image: Path, tmp_path: Path, data_dir: Path) -> list[str]:
    """A complete command line of ``command`` up to its --features option."""
    return {
        "match": ["match", str(image), str(image)],
        "panorama": ["panorama", str(image), str(image), "--out", str(tmp_path / "pano.jpg")],
        "extract": ["extract", str(image), "--out", str(tmp_path / "features.h5")],
        "bench": ["bench", "--dataset", "oxford", "--root", str(data_dir / "oxford_affine" / "images"),
                  "--sequences", "graf", "--out", str(tmp_path / "bench.json")],
    }[command]


def listed_models(capsys: pytest.CaptureFixture) -> dict[str, str]:
    """Model name -> kind, as `cvdeep models` prints them."""
    assert main(["models"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    return {row.split()[0]: row.split()[2] for row in rows}


@pytest.fixture
def tiny_image(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    return path


@pytest.mark.parametrize("command", FEATURE_COMMANDS)
def test_every_listed_name_reaches_feature_construction(command: str, tiny_image: Path, tmp_path: Path,
                                                        data_dir: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every feature that `cvdeep models` lists (and compositions, parameters) is taken by every command and
    handed to the one constructor, cvdeep.feature_names.create_feature (stopped here before any network runs)."""
    pytest.importorskip("h5py")
    import cvdeep.feature_names as names
    from cvdeep.errors import Error

    models = listed_models(capsys)
    built: list[str] = []

    def stop(part: str, nfeatures: int | None, device: str | None) -> None:
        built.append(part)
        raise Error(f"stopped before building {part}")

    monkeypatch.setattr(names, "_create_one", stop)
    start = feature_command(command, tiny_image, tmp_path, data_dir)
    features = [name for name, kind in models.items() if kind in ("detector", "patch")]
    features += ["sift", "orb", "XFeat", "xfeat[nms=soft,nfeatures=300]", "sift+tfeat-liberty",
                 "keynet[nfeatures=300]+hardnet++", "hardnet++"]
    for name in features:
        built.clear()
        assert main([*start, "--features", name, "--quiet"]) == 1, name
        detector = name.split("+")[0] if name != "hardnet++" else name
        one_error_line(capsys.readouterr(), f"stopped before building {detector}")
        assert built == [detector], (name, built)
    for name, kind in models.items():  # a matcher or a detector alone: told what to do, never "unknown"
        if kind in ("matcher", "detector-only"):
            assert main([*start, "--features", name, "--quiet"]) == 1
            line = one_error_line(capsys.readouterr(), name)
            advice = "--matcher lightglue" if kind == "matcher" else f"{name}+"
            assert "unknown" not in line and advice in line, line
    assert main([*start, "--features", "no-such-feature", "--quiet"]) == 1
    line = one_error_line(capsys.readouterr(), "unknown feature 'no-such-feature'", "accepted:", "DETECTOR+DESCRIPTOR")
    accepted = line.split("accepted: ")[1].split(";")[0].split(", ")
    assert len(accepted) == len(set(accepted))  # each name once
    assert not {n for n, kind in models.items() if kind in ("matcher", "detector-only")} & set(accepted)
    assert {n for n, kind in models.items() if kind in ("detector", "patch")} <= set(accepted)


def test_every_listed_feature_builds_or_names_its_missing_weights(capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from cvdeep.errors import Error
    from cvdeep.feature_names import create_feature

    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    for name, kind in listed_models(capsys).items():
        if kind not in ("detector", "patch"):
            continue
        try:
            feature = create_feature(name, nfeatures=100)
        except Error as error:
            message = str(error)
            assert "were not found" in message and "unknown" not in message, (name, message)
            assert "cvdeep weights fetch" in message, message
        else:
            assert callable(feature.detectAndCompute) and feature.descriptorSize() > 0, name


def test_weights_commands_know_every_listed_model(capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    for name in listed_models(capsys):
        status = main(["weights", "path", name])
        captured = capsys.readouterr()
        if status == 0:
            assert Path(captured.out.strip()).is_file(), name
        else:
            assert "were not found" in captured.err and "unknown" not in captured.err, (name, captured.err)


# --- defaults, progress and silence ---------------------------------------------------------------

def test_default_pipeline_is_the_best_one_whose_weights_are_here(monkeypatch: pytest.MonkeyPatch) -> None:
    from cvdeep.apps import common

    here: set[str] = set()
    monkeypatch.setattr(common, "_weights_here", lambda model: model in here)
    here.update({"aliked-n16", "lightglue-aliked", "xfeat", "lighterglue-xfeat"})
    assert common.default_pipeline()[:2] == ("aliked[nfeatures=2048]", "lightglue")
    assert common.default_pipeline(nfeatures=500)[:2] == ("aliked", "lightglue")  # --nfeatures given: no cap
    here.discard("lightglue-aliked")
    assert common.default_pipeline()[:2] == ("aliked[nfeatures=2048]", "mutual")
    here.discard("aliked-n16")
    assert common.default_pipeline()[:2] == ("xfeat[nfeatures=2048]", "lightglue")
    here.discard("lighterglue-xfeat")
    assert common.default_pipeline()[:2] == ("xfeat[nfeatures=2048]", "mutual")
    here.clear()
    pipeline = common.default_pipeline()
    assert (pipeline.features, pipeline.matcher) == ("sift", "ratio") and "cvdeep weights fetch" in pipeline.reason
    assert common.resolve_pipeline("orb", None)[:2] == ("orb", "ratio")  # --features given: ratio test
    assert common.resolve_pipeline(None, "nn")[1] == "nn"
    # LightGlue's matrices grow with N x M: a detector asked for by name gets the default cap with it
    assert common.resolve_pipeline("disk", "lightglue")[:2] == ("disk[nfeatures=2048]", "lightglue")
    assert common.resolve_pipeline("disk[nms=soft]", "lightglue")[0] == "disk[nms=soft,nfeatures=2048]"
    assert common.resolve_pipeline("disk", "lightglue", nfeatures=8000)[0] == "disk"
    assert common.resolve_pipeline("disk", "mutual")[0] == "disk"


def test_match_defaults_to_aliked_and_lightglue_and_says_so(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    specs = weight_specs()
    for name in ("aliked-n16", "aliked_lightglue"):  # the default pipeline is chosen from what is here
        resolve(specs[name])
    capsys.readouterr()  # a fetch's progress bar
    seq = data_dir / "oxford_affine" / "images" / "graf"
    assert main(["match", str(seq / "img1.ppm"), str(seq / "img2.ppm"), "--max-size", "320", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("features: aliked[nfeatures=2048]   matcher: lightglue")
    assert "default pipeline (aliked and lightglue-aliked weights are here)" in captured.out
    truth = read_homography(seq / "H1to2p")
    assert corner_error(printed_homography(captured.out), truth, cv2.imread(str(seq / "img1.ppm")).shape) < 3.0
    assert captured.err == ""  # --quiet: no bar, no log line


def test_without_learned_weights_the_default_is_sift_and_nothing_is_downloaded(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVDEEP_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    seq = data_dir / "oxford_affine" / "images" / "graf"
    assert main(["match", str(seq / "img1.ppm"), str(seq / "img2.ppm"), "--max-size", "320", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("features: sift   matcher: ratio") and "no learned weights here" in out
    assert not (tmp_path / "empty-cache").exists()


def test_models_builds_no_network(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import torch

    import cvdeep.models

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("cvdeep models built a network")

    main(["models"])  # warm: the registry's modules are imported once per process
    capsys.readouterr()
    monkeypatch.setattr(cvdeep.models, "build_model", refuse)
    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
    start = time.process_time()
    assert main(["models"]) == 0
    assert time.process_time() - start < 2.0
    assert "xfeat" in capsys.readouterr().out


def test_every_command_takes_quiet() -> None:
    def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):
                    found += leaves(sub)
                return found
        return [parser]

    commands = leaves(build_parser())
    assert len(commands) >= len(COMMANDS) + 4  # train has several tasks
    for parser in commands:
        assert any("--quiet" in action.option_strings for action in parser._actions), parser.prog


def test_match_shows_its_steps_unless_quiet(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    seq = data_dir / "oxford_affine" / "images" / "graf"
    command = ["match", str(seq / "img1.ppm"), str(seq / "img2.ppm"), "--max-size", "240", "--features", "sift"]
    assert main(command) == 0
    err = capsys.readouterr().err
    for step in ("reading the images", "loading sift", "features of img1.ppm", "features of img2.ppm",
                 "matching (ratio)", "homography (magsac)"):
        assert f"cvdeep match: {step}" in err, step
    assert main([*command, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_extract_with_workers_writes_what_one_process_writes(tmp_path: Path, data_dir: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    h5py = pytest.importorskip("h5py")
    folder = make_image_folder(tmp_path, data_dir)
    outputs = {}
    for workers in ("1", "2"):
        outputs[workers] = tmp_path / f"workers{workers}.h5"
        assert main(["extract", str(folder), "--features", "sift", "--nfeatures", "200", "--max-size", "200",
                     "--out", str(outputs[workers]), "--workers", workers, "--quiet"]) == 0
        assert "3 images extracted" in capsys.readouterr().out
    with h5py.File(outputs["1"], "r") as one, h5py.File(outputs["2"], "r") as two:
        for name in ("a.png", "b.jpg", "sub/c.png"):
            for dataset in ("keypoints", "descriptors", "scores", "image_size"):
                np.testing.assert_array_equal(one[name][dataset][()], two[name][dataset][()])
    with pytest.raises(SystemExit):
        main(["extract", str(folder), "--out", str(tmp_path / "x.h5"), "--workers", "0"])
    assert "expected a number of processes >= 1" in capsys.readouterr().err
