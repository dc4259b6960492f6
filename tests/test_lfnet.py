"""LF-Net (``cvdeep.nets.lfnet``, ``cvdeep.train.lfnet``): the score map, the differentiable sampler,
the two-branch training and the Feature2D contract.

The contract runs on a checkpoint saved here from a seeded initialisation and the training on a tiny
synthetic task; the last test checks the packaged ``lfnet-cvdeep`` weights offline on a real image.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.models import build_model
from cvdeep.nets.lfnet import (
    LFNet,
    LFNetConfig,
    content_weights,
    instance_normalise,
    scale_space_nms,
    soft_scale_selection,
)
from cvdeep.train import lfnet as training
from cvdeep.train.tr import PhotoPairs
from feature_checks import GRAF, check_angles_follow_a_turn, check_feature2d_contract, load_image
from training_checks import write_wedge_photos


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wedge_photos(tmp_path_factory.mktemp("photos"))


MILD = {"patch_ratio": 0.9, "perspective": 0.05, "scale_range": (0.9, 1.1), "max_angle_deg": 30.0,
        "allow_artifacts": True}


def _settings(photos: Path, **changes: object) -> training.LFNetTraining:
    """A tiny task: 2 pairs of 96 px crops, mild warps, no photometric change, fp32."""
    values: dict[str, object] = {"images": str(photos), "steps": 20, "batch_size": 2, "crop": 96, "max_side": 240,
                                 "top_k": 32, "warmup_steps": 0, "precision": "fp32", "photometric": False,
                                 "homography": MILD}
    values.update(changes)
    return training.LFNetTraining(**values)  # type: ignore[arg-type]


def _log(run: Path) -> dict[str, np.ndarray]:
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


@pytest.fixture(scope="module")
def pairs(photos: Path) -> PhotoPairs:
    return PhotoPairs(photos, 96, 240)


@pytest.fixture(scope="module")
def run(photos, pairs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lfnet")
    training.train_lfnet(_settings(photos), folder, checkpoint_every=10, progress=False, pairs=pairs)
    return folder


# --- the network ------------------------------------------------------------------------------------------


def test_scale_space_nms_and_scale_selection_by_hand():
    logits = torch.zeros((1, 3, 21, 21))
    logits[0, 1, 10, 10] = 2.0  # one peak at the middle scale
    probabilities = scale_space_nms(logits, window=15, strength=3.0)
    # at the peak: exp(0) over (1 + (15 * 15 * 3 - 1) exp(-6))
    expected = 1.0 / (1.0 + (15 * 15 * 3 - 1) * math.exp(-6.0))
    assert float(probabilities[0, 1, 10, 10]) == pytest.approx(expected, rel=1e-4)
    assert float(probabilities.max()) == float(probabilities[0, 1, 10, 10])
    score, scale = soft_scale_selection(probabilities, torch.tensor([2.0, 1.0, 0.5]))
    assert float(scale[0, 10, 10]) == pytest.approx(1.0, abs=1e-3), "the soft argmax picks the peak's scale"
    assert float(score[0, 10, 10]) == pytest.approx(expected, rel=1e-3)


def test_maps_sizes_and_angles():
    torch.manual_seed(0)
    network = LFNet().eval()
    maps = network(torch.rand((1, 1, 64, 80)))
    assert maps["logits"].shape == (1, 5, 64, 80) and maps["score"].shape == (1, 64, 80)
    border = network.detector.border
    assert border == 16 and float(maps["score"][0, :border].detach().abs().max()) == 0.0
    assert float(maps["scale"].min()) >= 2**-0.5 - 1e-5 and float(maps["scale"].max()) <= 2**0.5 + 1e-5
    torch.testing.assert_close(maps["orientation"].norm(dim=1), torch.ones((1, 64, 80)))
    # the orientation starts at (cos, sin) = (1, 0): angle 0; KeyPoint.size is 32 s / 6 (patch side 6 x size)
    assert float(LFNet.angles_of(maps["orientation"][0, :, 30, 30][None])) == 0.0
    torch.testing.assert_close(LFNet.angles_of(torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])),
                               torch.tensor([90.0, 180.0, 270.0]))
    assert float(LFNet.sizes_of(torch.tensor(1.5))) == pytest.approx(8.0)


def _varied_network() -> LFNet:
    """A seeded LF-Net in eval mode with its BatchNorms and orientation conv moved off their initial
    values, so that F, the scale levels and the angles all vary over an image."""
    torch.manual_seed(0)
    network = LFNet().eval()
    with torch.no_grad():
        for module in network.detector.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.1)
        network.detector.ori_conv.weight.normal_(0.0, 0.1)
    return network


def test_row_bands_give_the_numbers_of_one_band_and_of_forward(data_dir):
    """``extract`` runs over row bands (``detection_maps``): bands of 1, 8 and 37 rows give the keypoints,
    scores, sizes, angles and descriptors of one band bit for bit, and the maps equal the whole-map
    ``forward``'s to float rounding (its resizes run rows first); training mode is ``forward`` itself."""
    network = _varied_network()
    gray = cv2.cvtColor(load_image(data_dir, GRAF)[100:303, 200:501], cv2.COLOR_BGR2GRAY)
    image = torch.from_numpy(gray).float()[None, None] / 255.0
    valid = torch.ones_like(image, dtype=torch.bool)
    with torch.inference_mode():
        whole, banded = network(image), network.detection_maps(image)
        for key in ("score", "scale"):
            torch.testing.assert_close(banded[key], whole[key], atol=1e-5, rtol=0)
        for key in ("image", "orientation"):
            assert torch.equal(banded[key], whole[key]), key
        results = []
        for rows in (image.shape[-2], 1, 8, 37):
            network.band_pixels = rows * image.shape[-1]
            results.append(network.extract(image, valid, LFNetConfig()))
    one = results[0]
    assert len(one["keypoints"]) == 500 and float(one["angles"].std()) > 1.0
    for result in results[1:]:
        assert all(torch.equal(one[key], result[key]) for key in one)
    network.train()
    assert network.detection_maps(image).keys() == whole.keys()


