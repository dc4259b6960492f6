"""ALIKED: strict loading of the four official checkpoints, fidelity to kornia 0.9 on real images,
coordinates, masks, nfeatures and the Feature2D surface.

kornia differs from the original code (Shiaoming/ALIKED) in one place, its NMS: kornia
keeps strict local maxima only, while the original ``simple_nms`` keeps tied maxima and
adds, in two more rounds, positions that become a window maximum once the windows of
the kept ones are suppressed. cvdeep follows the original. So the fidelity test checks
(1) kornia as shipped: its keypoints are a subset of ours, and (2) kornia with its NMS
replaced by the original's algorithm (re-implemented here from the published code):
the two keypoint sets agree both ways. Everything else (network, thresholds, soft-argmax,
scores, SDDH descriptors) is kornia's own code.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cvdeep
from cvdeep.image import to_tensor
from cvdeep.models import build_model

kornia_aliked = pytest.importorskip("kornia.feature.aliked.aliked")

MODELS = ["aliked-t16", "aliked-n16", "aliked-n16rot", "aliked-n32"]


def _official_keys(shared, model):
    keys, inside = {}, False
    for line in (shared / "weights" / "aliked" / "KEYS.txt").read_text().splitlines():
        if line.startswith("#"):
            inside = line.split()[1] == f"{model}.pth"
            continue
        if inside and line.strip():
            name, shape, _ = line.split("\t")
            keys[name] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return keys


@pytest.mark.parametrize("model", MODELS)
def test_official_checkpoints_load_strictly(shared, model):
    network = build_model(model)  # load_state_dict(strict=True) inside
    expected = _official_keys(shared, model)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == expected


def _original_simple_nms(scores, kernel_size, mask_only=True):
    """The NMS of Shiaoming/ALIKED (soft_detect.simple_nms), as a drop-in for kornia's nms2d."""
    radius = kernel_size[0] // 2
    pool = lambda x: F.max_pool2d(x, kernel_size[0], stride=1, padding=radius)  # noqa: E731
    zeros = torch.zeros_like(scores)
    max_mask = scores == pool(scores)
    for _ in range(2):
        supp_mask = pool(max_mask.float()) > 0
        supp_scores = torch.where(supp_mask, zeros, scores)
        max_mask = max_mask | ((supp_scores == pool(supp_scores)) & ~supp_mask)
    return max_mask


def _kornia_post(net, feature_map, score_map):
    """kornia's own DKD + SDDH on its dense maps (what its forward does), keypoints in pixels."""
    keypoints, scores, _ = net.dkd(score_map)
    descriptors, _ = net.desc_head(feature_map, keypoints)
    height, width = score_map.shape[-2:]
    pixels = (keypoints[0] + 1) / 2 * torch.tensor([width - 1.0, height - 1.0])
    return kornia_aliked.ALIKEDFeatures(pixels, descriptors[0], scores[0])


def _kornia(model, cache_weights):
    net = kornia_aliked.ALIKED(model_name=model, max_num_keypoints=5000, detection_threshold=0.2, nms_radius=2)
    state = torch.load(cache_weights(model), weights_only=True)
    net.load_state_dict(state, strict=False)  # kornia's extra buffer dkd.hw_grid is not in the file
    return net.eval()


@pytest.fixture(scope="module")
def cache_weights():
    from cvdeep.models import get_weight_spec
    from cvdeep.weights import resolve

    return lambda model: resolve(get_weight_spec(model))


def _nearest(a, b):
    """Distance from each row of a to the nearest row of b, and its index (exact, no matmul trick)."""
    if len(b) == 0:
        return torch.full((len(a),), float("inf")), torch.zeros(len(a), dtype=torch.long)
    d = torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")
    return d.min(1)


def _image(data_dir, path, size):
    image = cv2.imread(str(data_dir / path))
    return to_tensor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), 3, torch.device("cpu"))


IMAGES = [("oxford_affine/images/graf/img1.ppm", (416, 320)),
          ("hpatches_subset/vbalnt_tfeat/imgs/v_churchill/1.ppm", (400, 300))]


