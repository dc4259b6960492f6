"""SuperPoint's three training stages end to end on tiny tasks (``cvdeep.train.superpoint``):
each stage runs, writes what the next one reads, and resumes to the result of an uninterrupted run.
What the stages learn is checked at the loss level in ``test_train_dense.py``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cvdeep.eval.datasets import default_shared_data
from cvdeep.models import build_model
from cvdeep.train import superpoint as sp
from cvdeep.train.loop import read_log
from training_checks import resume_matches_uninterrupted, write_wedge_photos

pytestmark = [pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning"),
              pytest.mark.usefixtures("one_thread")]


def _magicpoint(steps: int) -> sp.MagicPointTraining:
    return sp.MagicPointTraining(steps=steps, batch_size=2, image_size=(48, 64), shapes_per_primitive=3,
                                 compile=False, precision="fp32")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MagicPoint trained for 3 steps (what the later stages need: a weights.pt of the layout)."""
    out = tmp_path_factory.mktemp("magicpoint")
    return Path(sp.train_magicpoint(_magicpoint(3), out, cache_dir=out / "cache", progress=False)["weights"])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wedge_photos(tmp_path_factory.mktemp("photos"))


def _adaptation(detector: Path, photos: Path) -> sp.AdaptationSettings:
    return sp.AdaptationSettings(detector=str(detector), images=str(photos), image_size=(64, 80), homographies=2,
                                 threshold=0.0, top_k=40, precision="fp32")


@pytest.fixture(scope="module")
def labels(detector: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapt") / "labels.npz"
    sp.export_pseudo_labels(_adaptation(detector, photos), out, progress=False)
    return out


def test_magicpoint_stage_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    settings = _magicpoint(5)
    whole, _ = resume_matches_uninterrupted(
        monkeypatch, sp, lambda out, **options: sp.train_magicpoint(settings, out, cache_dir=tmp_path / "cache",
                                                                     **options), tmp_path)
    assert len(read_log(tmp_path / "whole" / "log.csv")["loss"]) == 5
    network = build_model(sp.MODEL, weights=whole["weights"]).eval()  # loads into superpoint-cvdeep
    with torch.no_grad():
        found = network.extract(torch.rand(1, 1, 64, 80), torch.ones(1, 1, 64, 80, dtype=torch.bool))
    assert found["scores"].numel() > 0


def test_adaptation_exports_labels_and_resumes_from_a_partial_file(detector, photos, labels, tmp_path):
    with np.load(labels) as saved:
        names, offsets, keypoints = list(saved["paths"]), saved["offsets"], saved["keypoints"]
    assert names == ["0.png", "1.png", "2.png", "3.png"] and offsets[-1] == len(keypoints) and len(keypoints) > 0
    assert (keypoints >= 0).all() and (keypoints[:, 0] <= 79).all() and (keypoints[:, 1] <= 63).all()
    assert all(0 < offsets[i + 1] - offsets[i] <= 40 for i in range(len(names)))
    # a run stopped after two photos left a partial file: the rest is computed, the first two kept
    partial = {names[i]: keypoints[offsets[i]: offsets[i + 1]] for i in range(2)}
    partial["0.png"] = partial["0.png"][:1]  # proves the saved photo is not recomputed
    out = tmp_path / "labels.npz"
    sp._save_labels(out.with_suffix(".partial.npz"), partial)
    summary = sp.export_pseudo_labels(_adaptation(detector, photos), out, progress=False)
    assert summary["photos"] == 4 and not out.with_suffix(".partial.npz").exists()
    with np.load(out) as again:
        np.testing.assert_array_equal(again["keypoints"][again["offsets"][0]: again["offsets"][1]], partial["0.png"])
        np.testing.assert_array_equal(again["keypoints"][again["offsets"][1]:], keypoints[offsets[1]:])


def test_joint_stage_resumes_to_the_uninterrupted_weights(detector, photos, labels, tmp_path, monkeypatch):
    settings = sp.JointTraining(labels=str(labels), init=str(detector), steps=5, batch_size=1, compile=False,
                                precision="fp32")
    resume_matches_uninterrupted(
        monkeypatch, sp, lambda out, **options: sp.train_joint(settings, out, images=photos, **options), tmp_path)
    log = read_log(tmp_path / "whole" / "log.csv")
    assert set(log) >= {"loss", "detector_loss", "descriptor_loss"} and np.isfinite(log["loss"]).all()


def test_the_magicpoint_command_reports_repeatability_or_says_why_not(tmp_path, monkeypatch, capsys):
    from cvdeep.cli import main

    monkeypatch.chdir(tmp_path)  # no ../shared beside it
    monkeypatch.setenv("CVDEEP_SHARED", str(tmp_path / "absent"))
    status = main(["train", "magicpoint", "--steps", "1", "--batch-size", "1", "--shapes-per-primitive", "1",
                   "--no-compile", "--out", "run", "--cache", "cache", "--quiet", "--threads", "1"])
    assert status == 0 and "shared evaluation data was not found" in capsys.readouterr().out
    assert (tmp_path / "run" / "weights.pt").is_file() and not (tmp_path / "run" / "repeatability.json").exists()


@pytest.mark.skipif(default_shared_data() is None, reason="needs the shared evaluation data (../shared/data)")
def test_detector_repeatability_on_shared_pairs(detector):
    measured = sp.detector_repeatability(detector, sequences=["v_graffiti"])
    assert measured is not None and set(measured) == {"trained", "sift"}
    assert 20.0 < measured["sift"] < 90.0 and 0.0 <= measured["trained"] <= 100.0
