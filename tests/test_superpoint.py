"""SuperPoint: official checkpoint layouts load strictly; post-processing checked on analytic inputs.

The official weights are not reachable here, so these tests claim nothing about accuracy: the
checkpoints are built with exactly the official key sets and shapes (written out below from
magicleap/SuperGluePretrainedNetwork models/superpoint.py and rpautrat/SuperPoint
superpoint_pytorch.py) and hold weights chosen so that the correct keypoints are known.
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.models import build_model
from cvdeep.nets.superpoint import SuperPointConfig, SuperPointMagicLeap, cell_logits_to_scores
from cvdeep.weights import NonCommercialWeightsWarning


def magicleap_keys() -> dict[str, tuple[int, ...]]:
    convs = {"conv1a": (64, 1, 3), "conv1b": (64, 64, 3), "conv2a": (64, 64, 3), "conv2b": (64, 64, 3),
             "conv3a": (128, 64, 3), "conv3b": (128, 128, 3), "conv4a": (128, 128, 3), "conv4b": (128, 128, 3),
             "convPa": (256, 128, 3), "convPb": (65, 256, 1), "convDa": (256, 128, 3), "convDb": (256, 256, 1)}
    keys = {}
    for name, (cout, cin, k) in convs.items():
        keys[f"{name}.weight"] = (cout, cin, k, k)
        keys[f"{name}.bias"] = (cout,)
    return keys


def rpautrat_keys() -> dict[str, tuple[int, ...]]:
    blocks = {"backbone.0.0": (64, 1, 3), "backbone.0.1": (64, 64, 3), "backbone.1.0": (64, 64, 3),
              "backbone.1.1": (64, 64, 3), "backbone.2.0": (128, 64, 3), "backbone.2.1": (128, 128, 3),
              "backbone.3.0": (128, 128, 3), "backbone.3.1": (128, 128, 3), "detector.0": (256, 128, 3),
              "detector.1": (65, 256, 1), "descriptor.0": (256, 128, 3), "descriptor.1": (256, 256, 1)}
    keys = {}
    for name, (cout, cin, k) in blocks.items():
        keys[f"{name}.conv.weight"] = (cout, cin, k, k)
        keys[f"{name}.conv.bias"] = (cout,)
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{buffer}"] = (cout,)
        keys[f"{name}.bn.num_batches_tracked"] = ()
    return keys


CELL_ROW, CELL_COL = 5, 2  # the pixel of every 8x8 cell that the crafted detector head fires on
DESCRIPTOR = torch.linspace(-1.0, 1.0, 256)


def crafted_checkpoint(layout: str) -> dict[str, torch.Tensor]:
    """Random official-layout weights whose heads ignore the image: every cell's logits peak at
    (CELL_ROW, CELL_COL) and every descriptor is DESCRIPTOR (normalised)."""
    generator = torch.Generator().manual_seed(0)
    keys = magicleap_keys() if layout == "magicleap" else rpautrat_keys()
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
    logits = torch.zeros(65)
    logits[CELL_ROW * 8 + CELL_COL] = 10.0
    if layout == "magicleap":
        heads = {"convPb": logits, "convDb": DESCRIPTOR}
        for name, bias in heads.items():
            state[f"{name}.weight"].zero_()
            state[f"{name}.bias"] = bias.clone()
    else:
        for name, bias in {"detector.1": logits, "descriptor.1": DESCRIPTOR}.items():
            state[f"{name}.conv.weight"].zero_()
            state[f"{name}.conv.bias"].zero_()
            state[f"{name}.bn.weight"].zero_()  # BatchNorm output = its bias, whatever the input
            state[f"{name}.bn.bias"] = bias.clone()
    return state


MODELS = {"superpoint-v1": "magicleap", "superpoint-open": "rpautrat"}


@pytest.fixture(params=list(MODELS))
def checkpoint_file(request, tmp_path):
    path = tmp_path / f"{request.param}.pth"
    torch.save(crafted_checkpoint(MODELS[request.param]), path)
    return request.param, path


def test_official_key_sets_load_strictly(checkpoint_file):
    model, path = checkpoint_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonCommercialWeightsWarning)
        network = build_model(model, weights=path)
    expected = magicleap_keys() if MODELS[model] == "magicleap" else rpautrat_keys()
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == expected


def test_a_checkpoint_of_the_other_layout_is_refused_with_advice(tmp_path):
    path = tmp_path / "open.pth"
    torch.save(crafted_checkpoint("rpautrat"), path)
    with pytest.raises(ValueError, match="superpoint-open"):
        build_model("superpoint-v1", weights=path)
    truncated = crafted_checkpoint("magicleap")
    truncated.pop("convDb.bias")
    torch.save(truncated, path)
    with pytest.raises(cvdeep.Error, match=r"open.pth: not a checkpoint of model 'superpoint-v1'.*convDb.bias"):
        build_model("superpoint-v1", weights=path)


def test_cells_unfold_like_the_reference():
    """Channel r*8 + c of cell (i, j) is pixel (8i + r, 8j + c), the dustbin (channel 64) is dropped."""
    logits = torch.full((1, 65, 2, 3), -50.0)
    logits[0, 3 * 8 + 7, 1, 2] = 50.0
    logits[0, 64, 0, 0] = 50.0
    scores = cell_logits_to_scores(logits)
    assert scores.shape == (1, 1, 16, 24)
    peak = torch.nonzero(scores[0, 0] > 0.5).tolist()
    assert peak == [[8 + 3, 16 + 7]]
    assert float(scores[0, 0, :8, :8].max()) < 1e-6  # cell (0, 0) went to the dustbin


def test_nms_threshold_and_mask_on_a_synthetic_score_map():
    scores = torch.zeros(1, 1, 40, 48)
    scores[0, 0, 10, 10] = 0.9  # kept
    scores[0, 0, 12, 13] = 0.8  # within radius 4 of a stronger one: suppressed
    scores[0, 0, 10, 15] = 0.7  # 5 px from 0.9; its only stronger neighbour (0.8) is suppressed: kept
    scores[0, 0, 30, 30] = 0.004  # below the 0.005 threshold
    scores[0, 0, 30, 43] = 0.5  # kept
    valid = torch.ones_like(scores, dtype=torch.bool)
    keypoints, values = SuperPointMagicLeap().detect(scores, valid)
    assert keypoints.tolist() == [[10.0, 10.0], [15.0, 10.0], [43.0, 30.0]]
    torch.testing.assert_close(values, torch.tensor([0.9, 0.7, 0.5]))
    valid[..., :, :12] = False  # masks 0.9 out: 0.8 becomes a maximum and suppresses 0.7
    keypoints, _ = SuperPointMagicLeap().detect(scores, valid, SuperPointConfig(nfeatures=2))
    assert keypoints.tolist() == [[13.0, 12.0], [43.0, 30.0]]


def test_border_is_measured_from_the_real_image_edge(checkpoint_file):
    """remove_borders=4 on a 481 x 641 image once gave keypoints at x = 640: the border was
    measured on the score map padded to a multiple of 8. Now it is the image's own edge."""
    model, path = checkpoint_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonCommercialWeightsWarning)
        detector = cvdeep.SuperPoint_create(weights=str(path), model=model, device="cpu", detection_threshold=0.0)
    image = np.random.default_rng(3).integers(0, 256, (481, 641), dtype=np.uint8)
    xy = cv2.KeyPoint_convert(detector.detect(image))
    assert len(xy) > 0
    assert xy[:, 0].min() >= 4 and xy[:, 0].max() <= 640 - 4
    assert xy[:, 1].min() >= 4 and xy[:, 1].max() <= 480 - 4


