"""TR and D2-Net's loss on one network (``cvdeep.nets.tr``, ``cvdeep.train.tr``).

The released weights do not exist yet (they are trained later), so the network is built with
``pretrained=False`` or trained here for a few steps on two synthetic textured images; the
Feature2D contract runs on weights saved by these tiny runs. Nothing here claims accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cvdeep
from cvdeep.models import build_model, get_model
from cvdeep.nets.tr import TRConfig, TRNet, valid_at
from cvdeep.train import tr as dense
from cvdeep.train.loop import read_log
from feature_checks import GRAF, check_feature2d_contract, load_image
from training_checks import resume_matches_uninterrupted

pytestmark = [pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning"),
              pytest.mark.usefixtures("one_thread")]

COLLAPSE_BOUND = 0.95
"""``desc_cos`` (mean cosine between descriptors of different locations) above this means collapse;
a collapsed map gives > 0.99 (D2-Net's loss at full warp strength from scratch reached 0.998)."""


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 128 x 160 gray images: blurred noise under random discs (texture at several scales)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for index in range(2):
        image = cv2.GaussianBlur(rng.random((128, 160)).astype(np.float32), (0, 0), 1.5)
        image = (image - image.min()) / (image.max() - image.min()) * 255
        for _ in range(12):
            centre = tuple(int(v) for v in rng.integers(0, 160, 2))
            cv2.circle(image, centre, int(rng.integers(3, 12)), float(rng.integers(0, 255)), -1)
        cv2.imwrite(str(folder / f"{index}.png"), image.astype(np.uint8))
    return folder


def _settings(loss: str, photos: Path, **changes: object) -> dense.TRTraining:
    """A tiny stationary task: 64 px crops, 2 pairs, a fixed warp strength of 0.3, fp32, eager."""
    values: dict[str, object] = {"loss": loss, "images": str(photos), "steps": 20, "batch_size": 2, "crop": 64,
                                 "max_side": 160, "warmup_steps": 0, "compile": False, "precision": "fp32",
                                 "min_correspondences": 32, "strength": (0.3, 0.3)}
    values.update(changes)
    return dense.TRTraining(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def runs(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 steps of each loss on the same data and seed."""
    out = {}
    for loss in ("d2", "tr"):
        folder = tmp_path_factory.mktemp(f"run-{loss}")
        dense.train_tr(_settings(loss, photos), folder, checkpoint_every=10, progress=False)
        out[loss] = folder
    return out


# --- the network and its declaration ------------------------------------------------------------


def test_one_network_two_variants():
    tr_family, tr_variant = get_model("tr-cvdeep")
    d2_family, d2_variant = get_model("d2-cvdeep")
    assert tr_family is d2_family and tr_family.public_name == "TR" and tr_family.network is TRNet
    for variant in (tr_variant, d2_variant):
        spec = variant.weights
        assert variant.trained_by_cvdeep and spec.packaged and spec.noncommercial
        assert spec.filename == f"{variant.name}.pt"
        assert spec.source == f"trained by cvdeep: docs/models/{variant.name}.md"
    first, second = build_model("tr-cvdeep", pretrained=False), build_model("d2-cvdeep", pretrained=False)
    assert first.state_dict().keys() == second.state_dict().keys()
    assert sum(p.numel() for p in first.parameters()) == 434_464  # the count the module docstring gives
    with torch.no_grad():
        raw = first(torch.rand(2, 1, 64, 96))
    assert raw.shape == (2, 128, 16, 24) and first.descriptor_size == 128
    assert (raw < 0).any(), "the raw map is signed: the ReLU belongs to detection, not to the descriptors"


def test_a_keypoint_counts_only_between_valid_pixels():
    valid = torch.zeros(1, 1, 6, 8, dtype=torch.bool)
    valid[..., :, :4] = True  # columns 0..3 valid
    points = torch.tensor([[3.0, 2.0], [2.6, 2.5], [3.2, 2.0], [-0.1, 1.0], [0.0, 5.0], [1.0, 5.2]])
    assert valid_at(valid, points).tolist() == [True, True, False, False, True, False]


def test_receptive_field_is_40_pixels():
    """A large change of one input pixel changes map cell (12, 12) (image pixel 49.5) exactly when the
    pixel lies within 20 px of it: columns 30..69."""
    network = build_model("tr-cvdeep", pretrained=False)
    image = torch.rand(1, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = network(image)[0, :, 12, 12]
        for column, reaches in ((29, False), (30, True), (69, True), (70, False)):
            changed = image.clone()
            changed[..., 49, column] += 50.0
            assert (not torch.equal(network(changed)[0, :, 12, 12], reference)) == reaches, column


@pytest.mark.parametrize("upsampled, stride", [(False, 4), (True, 2)])
def test_dense_map_cells_sit_at_their_documented_pixels(upsampled, stride):
    """With the encoder replaced by a 4x4 average pool, y of a horizontal ramp I(x) = x holds the
    (standardised) pixel x of each cell's centre. The upsampled map sums y of the doubled image and
    y of the image resized to it: both must put cell q at pixel 2q + 0.5, giving twice that value; a
    half-cell misalignment of either (align_corners, the pixel convention) changes it by >= 1 px."""
    network = build_model("tr-cvdeep", pretrained=False).eval()
    network.encoder = torch.nn.AvgPool2d(4)
    width = 96
    ramp = torch.arange(width, dtype=torch.float32).expand(1, 1, 64, width).contiguous()
    with torch.no_grad():
        raw, got_stride = network.dense_map(ramp, TRConfig(upsampled=upsampled))
    assert got_stride == stride and raw.shape[-1] == width // stride
    cells = torch.arange(raw.shape[-1], dtype=torch.float32)
    centre = (cells * stride + (stride - 1) / 2 - 0.5) / 0.25  # the network standardises (I - 0.5) / 0.25
    expected = centre * (2 if upsampled else 1)
    interior = slice(2, -2)  # bilinear resizes clamp at the borders
    torch.testing.assert_close(raw[0, 0, 10, interior], expected[interior])


def test_upsampled_extraction_describes_where_it_detects(data_dir):
    """With and without ``upsampled``, ``describe`` at the extracted keypoints gives the descriptors
    ``extract`` gave (both read ``dense_map``), and the two grids give different keypoints (the
    packaged weights: a random network may find fewer than 300 stride-4 detections)."""
    image = load_image(data_dir, GRAF, (480, 360))
    gray = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).float()[None, None] / 255
    network = build_model("tr-cvdeep").eval()
    valid = torch.ones_like(gray, dtype=torch.bool)
    found = {}
    with torch.no_grad():
        for upsampled in (True, False):
            config = TRConfig(detection="d2", upsampled=upsampled, nfeatures=300)
            features = network.extract(gray, valid, config)
            described = network.describe(gray, features["keypoints"], config=config)
            torch.testing.assert_close(described, features["descriptors"], atol=1e-5, rtol=0)
            found[upsampled] = features["keypoints"]
    assert len(found[True]) == len(found[False]) == 300
    assert not torch.equal(found[True], found[False])


# --- geometry and metrics of the training task -------------------------------------------------


def test_correspondences_follow_the_pixel_centre_convention():
    """A translation by (8, 4) px moves cell (x, y) (pixel 4p + 1.5) to pixel 4p + 1.5 + (8, 4), i.e.
    two cells right and one down; 14 x 15 cells of the 16 x 16 map land inside the 64 px view."""
    H = torch.tensor([[1.0, 0, 8], [0, 1, 4], [0, 0, 1]], dtype=torch.float64)
    cells, pixels = dense.correspondences(H, (16, 16), 64)
    assert len(cells) == 14 * 15
    torch.testing.assert_close(pixels, cells.float() * 4 + 1.5 + torch.tensor([8.0, 4.0]))
    maps = torch.randn(5, 16, 16)
    sampled = dense.sample_at(maps, pixels)
    torch.testing.assert_close(sampled, maps[:, cells[:, 1] + 1, cells[:, 0] + 2].T)


def test_tr_batch_loss_is_zero_for_a_perfect_prediction_and_grows_with_error():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(2, 8, 16, 16, generator=generator).repeat(2, 1, 1, 1)  # views A (2) then B (2): B = A
    identity = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    scores = torch.rand(4, 16, 16, generator=generator) + 0.1
    loss, stats = dense.tr_batch_loss(target, target, scores, identity, 64, lam=1.0, alpha=1.0)
    assert loss is not None and abs(float(loss)) < 1e-6 and stats["pred"] < 1e-6 and stats["label"] > 0.999999
    assert stats["correspondences"] == 256
    noisy = target + 0.5 * torch.randn(4, 8, 16, 16, generator=generator)
    worse, _ = dense.tr_batch_loss(noisy, target, scores, identity, 64, lam=1.0, alpha=1.0)
    assert float(worse) > 1e-4
    nothing, _ = dense.tr_batch_loss(target, target, scores, identity, 64, 1.0, 1.0, min_correspondences=257)
    assert nothing is None
    # A pair whose detection scores vanish at every correspondence is left out (a real run met one at step 484).
    dead = scores.clone()
    dead[0] = 0.0
    kept, _ = dense.tr_batch_loss(noisy, target, dead, identity, 64, lam=1.0, alpha=1.0)
    second_only, _ = dense.tr_batch_loss(noisy[[1, 3]], target[[1, 3]], scores[[1, 3]], identity[1:], 64, 1.0, 1.0)
    assert kept is not None and second_only is not None
    torch.testing.assert_close(kept, second_only)
    dead[1] = 0.0
    assert dense.tr_batch_loss(noisy, target, dead, identity, 64, lam=1.0, alpha=1.0)[0] is None


def test_collapse_and_matching_indicators():
    constant = torch.ones(2, 16, 8, 8)
    assert dense.descriptor_similarity(constant, every=1) == pytest.approx(1.0)
    distinct = torch.randn(1, 256, 8, 8, generator=torch.Generator().manual_seed(1)).repeat(2, 1, 1, 1)
    assert abs(dense.descriptor_similarity(distinct, every=1)) < 0.05
    identity = torch.eye(3, dtype=torch.float64)[None]  # views A and B are the same map
    assert dense.nearest_neighbour_accuracy(distinct, identity, 32) == 1.0
    assert dense.nearest_neighbour_accuracy(constant, identity, 32) < 0.1  # ties: every query finds cell 0


def test_settings_are_checked():
    for bad in ({"loss": "byol"}, {"crop": 66}, {"strength": (0.0, 1.5)}, {"homography": {"warp": 1}},
                {"precision": "fp16"}, {"max_side": 32}, {"soft_lambda": 0.0}):
        with pytest.raises(cvdeep.Error, match=next(iter(bad))):
            dense.TRTraining(**bad)  # type: ignore[arg-type]
    weak = dense.TRTraining().homography_config(0.0)
    assert (weak.perspective, weak.max_angle_deg, weak.scale_range, weak.patch_ratio) == (0.0, 0.0, (1.0, 1.0), 1.0)


# --- learning ------------------------------------------------------------------------------------


def test_d2_loss_learns_a_tiny_task(runs):
    log = read_log(runs["d2"] / "log.csv")
    assert len(log["loss"]) == 20 and np.all(log["strength"] == 0.3)
    assert log["loss"][-5:].mean() < 0.85 * log["loss"][:5].mean(), log["loss"]
    assert log["nn_acc"][-5:].mean() > log["nn_acc"][:5].mean() + 0.1, log["nn_acc"]
    assert log["desc_cos"][-5:].max() < 0.3, log["desc_cos"]  # D2-Net's negatives spread the descriptors


def test_tr_learns_a_tiny_task_without_collapsing(runs):
    log = read_log(runs["tr"] / "log.csv")
    assert len(log["pred"]) == 20
    # the weighted prediction loss sum_c w_c (1 - cos) falls; the logged loss (divided by |C|, with soft labels) too
    assert log["pred"][-5:].mean() < 0.7 * log["pred"][:5].mean(), log["pred"]
    assert log["loss"][-5:].mean() < 0.5 * log["loss"][:5].mean(), log["loss"]
    assert log["desc_cos"].max() < COLLAPSE_BOUND, log["desc_cos"]
    # soft labels start hard (alpha 0) and soften; tau follows BYOL's schedule from 0.996
    assert log["label"][0] == 1.0 and np.all(log["label"] <= 1.0) and log["label"][-1] < 1.0
    assert log["tau"][0] == pytest.approx(0.996) and np.all(np.diff(log["tau"]) >= 0)


def test_the_ema_target_is_never_trained_by_gradients(photos):
    task = dense.DenseTraining(_settings("tr", photos, tau_base=0.9))
    before = {k: v.clone() for k, v in task.target.state_dict().items()}
    trained = {id(p) for group in task.optimizer.param_groups for p in group["params"]}
    assert not trained & {id(p) for p in task.target.parameters()}
    assert all(not p.requires_grad for p in task.target.parameters())
    task.step(0)
    tau = task.curriculum.tau_at(0)
    online = dict(task.online.named_parameters())
    for name, parameter in task.target.named_parameters():
        assert parameter.grad is None
        expected = tau * before[name] + (1 - tau) * online[name].detach()
        torch.testing.assert_close(parameter.detach(), expected, rtol=0, atol=1e-6)
    # with tau = 1 the EMA is the identity: the target's parameters must not move at all
    frozen = dense.DenseTraining(_settings("tr", photos, tau_base=1.0))
    start = {k: v.clone() for k, v in frozen.target.named_parameters()}
    online_start = {k: v.clone() for k, v in frozen.online.named_parameters()}
    for index in range(2):
        frozen.step(index)
    assert all(torch.equal(p, start[k]) for k, p in frozen.target.named_parameters())
    assert not all(torch.equal(p, online_start[k]) for k, p in frozen.online.named_parameters())


@pytest.mark.parametrize("loss", ["tr", "d2"])
def test_resume_after_a_stop_gives_the_uninterrupted_weights(photos, tmp_path, monkeypatch, loss):
    settings = _settings(loss, photos, steps=5)
    resume_matches_uninterrupted(monkeypatch, dense, lambda out, **options: dense.train_tr(settings, out, **options),
                                 tmp_path)
    full = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["state"]
    again = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["state"]
    for part in full:  # target, projector, predictor and optimizer states too
        if part in ("optimizer", "scheduler"):
            continue
        assert all(torch.equal(full[part][k], again[part][k]) for k in full[part]), part
    a, b = read_log(tmp_path / "whole" / "log.csv"), read_log(tmp_path / "stopped" / "log.csv")
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a if k != "seconds")


# --- the Feature2D ---------------------------------------------------------------------------------


def test_feature2d_contract_on_trained_weights(runs, data_dir):
    image = load_image(data_dir, GRAF, (480, 360))
    weights = str(runs["tr"] / "weights.pt")
    detector = cvdeep.TR_create(model="tr-cvdeep", weights=weights, device="cpu")
    assert detector.descriptorSize() == 128
    check_feature2d_contract(detector, image, 128, gray_network=True)
    # keypoints are sub-pixel, 12 px (3 x 3 cells), without orientation
    keypoints = detector.detect(image)
    assert {k.size for k in keypoints} == {12.0} and {k.angle for k in keypoints} == {-1.0}
    xy = np.array([k.pt for k in keypoints])
    assert np.mean(xy != np.round(xy)) > 0.5
    # Translation by a whole number of cells (16 px = 4 cells) moves every interior keypoint by exactly 16 px,
    # up to the float rounding of the sub-pixel fit (feature_checks.shifted_keypoints_agree wants bit-equal
    # positions, which holds for pixel-grid detectors only); 48 px keep the 40 px receptive field off the edge.
    shifted = np.array([k.pt for k in detector.detect(image[16:, 16:])]) + 16
    interior = xy[(xy >= 16 + 48).all(axis=1) & (xy[:, 0] < 480 - 48) & (xy[:, 1] < 360 - 48)]
    distance = np.abs(interior[:, None] - shifted[None]).max(axis=2).min(axis=1)
    assert len(interior) > 100 and np.mean(distance < 1e-3) >= 0.99
    # soft-NMS through the common vocabulary
    detector.setParams(nfeatures=200, nms="soft", soft_nms_sigma=8.0)
    picked = detector.detect(image)
    assert len(picked) == 200 and np.all(np.diff([k.response for k in picked]) <= 0)
    # the D2-trained file loads into the other variant of the same class
    other = cvdeep.TR_create(300, model="d2-cvdeep", weights=str(runs["d2"] / "weights.pt"), device="cpu")
    found, descriptors = other.detectAndCompute(image, None)
    assert len(found) == 300 and descriptors.shape == (300, 128)


def test_shipped_weights_work_offline_out_of_the_box(monkeypatch, data_dir):
    """``TR_create()`` takes the packaged tr-cvdeep file (sha256 checked on load), ``model="d2-cvdeep"`` the
    D2-trained one; both detect and describe a real image offline, and their descriptors match it to a
    shifted copy of itself."""
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    image = load_image(data_dir, GRAF, (480, 360))
    for feature in (cvdeep.TR_create(500, device="cpu"), cvdeep.TR_create(500, model="d2-cvdeep", device="cpu")):
        keypoints, descriptors = feature.detectAndCompute(image, None)
        assert len(keypoints) == 500 and descriptors.shape == (500, 128)
        moved, moved_descriptors = feature.detectAndCompute(image[8:, 8:], None)
        matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(descriptors, moved_descriptors)
        error = [np.hypot(*np.subtract(keypoints[m.queryIdx].pt, np.add(moved[m.trainIdx].pt, 8))) for m in matches]
        assert np.mean(np.array(error) < 3.0) > 0.5, repr(feature)
    assert "model='tr-cvdeep'" in repr(cvdeep.TR_create(device="cpu"))


def test_cli_trains_and_exports(photos, tmp_path):
    from cvdeep.cli import main

    out = tmp_path / "cli"
    status = main(["train", "tr", "--loss", "d2", "--steps", "2", "--crop", "64", "--batch-size", "2", "--images",
                   str(photos), "--out", str(out), "--no-compile", "--precision", "fp32", "--quiet", "--threads", "1",
                   "--strength", "0.3", "0.3", "--max-side", "128"])
    assert status == 0 and (out / "weights.pt").is_file() and len(read_log(out / "log.csv")["loss"]) == 2
    assert json.loads((out / "config.json").read_text())["max_side"] == 128
    network = build_model("d2-cvdeep", weights=out / "weights.pt")
    image = torch.from_numpy(cv2.imread(str(photos / "0.png"), cv2.IMREAD_GRAYSCALE)).float()[None, None] / 255
    features = network.extract(image, torch.ones_like(image, dtype=torch.bool))
    assert len(features["keypoints"]) > 0
    torch.testing.assert_close(features["descriptors"].norm(dim=1), torch.ones(len(features["keypoints"])))
    described = network.describe(image, features["keypoints"][:1])
    assert F.cosine_similarity(features["descriptors"][:1], described).item() > 0.9999
