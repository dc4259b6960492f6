"""LightGlue / LighterGlue: strict loading of the official files, fidelity to kornia's LightGlue on real
pairs (adaptive depth and width on and off), the cv2-style matcher and its input errors."""
from __future__ import annotations

import sys
import warnings
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep import weights as hub
from cvdeep.models import build_model, get_model
from cvdeep.nets.lightglue import LightGlue as LightGlueNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from matching_inputs import image_size, kornia_extractor, kornia_lightglue, read  # noqa: E402

FEATURES = ("aliked", "disk", "xfeat")
NUM_KEYPOINTS = 1024
MAX_SIDE = 512  # downscaled so the suite stays fast; pruning and early exit still engage at 1024 points
PAIRS = {
    "sacre_coeur": ("lightglue_assets/assets/sacre_coeur1.jpg", "lightglue_assets/assets/sacre_coeur2.jpg"),
    "graf_1_3": ("oxford_affine/images/graf/img1.ppm", "oxford_affine/images/graf/img3.ppm"),
}
ADAPTIVE_OFF = {"depth_confidence": -1, "width_confidence": -1}


@cache
def _extract(data_dir: Path, features: str, relative: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    image = read(data_dir / relative, MAX_SIDE)
    keypoints, descriptors = _extractor(features)(image)
    return keypoints, descriptors, image_size(image)


@cache
def _extractor(features: str):
    return kornia_extractor(features, NUM_KEYPOINTS)


def _pair(data_dir: Path, features: str, name: str):
    return tuple(_extract(data_dir, features, relative) for relative in PAIRS[name])


def _kornia_matches(reference: torch.nn.Module, first, second) -> tuple[np.ndarray, np.ndarray, int]:
    def image(features):
        keypoints, descriptors, size = features
        return {"keypoints": torch.from_numpy(keypoints)[None], "descriptors": torch.from_numpy(descriptors)[None],
                "image_size": torch.tensor([size])}

    with torch.inference_mode():
        out = reference({"image0": image(first), "image1": image(second)})
    return out["matches"][0].numpy(), out["scores"][0].numpy(), int(out["stop"])


def _sorted(pairs: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order], scores[order]


# --- strict loading --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lightglue-aliked", "lightglue-disk", "lighterglue-xfeat"])
def test_official_weights_load_strictly(shared: Path, name: str) -> None:
    network = build_model(name)
    checkpoint = hub.load_checkpoint(get_model(name)[1].weights)
    ours = network.state_dict()
    # Every learned tensor of the file reaches the network unchanged (up to the published renaming).
    for key, value in checkpoint.items():
        if key.startswith("extractor.") or key.endswith(".r"):
            continue
        target = key.removeprefix("matcher.")
        if target.split(".")[0] in ("self_attn", "cross_attn"):
            block, layer, *rest = target.split(".")
            target = ".".join(["transformers", layer, block, *rest])
        assert torch.equal(ours[target], value), key
    assert len(ours) == len([k for k in checkpoint if not k.startswith("extractor.") and not k.endswith(".r")])


def test_strict_load_refuses_a_foreign_or_incomplete_checkpoint(shared: Path) -> None:
    checkpoint = hub.load_checkpoint(get_model("lightglue-aliked")[1].weights)
    network = LightGlueNet(input_dim=128)
    with pytest.raises(RuntimeError, match="Unexpected"):
        network.load_pretrained({**checkpoint, "transformers.9.self_attn.Wqkv.weight": torch.zeros(768, 256)})
    incomplete = dict(checkpoint)
    del incomplete["token_confidence.3.token.0.bias"]
    with pytest.raises(RuntimeError, match="Missing"):
        network.load_pretrained(incomplete)
    with pytest.raises(RuntimeError, match="size mismatch"):
        LightGlueNet(input_dim=64).load_pretrained(checkpoint)  # XFeat-sized input projection


# --- fidelity to kornia's LightGlue ------------------------------------------------------------

@pytest.mark.parametrize("adaptive", [True, False], ids=["adaptive", "full"])
@pytest.mark.parametrize("features", FEATURES)
def test_matches_equal_kornia_lightglue(data_dir: Path, features: str, adaptive: bool) -> None:
    overrides = {} if adaptive else ADAPTIVE_OFF
    matcher = cvdeep.LightGlue_create(features, **overrides)
    reference = kornia_lightglue(features, **overrides)
    layers = []
    for name in PAIRS:
        first, second = _pair(data_dir, features, name)
        ours, confidences = _sorted(*matcher.match_features(*first, *second))
        expected, expected_confidences, stop = _kornia_matches(reference, first, second)
        expected, expected_confidences = _sorted(expected, expected_confidences)
        assert len(expected) > 5, f"{features} {name}: the reference found too few matches to compare"
        np.testing.assert_array_equal(ours, expected, err_msg=f"{features} {name}")
        # Same matches; confidences within 5e-4: the cross attention runs fused per direction (the reference's CUDA
        # path) where kornia's CPU path shares one similarity matrix, so sums round in another order over 9 layers.
        np.testing.assert_allclose(confidences, expected_confidences, rtol=0, atol=5e-4)
        assert matcher.last_layers == stop
        layers.append(stop)
    n_layers = matcher._network.n_layers
    if adaptive and features != "xfeat":  # LighterGlue's published config has no early exit
        assert min(layers) < n_layers, "early exit never engaged on these pairs"
    else:
        assert layers == [n_layers] * len(PAIRS)


def test_point_pruning_engages_and_matches_kornia(data_dir: Path) -> None:
    """The adaptive case above is only meaningful if pruning removes points: check kornia reports it did."""
    first, second = _pair(data_dir, "aliked", "graf_1_3")
    reference = kornia_lightglue("aliked", depth_confidence=-1)  # run all layers, prune after each
    with torch.inference_mode():
        out = reference({"image0": {"keypoints": torch.from_numpy(first[0])[None],
                                    "descriptors": torch.from_numpy(first[1])[None],
                                    "image_size": torch.tensor([first[2]])},
                         "image1": {"keypoints": torch.from_numpy(second[0])[None],
                                    "descriptors": torch.from_numpy(second[1])[None],
                                    "image_size": torch.tensor([second[2]])}})
    assert (out["prune0"] < reference.conf.n_layers).any(), "no point was pruned"
    ours, confidences = _sorted(*cvdeep.LightGlue("aliked", depth_confidence=-1).match_features(*first, *second))
    expected, expected_confidences = _sorted(out["matches"][0].numpy(), out["scores"][0].numpy())
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_allclose(confidences, expected_confidences, rtol=0, atol=1e-4)


# --- LighterGlue (XFeat) invariants -------------------------------------------------------------

def test_lighterglue_is_symmetric(data_dir: Path) -> None:
    """Swapping the images swaps the matches: the published architecture treats both images alike."""
    matcher = cvdeep.LightGlue("xfeat")
    first, second = _pair(data_dir, "xfeat", "graf_1_3")
    forward, forward_conf = matcher.match_features(*first, *second)
    backward, backward_conf = matcher.match_features(*second, *first)
    forward_set = {tuple(p): c for p, c in zip(forward.tolist(), forward_conf)}
    backward_set = {(j, i): c for (i, j), c in zip(backward.tolist(), backward_conf)}
    common = forward_set.keys() & backward_set.keys()
    assert len(forward) > 50
    assert len(common) >= 0.98 * max(len(forward_set), len(backward_set))
    assert max(abs(forward_set[p] - backward_set[p]) for p in common) < 1e-4


def test_lighterglue_uses_published_config(shared: Path) -> None:
    matcher = cvdeep.LightGlue("xfeat")
    assert (matcher.descriptor_size, matcher.getDepthConfidence(), matcher.getWidthConfidence(),
            matcher.getFilterThreshold()) == (64, -1.0, 0.95, 0.1)
    assert (matcher._network.n_layers, matcher._network.posenc.Wr.weight.shape) == (6, (48, 2))
    aliked = cvdeep.LightGlue("aliked")
    assert (aliked.getDepthConfidence(), aliked.getWidthConfidence(), aliked.getFilterThreshold()) == (0.95, 0.99, 0.1)


# --- geometry on real data (independent of any reference implementation) -------------------------

def _graf_errors(data_dir: Path, first, second, pairs: np.ndarray) -> np.ndarray:
    """Pixel error of each match of graf 1-3 under its ground-truth homography."""
    homography = np.array((data_dir / "oxford_affine/images/graf/H1to3p").read_text().split(), float).reshape(3, 3)
    original_width = cv2.imread(str(data_dir / PAIRS["graf_1_3"][0]), cv2.IMREAD_UNCHANGED).shape[1]
    scale = np.diag([first[2][0] / original_width] * 2 + [1.0])  # both images were downscaled alike
    homography = scale @ homography @ np.linalg.inv(scale)
    projected = cv2.perspectiveTransform(first[0][pairs[:, 0]].reshape(-1, 1, 2).astype(np.float64), homography)
    return np.linalg.norm(projected.reshape(-1, 2) - second[0][pairs[:, 1]], axis=1)


def test_aliked_lightglue_matches_follow_the_ground_truth(data_dir: Path) -> None:
    first, second = _pair(data_dir, "aliked", "graf_1_3")
    pairs, confidences = cvdeep.LightGlue("aliked").match_features(*first, *second)
    assert len(pairs) > 100
    assert np.mean(_graf_errors(data_dir, first, second, pairs) < 3.0) > 0.8
    assert np.all((confidences > 0.1) & (confidences <= 1.0))


def test_bf16_lightglue_keeps_the_geometry_and_most_fp32_matches(data_dir: Path) -> None:
    """precision='bf16': the transformer's products in bfloat16, the read-outs in float32; where the CPU
    lacks native bf16 it runs (and says it runs) float32, so the matches are the fp32 ones exactly."""
    first, second = _pair(data_dir, "aliked", "graf_1_3")
    reference, _ = cvdeep.LightGlue("aliked").match_features(*first, *second)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fp32 fallback's notice on a CPU without bf16
        matcher = cvdeep.LightGlue("aliked", precision="bf16")
        pairs, confidences = matcher.match_features(*first, *second)
    assert matcher.getPrecision() == "bf16"
    if matcher.effectivePrecision() == "fp32":
        assert np.array_equal(pairs, reference)
        return
    assert len(pairs) > 100 and np.mean(_graf_errors(data_dir, first, second, pairs) < 3.0) > 0.8
    assert np.all((confidences > 0.1) & (confidences <= 1.0))
    shared_matches = set(map(tuple, pairs.tolist())) & set(map(tuple, reference.tolist()))
    assert len(shared_matches) >= 0.8 * len(reference)


# --- the cv2-style matcher -------------------------------------------------------------------

def test_match_returns_dmatches_consistent_with_match_features(data_dir: Path) -> None:
    first, second = _pair(data_dir, "disk", "sacre_coeur")
    matcher = cvdeep.LightGlue_create(features="disk")
    keypoints0 = [cv2.KeyPoint(float(x), float(y), 8.0) for x, y in first[0]]  # as detectors return them
    matcher.setPairInfo(keypoints0, second[0], first[2], second[2])
    dmatches = matcher.match(first[1], second[1])
    pairs, confidences = matcher.match_features(*first, *second)
    assert len(dmatches) == len(pairs) > 0
    assert all(isinstance(m, cv2.DMatch) for m in dmatches)
    distances = [m.distance for m in dmatches]
    assert distances == sorted(distances)
    by_pair = {(m.queryIdx, m.trainIdx): m.distance for m in dmatches}
    for (i, j), confidence in zip(pairs.tolist(), confidences):
        assert by_pair[(i, j)] == pytest.approx(1.0 - confidence, abs=1e-6)


def test_empty_inputs_give_no_matches(shared: Path) -> None:
    matcher = cvdeep.LightGlue("aliked")
    none = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), (640, 480)
    descriptors = np.eye(3, 128, dtype=np.float32)
    three = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    pairs, confidences = matcher.match_features(*none, three, descriptors, (640, 480))
    assert pairs.shape == (0, 2) and confidences.shape == (0,)


