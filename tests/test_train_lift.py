"""Training LIFT (``cvdeep.train.lift``): each stage learns a tiny task, resume is exact, the command works.

Tiny tasks on synthetic photos (wedges and discs on blurred noise, so that SIFT finds corners and
blobs): a few steps of 12 to 16 points, fp32, one thread. Nothing here claims accuracy; the real
runs are documented in docs/models/.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.models import build_model
from cvdeep.nets.lift import TRAIN_MOVEMENT, LIFTNet
from cvdeep.train import lift as training
from cvdeep.train.loop import read_log
from training_checks import resume_matches_uninterrupted, write_wedge_photos

pytestmark = [pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 200 x 240 gray images: bright wedges pointing anywhere and dark discs on blurred noise."""
    return write_wedge_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def keypoint_photos(photos: Path) -> training.KeypointPhotos:
    return training.KeypointPhotos(photos, 240, 512, 4.0, 32.0)


def _settings(photos: Path, **changes: object) -> training.LIFTTraining:
    values: dict[str, object] = {"images": str(photos), "steps": 20, "photos_per_step": 2, "keypoints_per_photo": 6,
                                 "max_side": 240, "warmup_steps": 0, "precision": "fp32", "mining_ratio": 1.0}
    values.update(changes)
    return training.LIFTTraining(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def descriptor_run(photos, keypoint_photos, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("descriptor")
    training.train_lift(_settings(photos), folder, checkpoint_every=10, progress=False, photos=keypoint_photos)
    return folder


# --- data and pieces ---------------------------------------------------------------------------------


def test_settings_are_checked():
    for bad, message in (({"stage": "all"}, "stage"), ({"descriptor": "sift"}, "descriptor"),
                         ({"stage": "descriptor", "descriptor": "official"}, "start at stage 'orientation'"),
                         ({"mining_ratio": 0.5}, "mining_ratio"), ({"rotation": (0.0, 270.0)}, "rotation"),
                         ({"input_stats": "imagenet"}, "input_stats"), ({"homography": {"warp": 1}}, "homography"),
                         ({"keypoints_per_photo": 1}, "keypoints_per_photo")):
        with pytest.raises(cvdeep.Error, match=message):
            training.LIFTTraining(**bad)  # type: ignore[arg-type]
    curriculum = training.LIFTTraining(steps=11, rotation=(30.0, 180.0))
    assert curriculum.homography_config(0).max_angle_deg == 30.0
    assert curriculum.homography_config(10).max_angle_deg == 180.0


def test_groups_are_drawn_again_identically_and_fit_both_views(photos, keypoint_photos):
    settings = _settings(photos)
    first, again = training.draw_step(keypoint_photos, settings, 3), training.draw_step(keypoint_photos, settings, 3)
    for a, b in zip(first, again):
        assert all(torch.equal(getattr(a, name), getattr(b, name)) for name in ("first", "second", "points_a",
                                                                                 "points_b", "background"))
    for group in first:
        height, width = group.first.shape[-2:]
        for rows in (group.points_a, group.points_b, group.others, group.background):
            half = training.CONTEXT * rows[:, 2]
            assert bool(((rows[:, 0] - half >= 0) & (rows[:, 0] + half <= width - 1)).all())
            assert bool(((rows[:, 1] - half >= 0) & (rows[:, 1] + half <= height - 1)).all())
        # the second view's angle is the first's turned by the homography's local rotation
        turned = training.wrapped_degrees(group.points_b[:, 3] - group.points_a[:, 3] - group.rotation)
        assert float(turned.abs().max()) < 1e-3


def test_soft_locations_of_hand_made_score_maps():
    """Through cvdeep.ops.softargmax: a sharp peak is found where it is, its value is the soft maximum,
    and the offset's gradient reaches the scores of exactly its own map."""
    scores = torch.full((3, 1, 25, 25), -2.0)
    scores[0, 0, 12 + 3, 12 - 5] = 3.0  # (dx, dy) = (-5, 3) from the centre
    scores[1, 0, 12, 12] = 1.0
    scores[2, 0, 12 - 7, 12 + 7] = 4.0
    scores.requires_grad_(True)
    offsets, values = training.soft_locations(scores)
    torch.testing.assert_close(offsets.detach(), torch.tensor([[-5.0, 3.0], [0.0, 0.0], [7.0, -7.0]]), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(values.detach(), torch.tensor([3.0, 1.0, 4.0]), atol=1e-3, rtol=0)
    offsets[0, 0].backward()
    assert scores.grad[1:].abs().sum() == 0 and scores.grad[0].abs().sum() > 0
    outside = scores.grad[0, 0].clone()
    outside[12 - TRAIN_MOVEMENT: 12 + TRAIN_MOVEMENT + 1, 12 - TRAIN_MOVEMENT: 12 + TRAIN_MOVEMENT + 1] = 0
    assert outside.abs().sum() == 0, "only the central 15 x 15 takes part"


def test_class_loss_is_the_seed_formula():
    values = torch.tensor([[2.0], [0.5], [-1.0], [0.5]])  # P1, P2, P3 scores and P4's
    labels = torch.tensor([1.0, 1.0, 1.0, -1.0])[:, None]
    weights = torch.tensor(training.CLASS_WEIGHTS)
    expected = (1 / 6) * 0.0 + (1 / 6) * 0.25 + (1 / 6) * 4.0 + (1 / 2) * 2.25
    assert float(training.class_loss(values, labels, weights)) == pytest.approx(expected)


# --- the stages learn ----------------------------------------------------------------------------------


def _held_out(task: training.LIFTTask, groups: list[training.PhotoGroup]) -> tuple[float, float]:
    """(loss, distance gap negative - positive) of the descriptor stage on fixed groups, without training."""
    with torch.no_grad():
        loss, metrics = task._descriptor_loss(groups, 0)
    return float(loss), metrics["neg_dist"] - metrics["pos_dist"]


def test_descriptor_stage_learns(photos, keypoint_photos, descriptor_run):
    """On views drawn with other homographies than the 20 training steps saw, the matching pairs end
    closer than the non-matching ones by more, and the hinge loss falls."""
    settings = _settings(photos)
    held_out = [group for step in (1000, 1001, 1002) for group in training.draw_step(keypoint_photos, settings, step)]
    before = _held_out(training.LIFTTask(settings, photos=keypoint_photos), held_out)  # the run's initialisation
    trained = training.LIFTTask(_settings(photos, init=str(descriptor_run / "weights.pt")), photos=keypoint_photos)
    after = _held_out(trained, held_out)
    print(f"held-out loss {before[0]:.3f} -> {after[0]:.3f}, distance gap {before[1]:.3f} -> {after[1]:.3f}")
    assert after[0] < 0.96 * before[0]
    assert after[1] > before[1] + 0.04
    assert len(read_log(descriptor_run / "log.csv")["loss"]) == 20


def test_orientation_stage_recovers_a_known_rotation(photos, keypoint_photos, monkeypatch):
    """The seed's orientation loss on a fixed tiny set of pairs rotated by known angles (within 60
    degrees): before training, the estimated angles of a pair differ by about anything (chance);
    after 30 steps their difference is the pair's rotation within a fraction of the rotation itself."""
    settings = _settings(photos, stage="orientation", steps=30, photos_per_step=8, keypoints_per_photo=2, lr=3e-3,
                         rotation=(60.0, 60.0), photometric=False, network_args={"normalize": False},
                         homography={"patch_ratio": 1.0, "perspective": 0.0, "scale_range": (1.0, 1.0),
                                     "max_angle_deg": 60.0, "allow_artifacts": True})
    fixed = training.draw_step(keypoint_photos, settings, 0)
    monkeypatch.setattr(training, "draw_step", lambda photos, settings, step: fixed)
    task = training.LIFTTask(settings, photos=keypoint_photos)
    rotations = torch.cat([group.rotation for group in fixed]).abs()
    before = task.angle_errors(fixed)
    for index in range(settings.steps):
        task.step(index)
    after = task.angle_errors(fixed)
    print(f"|rotation| {rotations.mean():.1f}, error before {before.mean():.1f}, after {after.mean():.1f}")
    assert rotations.mean() > 20.0
    assert after.mean() < 0.6 * before.mean()
    assert after.mean() < 0.75 * rotations.mean(), "better than answering 'no rotation'"


def test_detector_stage_learns_where_keypoints_are(photos, keypoint_photos, descriptor_run, tmp_path):
    run = tmp_path / "detector"
    settings = _settings(photos, stage="detector", init=str(descriptor_run / "weights.pt"))
    training.train_lift(settings, run, checkpoint_every=10, progress=False, photos=keypoint_photos)
    log = read_log(run / "log.csv")
    assert log["class"][-5:].mean() < 0.8 * log["class"][:5].mean(), log["class"]
    assert log["background_acc"][-5:].mean() > log["background_acc"][:5].mean() + 0.1, log["background_acc"]
    assert np.all(log["moved_px"] >= 0) and np.all(np.isfinite(log["pair"]))
    # only the detector moved; the file loads into the public class
    trained, start = torch.load(run / "weights.pt"), torch.load(descriptor_run / "weights.pt")
    assert not torch.equal(trained["detector.conv.weight"], start["detector.conv.weight"])
    assert all(torch.equal(trained[k], start[k]) for k in trained if not k.startswith("detector."))
    image = cv2.imread(str(photos / "0.png"))
    found, descriptors = cvdeep.LIFT_create(50, model="lift-cvdeep", weights=str(run / "weights.pt"),
                                            device="cpu").detectAndCompute(image, None)
    assert len(found) == 50 and descriptors.shape == (50, 128)


def test_the_input_statistics_come_from_the_photos(descriptor_run, keypoint_photos):
    weights = torch.load(descriptor_run / "weights.pt")
    assert float(weights["input_mean"]) == pytest.approx(keypoint_photos.mean)
    assert float(weights["descriptor.patch_std"]) == pytest.approx(keypoint_photos.std)
    network = LIFTNet()
    network.load_pretrained(weights)


def test_resume_after_a_stop_gives_the_uninterrupted_weights(photos, keypoint_photos, tmp_path, monkeypatch):
    settings = _settings(photos, steps=5, keypoints_per_photo=4)
    resume_matches_uninterrupted(
        monkeypatch, training,
        lambda out, **options: training.train_lift(settings, out, photos=keypoint_photos, **options), tmp_path)
    a, b = read_log(tmp_path / "whole" / "log.csv"), read_log(tmp_path / "stopped" / "log.csv")
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a if k != "seconds")


def test_cli_trains_a_stage(photos, tmp_path):
    from cvdeep.cli import main

    out = tmp_path / "cli"
    status = main(["train", "lift", "--stage", "descriptor", "--steps", "2", "--images", str(photos),
                   "--photos-per-step", "2", "--keypoints-per-photo", "4", "--mining-ratio", "1", "--out", str(out),
                   "--precision", "fp32", "--quiet", "--threads", "1"])
    assert status == 0 and len(read_log(out / "log.csv")["loss"]) == 2
    network = build_model("lift-cvdeep", weights=out / "weights.pt")
    assert isinstance(network, LIFTNet) and network.descriptor.normalize


def test_stages_against_the_official_descriptor(shared, photos, keypoint_photos, tmp_path):
    """``--descriptor official``: LIFT's released descriptor (from its file, frozen) and its pipeline's input
    statistics (mean_std.h5); the weights cvdeep writes never hold the official descriptor."""
    settings = _settings(photos, stage="orientation", descriptor="official", input_stats="official", steps=2,
                         keypoints_per_photo=3)
    summary = training.train_lift(settings, tmp_path / "hybrid", progress=False, photos=keypoint_photos)
    weights = torch.load(summary["weights"])
    assert not any(key.startswith("descriptor.") for key in weights)
    assert float(weights["input_mean"]) == pytest.approx(116.4368, abs=1e-3)
    assert summary["model"] == "lift-cvdeep-picc"
    detector = cvdeep.LIFT_create(20, model="lift-cvdeep-picc", weights=summary["weights"], device="cpu")
    found, descriptors = detector.detectAndCompute(cv2.imread(str(photos / "1.png")), None)
    assert len(found) == 20 and descriptors.shape == (20, 128)
    assert np.linalg.norm(descriptors, axis=1).min() > 1.5, "the official descriptor's raw output, not unit length"