@pytest.mark.parametrize(
    "model,path,size",
    [("aliked-n16", *IMAGES[0]), ("aliked-n16", *IMAGES[1]), ("aliked-n32", *IMAGES[1]), ("aliked-t16", *IMAGES[0])],
)
def test_fidelity_against_kornia(data_dir, monkeypatch, cache_weights, model, path, size):
    image = _image(data_dir, path, size)
    ours = build_model(model)
    valid = torch.ones((1, 1, *image.shape[-2:]), dtype=torch.bool)
    reference = _kornia(model, cache_weights)
    with torch.inference_mode():
        features, scores = ours(image)
        got = ours.extract(image, valid)
        kornia_features, kornia_scores = reference.extract_dense_map(image)
        torch.testing.assert_close(scores, kornia_scores, atol=1e-4, rtol=0)
        torch.testing.assert_close(features, kornia_features, atol=1e-4, rtol=0)
        shipped = _kornia_post(reference, kornia_features, kornia_scores)
        monkeypatch.setattr(kornia_aliked, "nms2d", _original_simple_nms)
        original = _kornia_post(reference, kornia_features, kornia_scores)
    assert len(got["keypoints"]) > 100

    # (1) kornia as shipped: a subset of ours
    distance, index = _nearest(shipped.keypoints, got["keypoints"])
    assert (distance < 0.1).float().mean() >= 0.99
    assert len(got["keypoints"]) >= len(shipped.keypoints)

    # (2) kornia with the original NMS: the same keypoints, scores and descriptors
    there, index = _nearest(got["keypoints"], original.keypoints)
    back, _ = _nearest(original.keypoints, got["keypoints"])
    assert (there < 0.1).float().mean() >= 0.99 and (back < 0.1).float().mean() >= 0.99
    matched = there < 0.1
    cosine = (got["descriptors"][matched] * original.descriptors[index[matched]]).sum(1)
    assert cosine.min() >= 0.999
    torch.testing.assert_close(got["scores"][matched], original.keypoint_scores[index[matched]], atol=1e-4, rtol=0)
    assert torch.all(got["scores"][:-1] >= got["scores"][1:])


def test_describe_uses_opencv_pixel_centres(data_dir, cache_weights):
    """Arbitrary pixel keypoints described by cvdeep == kornia's SDDH fed ALIKED's
    normalised coordinates u = 2 x / (W - 1) - 1 (align_corners): the conversion is exact."""
    image = _image(data_dir, IMAGES[0][0], (256, 192))
    height, width = image.shape[-2:]
    generator = torch.Generator().manual_seed(3)
    keypoints = torch.rand(300, 2, generator=generator) * torch.tensor([width - 1.0, height - 1.0])
    keypoints[:4] = torch.tensor([[0.0, 0.0], [width - 1.0, height - 1.0], [10.0, 20.0], [100.5, 50.25]])
    ours = build_model("aliked-n16")
    reference = _kornia("aliked-n16", cache_weights)
    with torch.inference_mode():
        got = ours.describe(image, keypoints)
        feature_map, _ = reference.extract_dense_map(image)
        normalised = keypoints / torch.tensor([width - 1.0, height - 1.0]) * 2 - 1
        expected = reference.desc_head(feature_map, [normalised])[0][0]
    cosine = (got * expected).sum(1)
    assert cosine.min() >= 0.999


@pytest.fixture(scope="module")
def detector():
    return cvdeep.ALIKED_create()


def test_detect_and_compute_on_gray_and_describe_again(detector, graf_pair):
    gray = cv2.cvtColor(graf_pair[0], cv2.COLOR_BGR2GRAY)[:250, :333]  # not a multiple of 32
    keypoints, descriptors = detector.detectAndCompute(gray, None)
    assert len(keypoints) > 50 and descriptors.shape == (len(keypoints), 128)
    assert detector.descriptorSize() == 128
    xy = np.array([k.pt for k in keypoints])
    assert xy.min() >= 0 and xy[:, 0].max() <= 333 - 1 and xy[:, 1].max() <= 250 - 1
    _, again = detector.compute(gray, keypoints)
    np.testing.assert_allclose(again, descriptors, atol=1e-5)


def test_mask_removes_keypoints_without_moving_the_others(graf_pair):
    image = graf_pair[0][:256, :320]
    detector = cvdeep.ALIKED_create(nfeatures=0)
    full = np.array([k.pt for k in detector.detect(image)])
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[:, :160] = 255
    masked = np.array([k.pt for k in detector.detect(image, mask)])
    assert 0 < len(masked) < len(full)
    assert np.all(mask[np.round(masked[:, 1]).astype(int), np.round(masked[:, 0]).astype(int)] > 0)
    # the same keypoints; only those whose soft-argmax window reaches into the mask may move
    distance = np.abs(masked[:, None] - full[None]).sum(-1).min(1)
    assert distance[masked[:, 0] < 160 - 3].max() < 1e-4 and distance.max() < 2


def test_nfeatures_and_top_k_mode(graf_pair):
    image = graf_pair[0][:256, :320]
    limited = cvdeep.ALIKED_create(nfeatures=50).detect(image)
    assert len(limited) == 50
    responses = [k.response for k in limited]
    assert responses == sorted(responses, reverse=True)
    unlimited = np.array([k.pt for k in cvdeep.ALIKED_create(nfeatures=0, detection_threshold=0.2).detect(image)])
    assert len(unlimited) > 50
    assert np.abs(np.array([k.pt for k in limited])[:, None] - unlimited[None]).sum(-1).min(1).max() < 1e-4
    top_k = cvdeep.ALIKED_create(nfeatures=30, detection_threshold=0.0).detect(image)
    assert len(top_k) == 30


def test_bad_parameters_raise_cvdeep_error(graf_pair):
    with pytest.raises(cvdeep.Error, match="model"):
        cvdeep.ALIKED_create(model="aliked-n64")
    with pytest.raises(cvdeep.Error, match="nms_radius"):
        cvdeep.ALIKED_create(nms_radius=-1).detect(graf_pair[0][:64, :64])