@pytest.fixture(scope="module")
def aliked_matcher(shared: Path) -> cvdeep.LightGlue:
    return cvdeep.LightGlue("aliked")


def _unit_rows(n: int, dim: int) -> np.ndarray:
    rows = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


POINTS = np.array([[10.0, 20.0], [100.0, 50.0], [300.0, 200.0]], np.float32)


@pytest.mark.parametrize("descriptors, message", [
    (_unit_rows(3, 64), "64-dimensional"),  # XFeat's descriptors to the ALIKED model
    (_unit_rows(3, 128) * 300.0, "norms"),  # SIFT-like, not normalised
    (np.full((3, 32), 7, np.uint8), "dtype uint8"),  # ORB's binary descriptors
    (_unit_rows(4, 128), "4 descriptors for 3 keypoints"),
    ([[0.1] * 128] * 3, "type list"),
])
def test_wrong_descriptors_are_refused(aliked_matcher, descriptors, message: str) -> None:
    with pytest.raises(cvdeep.Error, match=message):
        aliked_matcher.match_features(POINTS, descriptors, (320, 240), POINTS, _unit_rows(3, 128), (320, 240))


def test_a_pair_too_large_for_memory_is_refused_before_running(aliked_matcher) -> None:
    """27,000 DISK keypoints a side took LightGlue past 19 GB; a pair above ``MAX_PAIR_BYTES`` (32 B per
    keypoint pair, measured 367 MiB for 4096 x 4096) is refused up front, saying what to do."""
    from cvdeep.matching import lightglue

    count = int((lightglue.MAX_PAIR_BYTES / lightglue._BYTES_PER_PAIR) ** 0.5) + 16
    points = np.random.default_rng(1).uniform(0, 230, (count, 2)).astype(np.float32)
    with pytest.raises(cvdeep.Error, match=r"would need about 4\.\d GiB .* nfeatures"):
        aliked_matcher.match_features(points, _unit_rows(count, 128), (320, 240), points, _unit_rows(count, 128),
                                      (320, 240))