def test_patches_are_differentiable_in_position_size_and_angle():
    """Training cuts patches where inference does, and the detector learns through the cut: the
    gradient of a patch with respect to position, size and angle matches finite differences."""
    network = LFNet().double()
    image = torch.from_numpy(cv2.GaussianBlur(np.random.default_rng(0).random((48, 48)), (0, 0), 2.0))[None, None]
    xy = torch.tensor([[23.3, 24.6]], dtype=torch.float64, requires_grad=True)
    size = torch.tensor([5.0], dtype=torch.float64, requires_grad=True)
    angle = torch.tensor([30.0], dtype=torch.float64, requires_grad=True)
    weights = torch.from_numpy(np.random.default_rng(1).random((1, 1, 32, 32)))

    def value(xy: torch.Tensor, size: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        return (network.patches(image, xy, size, angle) * weights).sum()

    grads = torch.autograd.grad(value(xy, size, angle), (xy, size, angle))
    step = 1e-5
    for index, (tensor, grad) in enumerate(zip((xy, size, angle), grads)):
        for position in range(tensor.numel()):
            moved = [t.detach().clone() for t in (xy, size, angle)]
            moved[index].view(-1)[position] += step
            up = value(*moved)
            moved[index].view(-1)[position] -= 2 * step
            down = value(*moved)
            assert float(grad.view(-1)[position]) == pytest.approx(float((up - down) / (2 * step)), rel=1e-3, abs=1e-6)


# --- the training -----------------------------------------------------------------------------------------


def test_view_geometry_of_a_rotation():
    """A homography turning the view by 30 degrees clockwise about its centre: the local rotation is 30
    degrees everywhere, the local scale 1, and only pixels landing inside the other view are seen."""
    size, turn = 64, math.radians(30.0)
    centre = (size - 1) / 2
    rotation = np.array([[math.cos(turn), -math.sin(turn), 0.0], [math.sin(turn), math.cos(turn), 0.0], [0, 0, 1]])
    shift = np.array([[1.0, 0.0, centre], [0.0, 1.0, centre], [0, 0, 1]])
    H = shift @ rotation @ np.linalg.inv(shift)
    seen, local_rotation, scale = training.view_geometry(H, size, np.ones((size, size), dtype=bool))
    torch.testing.assert_close(local_rotation, torch.full((size, size), 30.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(scale, torch.ones((size, size)), atol=1e-5, rtol=0)
    assert bool(seen[32, 32]) and not bool(seen[0, 0]) and 0.6 < float(seen.float().mean()) < 0.95
    vectors = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    turned = training.rotate_vectors(vectors, torch.full((1, 1, 1), 90.0))
    torch.testing.assert_close(turned[0, :, 0, 0], torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)


def test_branch_j_only_supervises(photos, pairs):
    """Every target of the dense losses is built from the other view's maps without gradient, and the
    identity warp makes the orientation and scale losses vanish (a view supervised by itself)."""
    task = training.LFNetTask(_settings(photos), pairs=pairs)
    batch = training.draw_pairs(pairs, task.settings, 0)
    maps = task._maps(torch.cat([batch.first, batch.second]))
    losses, targets, seen = task.dense_losses(maps, batch)
    assert all(not target.requires_grad for target in targets.values())
    assert all(loss.requires_grad for loss in losses.values())
    identity = training.PairBatch(batch.first, batch.first.clone(), torch.eye(3, dtype=torch.float64).repeat(2, 1, 1),
                                  torch.ones_like(batch.second_valid))
    maps = task._maps(torch.cat([identity.first, identity.second]))
    same, _, seen = task.dense_losses(maps, identity)
    assert bool(seen.all())
    assert float(same["ori"]) < 1e-8 and float(same["scale"]) < 1e-8


def test_training_learns_a_tiny_task(run):
    log = _log(run)
    assert len(log["loss"]) == 20
    assert log["triplet"][-5:].mean() < 0.6 * log["triplet"][:5].mean(), log["triplet"]
    assert log["match_acc"][-5:].mean() > log["match_acc"][:5].mean() + 0.05, log["match_acc"]
    assert np.all(log["keypoints"] > 16)


def test_resume_after_a_stop_gives_the_uninterrupted_weights(photos, pairs, tmp_path, monkeypatch):
    settings = _settings(photos, steps=4)
    whole = training.train_lfnet(settings, tmp_path / "whole", checkpoint_every=2, progress=False, pairs=pairs)

    class Killed(training.Trainer):
        def run(self, step_fn):  # the process dies during step index 3 (checkpoint at step 2)
            def dying(index):
                if index == 3:
                    raise KeyboardInterrupt
                return step_fn(index)
            return super().run(dying)

    monkeypatch.setattr(training, "Trainer", Killed)
    with pytest.raises(KeyboardInterrupt):
        training.train_lfnet(settings, tmp_path / "stopped", checkpoint_every=2, progress=False, pairs=pairs)
    monkeypatch.setattr(training, "Trainer", Killed.__mro__[1])
    resumed = training.train_lfnet(settings, tmp_path / "stopped", resume=True, checkpoint_every=2, progress=False,
                                   pairs=pairs)
    first, second = torch.load(whole["weights"]), torch.load(resumed["weights"])
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    a, b = _log(tmp_path / "whole"), _log(tmp_path / "stopped")
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a if k != "seconds")


def test_settings_are_checked():
    for bad in ({"crop": 32}, {"top_k": 1}, {"precision": "fp16"}, {"homography": {"warp": 1}}, {"margin": 0.0}):
        with pytest.raises(cvdeep.Error, match=next(iter(bad))):
            training.LFNetTraining(**bad)  # type: ignore[arg-type]
    assert training.pickup_schedule(0) == 64 and training.pickup_schedule(10**6) == 5


# --- the Feature2D ----------------------------------------------------------------------------------------


def test_feature2d_contract_and_conventions(run, data_dir):
    image = load_image(data_dir, GRAF, (320, 256))
    detector = cvdeep.LFNet_create(model="lfnet-cvdeep", weights=str(run / "weights.pt"), device="cpu")
    check_feature2d_contract(detector, image, 128, gray_network=True)
    keypoints = detector.detect(image)
    sizes = np.array([k.size for k in keypoints])
    assert sizes.min() >= 32 / 6 * 2**-0.5 - 1e-3 and sizes.max() <= 32 / 6 * 2**0.5 + 1e-3
    assert all(0.0 <= k.angle < 360.0 for k in keypoints)
    # KeyPoint.angle in OpenCV's sense (cv2.SIFT's angles grow by 90 on an image turned 90 degrees
    # clockwise; tests/test_lift.py checks that): angle a in the image = a + 90 in the turned image
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    turned = cv2.rotate(gray, cv2.ROTATE_90_CLOCKWISE)
    chosen = keypoints[:30]
    height = gray.shape[0]
    moved = [cv2.KeyPoint(float(height - 1 - k.pt[1]), float(k.pt[0]), k.size, (k.angle + 90.0) % 360, k.response)
             for k in chosen]
    _, upright = detector.compute(gray, chosen)
    _, rotated = detector.compute(turned, moved)
    assert np.min(np.sum(upright * rotated, axis=1)) > 0.999
    # the weights load into the registry's network and describe as the class does
    network = build_model("lfnet-cvdeep", weights=run / "weights.pt")
    assert isinstance(network, LFNet) and network.descriptor_size == 128
    detector.setParams(nfeatures=100, nms="soft", soft_nms_sigma=4.0)
    picked = detector.detect(image)
    assert len(picked) == 100 and np.all(np.diff([k.response for k in picked]) <= 0)
    assert LFNetConfig().nfeatures == 500


def test_cli_trains(photos, tmp_path):
    from cvdeep.cli import main

    out = tmp_path / "cli"
    status = main(["train", "lfnet", "--steps", "2", "--crop", "96", "--top-k", "16", "--images", str(photos),
                   "--out", str(out), "--precision", "fp32", "--quiet", "--threads", "1"])
    assert status == 0 and (out / "weights.pt").is_file() and len(_log(out)["loss"]) == 2


def test_homographies_of_the_pairs_map_view_i_onto_view_j(photos, pairs):
    """View j shows view i's content where H sends it (checked on the drawn pair, pixel by pixel)."""
    settings = _settings(photos, homography={**MILD, "max_angle_deg": 20.0})
    batch = training.draw_pairs(pairs, settings, 5)
    first, second, H = batch.first[0, 0].numpy(), batch.second[0, 0].numpy(), batch.homographies[0].numpy()
    warped = cv2.warpPerspective(first, H, (96, 96), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones_like(first), H, (96, 96), flags=cv2.INTER_NEAREST) > 0
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert inside.sum() > 2000
    assert float(np.abs(warped - second)[inside].mean()) < 0.01


def test_shipped_weights_work_offline_and_their_angles_turn_with_the_image(monkeypatch, data_dir):
    """``LFNet_create()`` takes the packaged lfnet-cvdeep file (sha256 checked on load) offline; on a real
    image and its 90-degree turn, most mutual matches are correct and their KeyPoint.angle turns by 90
    degrees (OpenCV's convention) while KeyPoint.size stays: the trained orientation and scale follow the
    image (measured when the weights shipped: 369 of 390 matches correct, median turn 90.2, sizes equal)."""
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    found = check_angles_follow_a_turn(cvdeep.LFNet_create(500, device="cpu"), load_image(data_dir, GRAF, (480, 360)),
                                       "lfnet-cvdeep", 250, 5.0, 0.05)
    assert found.correct_ratio > 0.8


def test_normalisation_leaves_out_the_canvas():
    """The statistics of the input and of each score level leave out the canvas (flat runs from the image edge,
    grown by 2 px): an image pasted on a black canvas is normalised as the image alone; a flat block inside
    the picture (JPEG, a highlight) still counts; a uniform image uses every pixel."""
    rng = np.random.default_rng(3)
    image = rng.random((40, 50)).astype(np.float32)
    image[10:20, 10:30] = 0.0  # flat inside the picture: content
    canvas = np.zeros((80, 90), np.float32)
    canvas[20:60, 20:70] = image
    weights = content_weights(torch.from_numpy(canvas)[None, None])[0, 0].numpy()
    inside = np.zeros_like(canvas, bool)
    inside[20:60, 20:70] = True  # the picture: canvas pixels within 2 px of it are not flat, the growth takes them
    assert np.array_equal(weights == 0, ~inside)
    alone = instance_normalise(torch.from_numpy(image)[None, None])[0, 0]
    pasted = instance_normalise(torch.from_numpy(canvas)[None, None], torch.from_numpy(weights)[None, None])
    torch.testing.assert_close(pasted[0, 0, 20:60, 20:70], alone, atol=1e-4, rtol=0.0)
    uniform = torch.full((1, 1, 8, 8), 0.5)
    assert torch.equal(instance_normalise(uniform, content_weights(uniform)), instance_normalise(uniform))


def test_shipped_weights_match_an_image_pasted_on_a_black_canvas(monkeypatch, data_dir):
    """A letterboxed or padded image describes as the image: graf pasted on a black canvas twice its area
    against graf itself keeps most mutual matches where they belong (366 of 375; before the canvas left the
    statistics: 8 of 112)."""
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    detector = cvdeep.LFNet_create(500, device="cpu")
    image = load_image(data_dir, GRAF, (480, 360))
    canvas = np.zeros((510, 680, 3), np.uint8)
    canvas[75:435, 100:580] = image
    first, first_descriptors = detector.detectAndCompute(image, None)
    second, second_descriptors = detector.detectAndCompute(canvas, None)
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(first_descriptors, second_descriptors)
    offset = np.array([100.0, 75.0])
    correct = [m for m in matches
               if np.hypot(*(np.array(second[m.trainIdx].pt) - np.array(first[m.queryIdx].pt) - offset)) < 3.0]
    print(len(correct), len(matches))
    assert len(correct) > 0.8 * len(matches) and len(correct) > 250