def test_full_pipeline_finds_the_analytic_keypoints(checkpoint_file):
    model, path = checkpoint_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonCommercialWeightsWarning)
        detector = cvdeep.SuperPoint_create(weights=str(path), model=model, device="cpu")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (61, 77), dtype=np.uint8)  # padded to 64 x 80 inside
    keypoints, descriptors = detector.detectAndCompute(image, None)
    height, width = image.shape
    expected = {(8 * j + CELL_COL, 8 * i + CELL_ROW) for i in range(8) for j in range(10)
                if 4 <= 8 * i + CELL_ROW < height - 4 and 4 <= 8 * j + CELL_COL < width - 4}
    assert {(round(kp.pt[0]), round(kp.pt[1])) for kp in keypoints} == expected
    assert all(kp.pt[0] == round(kp.pt[0]) for kp in keypoints)
    probability = np.exp(10.0) / (np.exp(10.0) + 64)
    np.testing.assert_allclose([kp.response for kp in keypoints], probability, rtol=1e-5)
    unit_descriptor = torch.nn.functional.normalize(DESCRIPTOR, dim=0).numpy()
    np.testing.assert_allclose(descriptors, np.tile(unit_descriptor, (len(keypoints), 1)), atol=1e-5)
    assert detector.descriptorSize() == 256


def test_weights_names_select_the_model(tmp_path, monkeypatch):
    """weights="superpoint-open" picks the registered model; its file is found through $CVDEEP_WEIGHTS_DIR."""
    (tmp_path / "superpoint").mkdir()
    torch.save(crafted_checkpoint("rpautrat"), tmp_path / "superpoint" / "superpoint_v6_from_tf.pth")
    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    detector = cvdeep.SuperPoint_create(weights="superpoint-open", device="cpu")
    assert detector.getParams()["model"] == "superpoint-open" and detector.getParams()["weights"] is None
    textured = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)  # a flat frame has no keypoints
    assert len(detector.detect(textured)) > 0


def test_v1_is_marked_noncommercial_and_open_is_mit(tmp_path):
    from cvdeep.models import get_weight_spec as get_spec

    assert get_spec("superpoint-v1").noncommercial
    assert get_spec("superpoint-open").license == "MIT" and not get_spec("superpoint-open").noncommercial
    from cvdeep import weights as hub

    hub._warned.discard("superpoint-v1")
    path = tmp_path / "v1.pth"
    torch.save(crafted_checkpoint("magicleap"), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model("superpoint-v1", weights=path)
        build_model("superpoint-v1", weights=path)
    assert [w.category for w in caught].count(NonCommercialWeightsWarning) == 1


@pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning")
def test_without_an_official_file_the_packaged_cvdeep_weights_work_offline(tmp_path, monkeypatch, data_dir):
    """No official file anywhere: ``SuperPoint_create()`` takes superpoint-cvdeep from the package (sha256
    checked on load) and matches a real image to a shifted copy of itself, offline."""
    from feature_checks import GRAF, load_image

    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("CVDEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    detector = cvdeep.SuperPoint_create(500, device="cpu")
    assert detector.getParams()["model"] == "superpoint-cvdeep"
    image = load_image(data_dir, GRAF, (480, 360))
    keypoints, descriptors = detector.detectAndCompute(image, None)
    moved, moved_descriptors = detector.detectAndCompute(image[16:, 8:], None)
    assert descriptors.shape == (len(keypoints), 256) and len(keypoints) > 100
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(descriptors, moved_descriptors)
    error = [np.hypot(*np.subtract(keypoints[m.queryIdx].pt, np.add(moved[m.trainIdx].pt, (8, 16)))) for m in matches]
    assert np.mean(np.array(error) < 3.0) > 0.5