def test_sift_descriptors_are_refused_end_to_end(aliked_matcher, graf_pair) -> None:
    image = cv2.cvtColor(graf_pair[0], cv2.COLOR_BGR2GRAY)
    keypoints, descriptors = cv2.SIFT_create(200).detectAndCompute(image, None)
    aliked_matcher.setPairInfo(keypoints, keypoints, image_size(image), image_size(image))
    with pytest.raises(cvdeep.Error, match="ALIKED's float32 \\(N, 128\\) L2-normalised"):
        aliked_matcher.match(descriptors, descriptors)


def test_bad_pair_info_and_parameters_are_refused(aliked_matcher) -> None:
    fresh = cvdeep.LightGlue("aliked")
    with pytest.raises(cvdeep.Error, match="setPairInfo"):
        fresh.match(_unit_rows(3, 128), _unit_rows(3, 128))
    with pytest.raises(cvdeep.Error, match="outside the image"):
        aliked_matcher.setPairInfo(POINTS, POINTS, (240, 320), (320, 240))  # (height, width) given
    with pytest.raises(cvdeep.Error, match="width, height"):
        aliked_matcher.setPairInfo(POINTS, POINTS, (320, 240, 3), (320, 240))  # an image shape
    with pytest.raises(cvdeep.Error, match="\\(N, 2\\) array"):
        aliked_matcher.setPairInfo(np.zeros((3, 3)), POINTS, (320, 240), (320, 240))
    with pytest.raises(cvdeep.Error, match="accepted: 'aliked', 'aliked-n16', 'disk', 'xfeat'"):
        cvdeep.LightGlue("superpoint")
    with pytest.raises(cvdeep.Error, match="depth_confidence"):
        cvdeep.LightGlue("aliked", depth_confidence=1.5)
    with pytest.raises(cvdeep.Error, match="filter_threshold"):
        cvdeep.LightGlue("aliked", filter_threshold=-1)
    with pytest.raises(cvdeep.Error, match="precision: got 'fp16'; accepted: 'fp32', 'bf16', 'auto'"):
        cvdeep.LightGlue("aliked", precision="fp16")


