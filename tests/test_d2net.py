"""D2-Net: the official checkpoint layout loads strictly; detection, refinement and the soft
detection score are checked on synthetic feature maps with analytically known answers.

The official weights (d2_tf.pth) are not reachable here, so nothing below claims accuracy.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.models import build_model
from cvdeep.nets.d2net import D2Net, feature_to_image
from cvdeep.ops.soft_detection import soft_detection_score

# dense_feature_extraction.model index -> (out, in) of its 3x3 conv, from mihaidusmanu/d2-net lib/model_test.py
OFFICIAL_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
                  14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512)}


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, (cout, cin) in OFFICIAL_CONVS.items():
        fan_in = cin * 9
        weight = torch.randn(cout, cin, 3, 3, generator=generator) * (2 / fan_in) ** 0.5
        state[f"dense_feature_extraction.model.{index}.weight"] = weight
        state[f"dense_feature_extraction.model.{index}.bias"] = torch.zeros(cout)
    return state


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    """A checkpoint as d2-net's train.py writes it: the state dict under "model", beside the
    training arguments (an argparse.Namespace), the optimizer state and the loss history."""
    path = tmp_path_factory.mktemp("d2net") / "d2_tf.pth"
    state = official_state_dict()
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
    checkpoint = {"args": argparse.Namespace(lr=1e-3, dataset_path="megadepth"), "epoch_idx": 10, "model": state,
                  "optimizer": optimizer.state_dict(), "train_loss_history": [1.0, 0.5]}
    torch.save(checkpoint, path)
    return path


def test_official_layout_loads_strictly(checkpoint_path):
    network = build_model("d2net", weights=checkpoint_path)
    assert set(network.state_dict()) == set(official_state_dict())
    wrong = official_state_dict()
    wrong["dense_feature_extraction.model.21.weight"] = wrong["dense_feature_extraction.model.21.weight"][:, :, :2]
    with pytest.raises(RuntimeError, match="size mismatch"):
        D2Net().load_pretrained({"model": wrong})


def synthetic_features() -> torch.Tensor:
    """Four channels on a 20 x 24 map (i = row, j = column):
    0: isotropic quadratic peak at sub-pixel (6.3, 8.2)      -> a keypoint, refined exactly;
    1: ridge peaked at (14, 5), 20x flatter along j          -> rejected by the edge test;
    2: quadratic peak at (14, 18) under channel 3            -> not the channel maximum;
    3: channel 2 + 1 around the same peak                    -> a keypoint at (14, 18)."""
    i, j = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    peak = (10 - ((i - 6.3) ** 2 + (j - 8.2) ** 2)).clamp_min(0)
    ridge = (8 - 4 * (i - 14) ** 2 - 0.2 * (j - 5) ** 2).clamp_min(0)
    under = (5 - ((i - 14) ** 2 + (j - 18) ** 2)).clamp_min(0)
    over = (6 - ((i - 14) ** 2 + (j - 18) ** 2)).clamp_min(0)
    return torch.stack([peak, ridge, under, over])[None]


def test_hard_detection_and_subpixel_refinement():
    net = D2Net()
    features = synthetic_features()
    detections, steps = net.hard_detection(features)
    assert detections.t().tolist() == [[0, 6, 8], [3, 14, 18]]
    xy, scores, descriptors = net.refine(features, detections, steps)
    torch.testing.assert_close(xy, torch.tensor([[8.2, 6.3], [18.0, 14.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(scores, torch.tensor([10 - 0.3**2 - 0.2**2, 6.0]), atol=1e-4, rtol=0)
    # image pixels: two 2x2 poolings, p -> 4p + 1.5
    torch.testing.assert_close(feature_to_image(xy), torch.tensor([[34.3, 26.7], [73.5, 57.5]]), atol=1e-3, rtol=0)
    # descriptors: bilinear feature at the refined position, L2-normalised
    expected = torch.nn.functional.normalize(features[0, :, 14, 18], dim=0)
    torch.testing.assert_close(descriptors[1], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(descriptors.norm(dim=1).numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("right, kept", [(9.9, True), (10.0, False)])
def test_refinement_rejects_steps_of_half_a_cell_or_more(right, kept):
    """Centre 10, left 8, right ``right``, 9 above and below: the quadratic step along j is
    (right - 8) / 2 / (20 - 8 - right): 0.475 for 9.9 (kept), 0.5 for 10 (rejected, as is the tied twin)."""
    features = torch.zeros(1, 1, 7, 8)
    features[0, 0, 3, 2:6] = torch.tensor([8.0, 10.0, right, 8.0])
    features[0, 0, 2, 3:5] = 9.0
    features[0, 0, 4, 3:5] = 9.0
    net = D2Net()
    detections, steps = net.hard_detection(features)
    xy, _, _ = net.refine(features, detections, steps)
    if kept:
        torch.testing.assert_close(xy, torch.tensor([[3.0 + (right - 8) / 2 / (20 - 8 - right), 3.0]]))
    else:
        assert detections.shape[1] == 2 and len(xy) == 0


def test_full_extraction_single_and_multi_scale(checkpoint_path, graf_pair):
    image = graf_pair[0][::5, ::5].copy()  # 128 x 160, a real photo; the weights are random: no accuracy claim
    single = cvdeep.D2Net_create(weights=str(checkpoint_path), device="cpu")
    keypoints, descriptors = single.detectAndCompute(image, None)
    assert len(keypoints) > 0 and descriptors.shape == (len(keypoints), 512)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-4)
    assert {kp.octave for kp in keypoints} == {0} and {kp.size for kp in keypoints} == {12.0}
    multi = cvdeep.D2Net_create(weights=str(checkpoint_path), multiscale=True, device="cpu")
    keypoints_ms = multi.detect(image)
    assert {kp.octave for kp in keypoints_ms} == {0, 1, 2}
    assert {kp.size for kp in keypoints_ms} == {24.0, 12.0, 6.0}  # 12 px / scale for scales 0.5, 1, 2
    height, width = image.shape[:2]
    for kp in keypoints_ms:
        assert -0.5 <= kp.pt[0] <= width - 0.5 and -0.5 <= kp.pt[1] <= height - 0.5
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2 :] = 255
    masked = multi.detect(image, mask)
    assert masked and all(kp.pt[0] >= width // 2 - 0.5 for kp in masked)
    described = single.compute(image, keypoints[:5])[1]
    np.testing.assert_allclose(described, descriptors[:5], atol=1e-4)


def _soft_score_by_definition(features: torch.Tensor, window: int) -> torch.Tensor:
    """The paper's formula evaluated pixel by pixel (independent of the vectorised op)."""
    y = features.clamp_min(0)[0].double()
    channels, height, width = y.shape
    m = y.max()
    half = window // 2
    score = torch.zeros(height, width, dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            best = 0.0
            for k in range(channels):
                total = 0.0
                for di in range(-half, half + 1):
                    for dj in range(-half, half + 1):
                        ii, jj = i + di, j + dj
                        inside = 0 <= ii < height and 0 <= jj < width
                        total += float(torch.exp(y[k, ii, jj] / m)) if inside else 1.0
                alpha = float(torch.exp(y[k, i, j] / m)) / total
                beta = float(y[k, i, j] / y[:, i, j].max()) if y[:, i, j].max() > 0 else 0.0
                best = max(best, alpha * beta)
            score[i, j] = best
    return score / score.sum()


def test_soft_detection_score_matches_the_paper_formula_and_is_differentiable():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(1, 3, 4, 5, generator=generator)
    score = soft_detection_score(features)
    assert score.shape == (1, 4, 5)
    torch.testing.assert_close(score[0].double(), _soft_score_by_definition(features, 3), atol=1e-6, rtol=1e-5)
    assert float(score.sum()) == pytest.approx(1.0, abs=1e-6)
    leaf = (features.abs() + 0.1).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: soft_detection_score(x, 3), (leaf,), eps=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        soft_detection_score(features, 2)
