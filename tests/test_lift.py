"""LIFT (``cvdeep.nets.lift``): the official descriptor file, the conventions, the Feature2D contract.

The official descriptor (``../shared/weights/lift``) is read strictly and checked against an
independent NumPy implementation of the layers of the official Lasagne graph, and on a real
HPatches pair. The contract runs on a checkpoint saved here from a seeded initialisation; the last
test checks the packaged ``lift-cvdeep`` weights offline on a real image. Training:
tests/test_train_lift.py.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

import cvdeep
from cvdeep.models import build_model
from cvdeep.nets import lift
from cvdeep.nets.lift import (
    GHH,
    OFFICIAL_LAYERS,
    LIFTConfig,
    LIFTDescriptorNet,
    LIFTNet,
    SubtractiveNormalization,
    level_sizes,
    read_mean_std,
    read_official_descriptor,
)
from feature_checks import GRAF, check_angles_follow_a_turn, check_feature2d_contract, load_image, resized_pair

pytestmark = [pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def official(shared: Path) -> tuple[Path, Path]:
    folder = shared / "weights" / "lift"
    return folder / "new-CNN3-picc-iter-56k.h5", folder / "mean_std.h5"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LIFT checkpoint saved here: the seeded initialisation with input statistics set."""
    torch.manual_seed(0)
    network = LIFTNet()
    with torch.no_grad():
        network.input_mean.fill_(110.0)
        network.input_std.fill_(60.0)
    path = tmp_path_factory.mktemp("lift") / "lift.pt"
    torch.save(network.state_dict(), path)
    return path


# --- the official descriptor -------------------------------------------------------------------------


def test_official_descriptor_loads_strictly(official):
    cnn3, _ = official
    state = read_official_descriptor(cnn3)
    assert set(state) == set(LIFTDescriptorNet().state_dict())
    network = build_model("liftdesc-picc")  # strict: every key, every shape
    with h5py.File(cnn3) as handle:
        assert tuple(handle["layers"][()]) == OFFICIAL_LAYERS
        np.testing.assert_array_equal(network.conv2.weight.detach().numpy(), handle["l-5-weights"][()])
        np.testing.assert_array_equal(network.norm2.kernel.numpy(), handle["l-8-filter"][()])
    assert float(network.patch_mean) == pytest.approx(110.7539, abs=1e-4)
    assert float(network.patch_std) == pytest.approx(61.53689, abs=1e-4)
    assert network.normalize is False, "the official descriptor is returned raw, as released"


def test_a_file_of_another_layout_is_refused(official, tmp_path):
    cnn3, _ = official
    other = tmp_path / "other.h5"
    with h5py.File(cnn3) as source, h5py.File(other, "w") as target:
        for key in source:
            target[key] = source[key][()]
        del target["layers"]
        target["layers"] = np.array([1, 5, 3, 7, 1, 5, 4, 7, 1, 5, 4], np.int32)  # max pooling where L2 pooling was
    with pytest.raises(cvdeep.Error, match="layer types"):
        read_official_descriptor(other)
    with pytest.raises(cvdeep.Error, match="other.h5"):
        build_model("liftdesc-picc", weights=other)
    stats = read_mean_std(official[1])
    assert float(stats["input_mean"]) == pytest.approx(116.4368, abs=1e-3)
    with pytest.raises(cvdeep.Error, match="mean_x"):
        read_mean_std(cnn3)