# --- inputs as cv2 gives them, and pickling ----------------------------------------------------

def test_none_and_empty_descriptors_give_no_matches(aliked_matcher, shared: Path) -> None:
    """An image without keypoints: detectAndCompute gives ((), None), and LightGlue answers with no matches."""
    blank = np.full((96, 128), 128, np.uint8)
    xfeat = cvdeep.XFeat_create(256)
    keypoints, descriptors = xfeat.detectAndCompute(blank, None)
    assert keypoints == () and descriptors is None
    lighterglue = cvdeep.LightGlue("xfeat")
    other = POINTS, _unit_rows(3, 64), (320, 240)
    for first, second in [((keypoints, descriptors, (128, 96)), other), (other, (keypoints, descriptors, (128, 96))),
                          ((keypoints, descriptors, (128, 96)), (keypoints, descriptors, (128, 96)))]:
        pairs, confidences = lighterglue.match_features(*first, *second)
        assert pairs.shape == (0, 2) and pairs.dtype == np.int64 and confidences.shape == (0,)
    lighterglue.setPairInfo(keypoints, POINTS, (128, 96), (320, 240))
    assert lighterglue.match(descriptors, _unit_rows(3, 64)) == []
    assert lighterglue.match(np.zeros((0, 64), np.float32), _unit_rows(3, 64)) == []
    aliked_matcher.setPairInfo(POINTS, (), (320, 240), (320, 240))
    assert aliked_matcher.match(_unit_rows(3, 128), None) == []


def test_lightglue_pickles_by_parameters(shared: Path) -> None:
    import copy
    import pickle

    matcher = cvdeep.LightGlue("xfeat", filter_threshold=0.2, width_confidence=-1, precision="auto")
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 300, (60, 2)).astype(np.float32)
    descriptors = _unit_rows(60, 64)
    expected = matcher.match_features(points, descriptors, (320, 320), points, descriptors, (320, 320))
    data = pickle.dumps(matcher)
    assert len(data) < 20_000  # parameters only: the 10 MB network is rebuilt on the other side
    for other in (pickle.loads(data), copy.deepcopy(matcher)):
        assert other._network is None and other.model == "lighterglue-xfeat"
        assert (other.getFilterThreshold(), other.getWidthConfidence(), other.getPrecision()) == (0.2, -1, "auto")
        pairs, confidences = other.match_features(points, descriptors, (320, 320), points, descriptors, (320, 320))
        assert np.array_equal(pairs, expected[0]) and np.allclose(confidences, expected[1])