def _reference_cnn3(patches: np.ndarray, cnn3: Path, mean_std: Path) -> np.ndarray:
    """The official Lasagne graph of descriptor_imported.py, layer by layer in NumPy (float64), from
    the file's own layer list: the input standardised with mean_std.h5, re-normalised with the
    file's patch statistics, then cross-correlations, tanh, L2 pooling and subtractive
    normalisation (kernel / sum, tiled over the channels and divided by their number, zero
    padding, divided by the kernel's mass inside the map)."""
    with h5py.File(cnn3) as handle, h5py.File(mean_std) as stats:
        file = {key: handle[key][()] for key in handle}
        mean_x, std_x = float(stats["mean_x"][()]), float(stats["std_x"][()])
    x = (patches.astype(np.float64) - mean_x) / std_x  # what the official pipeline feeds every network
    x = (x * std_x + mean_x - file["patch-mean"][0]) / file["patch-std"][0]  # the 'desc-re-normalize' layer
    x = x[:, None]
    for index, kind in enumerate(file["layers"], start=1):
        if kind == 1:
            weights, bias = file[f"l-{index}-weights"].astype(np.float64), file[f"l-{index}-bias"].astype(np.float64)
            k = weights.shape[-1]
            windows = sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, H', W', k, k)
            x = np.einsum("nchwij,ocij->nohw", windows, weights) + bias[None, :, None, None]
        elif kind == 5:
            x = np.tanh(x)
        elif kind == 4:
            k = int(file[f"l-{index}-kw"][0])
            n, c, h, w = x.shape
            x = np.sqrt((x[:, :, : h // k * k, : w // k * k] ** 2).reshape(n, c, h // k, k, w // k, k).sum(axis=(3, 5)))
        elif kind == 7:
            kernel = file[f"l-{index}-filter"].astype(np.float64)
            kernel = kernel / kernel.sum()
            pad = kernel.shape[0] // 2
            channels = x.shape[1]
            padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            windows = sliding_window_view(padded, kernel.shape, axis=(2, 3))
            mean = np.einsum("nchwij,ij->nhw", windows, kernel) / channels
            ones = np.pad(np.ones(x.shape[2:]), pad)
            coverage = np.einsum("hwij,ij->hw", sliding_window_view(ones, kernel.shape), kernel)
            x = x - (mean / coverage)[:, None]
    return x.reshape(len(x), -1)


def test_official_descriptor_matches_an_independent_reference(official, data_dir):
    image = load_image(data_dir, GRAF, (320, 256))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    keypoints = cv2.SIFT_create(6).detect(gray)[:6]
    network = build_model("liftdesc-picc")
    tensor = torch.from_numpy(gray).float()[None, None] / 255
    xy = torch.tensor([k.pt for k in keypoints])
    patches = lift.extract_patches(tensor, xy, torch.tensor([k.size for k in keypoints]),
                                   torch.tensor([k.angle for k in keypoints]), 64, lift.DESC_SCALE_FACTOR)
    with torch.inference_mode():
        ours = network.embed(patches).double().numpy()
    reference = _reference_cnn3(patches[:, 0].double().numpy() * 255.0, *official)
    assert ours.shape == reference.shape == (6, 128)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_official_descriptor_matches_real_views(shared, data_dir):
    """SIFT keypoints described by the official LIFT descriptor on an HPatches pair: as many correct
    mutual matches as SIFT's own descriptor (measured: 185 of 232 against SIFT's 173 of 220)."""
    first, second, truth = resized_pair(data_dir / "hpatches_subset/vbalnt_tfeat/imgs/v_churchill", 2, 0.5)
    results = {}
    features = (("lift", cvdeep.LIFTDesc_create(detector=cv2.SIFT_create(400))), ("sift", cv2.SIFT_create(400)))
    for name, feature in features:
        k1, d1 = feature.detectAndCompute(first, None)
        k2, d2 = feature.detectAndCompute(second, None)
        matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2)
        source = np.float32([k1[m.queryIdx].pt for m in matches])
        target = np.float32([k2[m.trainIdx].pt for m in matches])
        correct = np.linalg.norm(cv2.perspectiveTransform(source[:, None], truth)[:, 0] - target, axis=1) < 3
        results[name] = (int(correct.sum()), float(correct.mean()))
    print(results)
    assert results["lift"][0] >= 0.9 * results["sift"][0] and results["lift"][1] > 0.7


def test_the_hybrid_variant_takes_the_official_descriptor_from_its_file(official, tmp_path):
    torch.manual_seed(1)
    network = LIFTNet(normalize=False, official_descriptor=True)
    path = tmp_path / "hybrid.pt"
    torch.save({k: v for k, v in network.state_dict().items() if not k.startswith("descriptor.")}, path)
    detector = cvdeep.LIFT_create(50, model="lift-cvdeep-picc", weights=str(path), device="cpu")
    loaded = detector._load()
    official_state = read_official_descriptor(official[0])
    assert torch.equal(loaded.descriptor.conv1.weight, official_state["conv1.weight"])
    assert torch.equal(loaded.detector.conv.weight, network.detector.conv.weight)
    torch.save(network.state_dict(), tmp_path / "with_descriptor.pt")  # the official weights must not be copied
    with pytest.raises(cvdeep.Error, match="descriptor"):
        build_model("lift-cvdeep-picc", weights=tmp_path / "with_descriptor.pt")


# --- the pieces ----------------------------------------------------------------------------------------


def test_ghh_and_subtractive_normalisation_by_hand():
    # 2 units x 4 groups x 4 members: unit value = max g0 - max g1 + max g2 - max g3
    x = torch.arange(32.0).reshape(1, 32, 1, 1)
    x[0, 16:] = -x[0, 16:]
    out = GHH()(x)[0, :, 0, 0]
    expected_first = 3.0 - 7.0 + 11.0 - 15.0
    expected_second = -16.0 + 20.0 - 24.0 + 28.0
    torch.testing.assert_close(out, torch.tensor([expected_first, expected_second]))
    normalise = SubtractiveNormalization(5)
    constant = torch.full((1, 3, 9, 11), 2.5)
    torch.testing.assert_close(normalise(constant), torch.zeros_like(constant), atol=1e-6, rtol=0)  # border-corrected


def test_pyramid_levels_and_scale_space_nms(monkeypatch):
    sizes = level_sizes(LIFTConfig())
    assert len(sizes) == 16 and sizes[0] == 4.0 and sizes[-1] == pytest.approx(32.0)
    np.testing.assert_allclose(np.diff(np.log2(sizes)), 0.2)
    with pytest.raises(cvdeep.Error, match="max_size"):
        level_sizes(LIFTConfig(min_size=8.0, max_size=4.0))
    # two levels of the same grid: a maximum of the first level next to a larger one of the second is
    # suppressed (scale-space NMS); the second level's survives
    first = torch.full((1, 1, 40, 40), -1.0)
    second = first.clone()
    first[0, 0, 20, 20] = 5.0
    second[0, 0, 21, 19] = 6.0
    second[0, 0, 5, 30] = 1.0
    network = LIFTNet()
    levels = [{"scores": first, "size": 4.0, "ratio": (1.0, 1.0)}, {"scores": second, "size": 8.0, "ratio": (1.0, 1.0)}]
    monkeypatch.setattr(network, "score_levels", lambda image, valid, config: levels)
    valid = torch.ones((1, 1, 40, 40), dtype=torch.bool)
    found = network.detect_levels(torch.zeros((1, 1, 40, 40)), valid, LIFTConfig(detection_threshold=0.0))
    assert len(found) == 1 and found[0]["octaves"].tolist() == [1, 1]
    torch.testing.assert_close(found[0]["keypoints"].round(), torch.tensor([[19.0, 21.0], [30.0, 5.0]]))
    assert found[0]["sizes"].tolist() == [8.0, 8.0]


# --- conventions and the Feature2D ----------------------------------------------------------------------


def test_angles_and_sizes_follow_opencv(saved, data_dir):
    """cv2.SIFT's angles grow by 90 when the image turns 90 degrees clockwise (OpenCV's convention, angle
    clockwise on screen); LIFT's patches follow it: a keypoint described with angle a in the image and
    with a + 90 at its position in the turned image gives the same descriptor. KeyPoint.size is in
    pixels: the image and the keypoints scaled by 2 give the same descriptors too."""
    gray = cv2.cvtColor(load_image(data_dir, GRAF, (240, 192)), cv2.COLOR_BGR2GRAY)
    turned = cv2.rotate(gray, cv2.ROTATE_90_CLOCKWISE)
    height = gray.shape[0]
    sift = cv2.SIFT_create(100)
    keypoints = sift.detect(gray)
    turned_keypoints = sift.detect(turned)
    mapped = np.array([[height - 1 - k.pt[1], k.pt[0]] for k in keypoints])
    found = np.array([k.pt for k in turned_keypoints])
    pairs = [(i, int(np.argmin(np.linalg.norm(found - mapped[i], axis=1)))) for i in range(len(keypoints))]
    close = [(i, j) for i, j in pairs if np.linalg.norm(found[j] - mapped[i]) < 1.0
             and abs(turned_keypoints[j].size - keypoints[i].size) < 0.1]
    assert len(close) >= 20
    turns = [(turned_keypoints[j].angle - keypoints[i].angle) % 360 for i, j in close]
    assert np.median(turns) == pytest.approx(90.0, abs=0.5)

    describer = cvdeep.LIFT_create(model="lift-cvdeep", weights=str(saved), device="cpu")
    chosen = keypoints[:20]
    moved = [cv2.KeyPoint(float(height - 1 - k.pt[1]), float(k.pt[0]), k.size, (k.angle + 90.0) % 360, k.response)
             for k in chosen]
    _, upright = describer.compute(gray, chosen)
    _, rotated = describer.compute(turned, moved)
    assert np.min(np.sum(upright * rotated, axis=1)) > 0.99
    mirrored = [cv2.KeyPoint(k.pt[0], k.pt[1], k.size, (k.angle - 90.0) % 360, k.response) for k in moved]
    _, wrong = describer.compute(turned, mirrored)
    assert np.median(np.sum(upright * wrong, axis=1)) < 0.95, "the other sense of rotation must not match"

    doubled = cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    scaled = [cv2.KeyPoint(2 * k.pt[0] + 0.5, 2 * k.pt[1] + 0.5, 2 * k.size, k.angle, k.response) for k in chosen]
    _, larger = describer.compute(doubled, scaled)
    assert np.median(np.sum(upright * larger, axis=1)) > 0.98


def test_compute_orients_keypoints_given_without_an_angle(saved, data_dir):
    image = load_image(data_dir, GRAF, (240, 192))
    detector = cvdeep.LIFT_create(40, model="lift-cvdeep", weights=str(saved), device="cpu")
    keypoints, descriptors = detector.detectAndCompute(image, None)
    assert len(keypoints) == 40 and all(0.0 <= k.angle < 360.0 for k in keypoints)
    bare = [cv2.KeyPoint(k.pt[0], k.pt[1], k.size, -1, k.response, k.octave, 7) for k in keypoints]
    oriented, again = detector.compute(image, bare)
    np.testing.assert_allclose([k.angle for k in oriented], [k.angle for k in keypoints], atol=1e-3)
    assert [k.class_id for k in oriented] == [7] * 40
    assert np.min(np.sum(again * descriptors, axis=1)) > 0.9999
    kept, _ = detector.compute(image, keypoints[:3])
    assert [k.angle for k in kept] == [k.angle for k in keypoints[:3]], "given angles are used as they are"


def test_feature2d_contract_on_saved_weights(saved, data_dir):
    image = load_image(data_dir, GRAF, (320, 256))
    detector = cvdeep.LIFT_create(model="lift-cvdeep", weights=str(saved), device="cpu")
    check_feature2d_contract(detector, image, 128, gray_network=True)
    keypoints = detector.detect(image)
    sizes = {round(k.size, 2) for k in keypoints}
    assert min(sizes) >= 3.9 and max(sizes) <= 32.5 and len(sizes) > 3, sizes  # the pyramid's levels, in pixels
    assert all(0.0 <= k.angle < 360.0 for k in keypoints)
    detector.setParams(nfeatures=100, nms="soft", soft_nms_sigma=6.0)
    picked = detector.detect(image)
    assert len(picked) == 100 and np.all(np.diff([k.response for k in picked]) <= 0)


def test_shipped_weights_work_offline_and_their_angles_turn_with_the_image(monkeypatch, data_dir):
    """``LIFT_create()`` takes the packaged lift-cvdeep file (sha256 checked on load) offline; on a real image
    and its 90-degree turn, the correct mutual matches' KeyPoint.angle turns by 90 degrees (OpenCV's
    convention) and KeyPoint.size stays: the trained orientation estimator follows the image. (Measured when
    the weights shipped: 56 of 203 matches correct, median turn 89.1, sizes equal; a weak model, see its card.)"""
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    check_angles_follow_a_turn(cvdeep.LIFT_create(500, device="cpu"), load_image(data_dir, GRAF, (480, 360)),
                               "lift-cvdeep", 30, 10.0, 0.1)


def test_shipped_picc_weights_run_with_the_official_descriptor(monkeypatch, official, data_dir):
    """``LIFT_create(model="lift-cvdeep-picc")`` takes the packaged detector and orientation estimator (sha256
    checked on load) and LIFT's released descriptor from the user's file; the trained orientation turns with
    the image (measured when the weights shipped: 82 of 222 matches correct, median turn 90.6, sizes equal)."""
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    detector = cvdeep.LIFT_create(500, model="lift-cvdeep-picc", device="cpu")
    check_angles_follow_a_turn(detector, load_image(data_dir, GRAF, (480, 360)), "lift-cvdeep-picc", 50, 10.0, 0.1)
