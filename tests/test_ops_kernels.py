"""Compiled kernels (torch.ops.cvdeep.*) against their pure-torch references.

Random inputs, hostile ones (ties, NaN/inf, empty, 1x1, huge radii, borders) and real
ones (a Harris response and SIFT descriptors of the shared images). Every vector path
of the L2 kernel (AVX-512, AVX2, generic) is checked, not only the one this CPU picks.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from cvdeep import ops
from cvdeep.ops import reference


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    if not ops.build_info():
        if os.environ.get("CI"):
            pytest.fail("cvdeep._C is not built in CI")
        pytest.skip("cvdeep._C is not built (python setup.py build_ext --inplace)")


def _same_nms(scores: torch.Tensor, radius: int, threshold: float = 0.0, max_keypoints: int = -1, border: int = 0):
    got_k, got_s = torch.ops.cvdeep.nms(scores, radius, threshold, max_keypoints, border)
    want_k, want_s = reference.nms(scores, radius, threshold, max_keypoints, border)
    assert len(got_k) == len(want_k) == scores.shape[0]
    for gk, gs, wk, ws in zip(got_k, got_s, want_k, want_s):
        assert torch.equal(gk, wk)
        assert torch.equal(gs, ws)
        assert gs.dtype == scores.dtype
    return got_k


def _harris(image: np.ndarray, size: int = 256) -> torch.Tensor:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:size, :size].astype(np.float32)
    return torch.from_numpy(cv2.cornerHarris(gray, 3, 3, 0.04))[None, None]


# --- nms ---

@pytest.mark.parametrize("radius", [0, 1, 2, 4, 8, 9, 20])
def test_nms_random_maps(radius: int) -> None:
    torch.manual_seed(radius)
    scores = torch.rand(2, 1, 61, 87)
    kept = _same_nms(scores, radius, threshold=0.05)
    assert len(kept[0]) > 0


@pytest.mark.parametrize("radius", [1, 3, 12])
def test_nms_ties_keep_every_tied_maximum_in_raster_order(radius: int) -> None:
    torch.manual_seed(0)
    scores = torch.randint(0, 3, (1, 1, 40, 33)).float()
    _same_nms(scores, radius, threshold=-1.0)
    _same_nms(scores, radius, threshold=0.5, max_keypoints=7)


def test_nms_nan_and_inf_scores() -> None:
    torch.manual_seed(1)
    scores = torch.rand(1, 1, 30, 30)
    scores[0, 0, 3, 4] = float("nan")
    scores[0, 0, 10, 10] = float("inf")
    scores[0, 0, 20, 5] = float("-inf")
    scores[0, 0, 25, :] = float("nan")
    kept = _same_nms(scores, 2, threshold=0.1)[0]
    assert [10, 10] in kept.tolist()


@pytest.mark.parametrize(
    "shape,radius,border",
    [((1, 1, 0, 0), 2, 0), ((3, 1, 0, 5), 1, 0), ((1, 1, 1, 1), 3, 0), ((1, 1, 1, 1), 0, 1),
     ((1, 1, 5, 7), 10**6, 0), ((1, 1, 9, 9), 2, 4), ((1, 1, 9, 9), 2, 5), ((2, 1, 16, 16), 30, 2)],
)
def test_nms_degenerate_shapes_radii_and_borders(shape, radius: int, border: int) -> None:
    torch.manual_seed(2)
    _same_nms(torch.rand(shape), radius, threshold=-1.0, border=border)


def test_nms_double_precision_and_max_keypoints() -> None:
    torch.manual_seed(3)
    scores = torch.rand(1, 1, 50, 40, dtype=torch.float64)
    kept = _same_nms(scores, 2, max_keypoints=10)
    assert len(kept[0]) == 10


def test_nms_real_harris_response(graf_pair) -> None:
    scores = _harris(graf_pair[0])
    kept = _same_nms(scores, 4, threshold=1e-6, border=4)
    assert len(kept[0]) > 50


# --- soft-NMS ---

def _same_soft_nms(points: torch.Tensor, scores: torch.Tensor, sigma: float, max_keypoints: int = -1,
                   min_score: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    got = torch.ops.cvdeep.soft_nms(points, scores, sigma, max_keypoints, min_score)
    want = reference.soft_nms(points, scores, sigma, max_keypoints, min_score)
    assert torch.equal(got[2], want[2])
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-7)
    return got


@pytest.mark.parametrize("sigma,limit", [(0.5, -1), (3.0, -1), (8.0, 50), (100.0, 20)])
def test_soft_nms_random_points(sigma: float, limit: int) -> None:
    torch.manual_seed(4)
    points = torch.rand(300, 2) * 100
    scores = torch.rand(300)
    kept = _same_soft_nms(points, scores, sigma, limit, min_score=0.01)
    assert 0 < len(kept[2]) <= (limit if limit > 0 else 300)


def test_soft_nms_non_finite_ties_and_empty() -> None:
    points = torch.tensor([[0.0, 0.0], [50.0, 50.0], [100.0, 0.0], [0.0, 100.0], [60.0, 60.0]])
    scores = torch.tensor([0.5, float("nan"), 0.5, float("inf"), 0.9])
    kept = _same_soft_nms(points, scores, 1.0)
    assert kept[2].tolist() == [4, 0, 2]  # NaN and inf never picked; equal scores by index
    _same_soft_nms(torch.zeros(0, 2), torch.zeros(0), 2.0)
    _same_soft_nms(torch.zeros(1, 2), torch.ones(1), 2.0)


def test_soft_nms_on_real_corners(graf_pair) -> None:
    keypoints, scores = reference.nms(_harris(graf_pair[0]), 2, threshold=1e-6)
    _same_soft_nms(keypoints[0].float(), scores[0] / scores[0].max(), sigma=4.0, max_keypoints=200)


# --- softargmax ---

@pytest.mark.parametrize("window,temperature", [(1, 1.0), (2, 0.1), (3, 5.0), (0, 1.0)])
def test_softargmax_matches_reference(window: int, temperature: float) -> None:
    torch.manual_seed(5)
    scores = torch.rand(1, 1, 20, 30)
    keypoints = torch.tensor([[0.0, 0.0], [29.0, 19.0], [10.4, 7.6], [15.5, 2.5], [3.0, 18.0], [29.0, 0.0]])
    got = torch.ops.cvdeep.softargmax(scores, keypoints, window, temperature)
    want = reference.softargmax(scores, keypoints, window, temperature)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_softargmax_gradients_double_precision() -> None:
    torch.manual_seed(6)
    scores = torch.rand(9, 11, dtype=torch.float64, requires_grad=True)
    keypoints = torch.tensor([[0.0, 0.0], [5.0, 4.0], [6.0, 5.0], [10.0, 8.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: ops._SoftArgmax.apply(s, keypoints, 2, 0.5), (scores,))
    got = ops._SoftArgmax.apply(scores, keypoints, 2, 0.5)
    want = reference.softargmax(scores, keypoints, 2, 0.5)
    weights = torch.rand(4, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    g_got = torch.autograd.grad((got[0] * weights[0]).sum() + (got[1] * weights[1]).sum(), scores)[0]
    g_want = torch.autograd.grad((want[0] * weights[0]).sum() + (want[1] * weights[1]).sum(), scores)[0]
    torch.testing.assert_close(g_got, g_want)


# --- l2_match ---

ISAS = ["avx512", "avx2", "generic"]


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch) -> str:
    monkeypatch.setenv("CVDEEP_CPU_ISA", request.param)
    return request.param


def _same_match(d1: torch.Tensor, d2: torch.Tensor, **options) -> tuple[torch.Tensor, torch.Tensor]:
    args = (options.get("k", 2), options.get("mutual", False), options.get("ratio"), options.get("max_distance"),
            options.get("squared", False))
    got = torch.ops.cvdeep.l2_match(d1, d2, *args)
    want = reference.l2_match(d1, d2, *args)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-3)
    return got


@pytest.mark.parametrize(
    "n,m,d,k", [(1, 1, 1, 1), (37, 53, 7, 3), (100, 3, 128, 5), (300, 500, 128, 2), (129, 70, 256, 4), (50, 40, 33, 1)]
)
def test_l2_match_random_every_vector_path(isa: str, n: int, m: int, d: int, k: int) -> None:
    torch.manual_seed(n * m + d)
    d1, d2 = torch.randn(n, d), torch.randn(m, d)
    _same_match(d1, d2, k=k)
    _same_match(d1, d2, k=k, mutual=True, squared=True)
    if k >= 2:
        _same_match(d1, d2, k=k, mutual=True, ratio=0.9, max_distance=15.0)


def test_l2_match_ties_go_to_the_lower_index(isa: str) -> None:
    torch.manual_seed(7)
    base = torch.randint(0, 3, (60, 16)).float()
    d2 = torch.cat([base, base])  # every row duplicated: exact ties everywhere
    indices, _ = _same_match(base, d2, k=3, mutual=True)
    assert (indices[:, 0] < 60).all() and (indices[:, 1] >= 60).all()


def test_l2_match_non_finite_empty_and_short() -> None:
    torch.manual_seed(8)
    d1, d2 = torch.randn(20, 8), torch.randn(10, 8)
    d1[3, 2] = float("nan")
    d2[4, 0] = float("inf")
    d2[7, 1] = float("nan")
    indices, distances = _same_match(d1, d2, k=3, mutual=True)
    assert (indices[3] == -1).all() and torch.isinf(distances[3]).all()
    assert not ((indices == 4) | (indices == 7)).any()
    _same_match(torch.zeros(0, 8), d2, k=2)
    _same_match(d1, torch.zeros(0, 8), k=2)
    indices, _ = _same_match(torch.randn(5, 8), torch.randn(2, 8), k=4)
    assert (indices[:, 2:] == -1).all()


def test_l2_match_batched_pairs() -> None:
    torch.manual_seed(9)
    d1, d2 = torch.randn(3, 40, 32), torch.randn(3, 55, 32)
    indices, distances = _same_match(d1, d2, k=2, mutual=True)
    assert indices.shape == (3, 40, 2)
    single = torch.ops.cvdeep.l2_match(d1[1], d2[1], 2, True, None, None, False)
    assert torch.equal(indices[1], single[0])


def test_l2_match_real_sift_descriptors(graf_pair) -> None:
    sift = cv2.SIFT_create(nfeatures=1500)
    _, desc1 = sift.detectAndCompute(cv2.cvtColor(graf_pair[0], cv2.COLOR_BGR2GRAY), None)
    _, desc2 = sift.detectAndCompute(cv2.cvtColor(graf_pair[1], cv2.COLOR_BGR2GRAY), None)
    d1, d2 = torch.from_numpy(desc1), torch.from_numpy(desc2)
    # Integer-valued SIFT descriptors: every squared distance is exact, so indices and
    # squared distances are identical; square roots may differ in the last bit (torch's
    # vectorised sqrt is not always correctly rounded).
    got = torch.ops.cvdeep.l2_match(d1, d2, 2, True, 0.8, None, True)
    want = reference.l2_match(d1, d2, 2, True, 0.8, None, True)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])
    assert (got[0][:, 0] >= 0).sum() > 50
    euclidean = torch.ops.cvdeep.l2_match(d1, d2, 2, True, 0.8, None, False)
    torch.testing.assert_close(euclidean[1], want[1].sqrt(), rtol=1e-6, atol=0)


# --- selu_ ---


def test_selu_matches_torch_on_every_vector_path(isa: str) -> None:
    """Within a few float32 ulp of torch's SELU over the whole range, tails of every length, and
    torch's answers exactly at 0, +-inf and NaN."""
    torch.manual_seed(11)
    values = torch.cat([torch.randn(10_000) * 4, torch.linspace(-120, 5, 20_001), torch.randn(1000) * 1e-6,
                        torch.tensor([0.0, -0.0, 1e-30, -1e-30, -87.0, -87.5, -88.0, -103.0, 88.0,
                                      float("inf"), float("-inf"), float("nan")])])
    for count in (values.numel(), 1, 3, 15, 17, 33):
        x = values[:count].clone()
        want = torch.nn.functional.selu(x.double()).float()
        got = torch.ops.cvdeep.selu_(x)
        assert got.data_ptr() == x.data_ptr()
        torch.testing.assert_close(got, want, rtol=4e-7, atol=1e-7, equal_nan=True)
    special = torch.tensor([0.0, float("inf"), float("-inf"), float("nan")])
    torch.testing.assert_close(torch.ops.cvdeep.selu_(special.clone()), torch.nn.functional.selu(special),
                               rtol=0, atol=0, equal_nan=True)


def test_selu_op_runs_the_kernel_only_where_it_applies() -> None:
    """cvdeep.ops.selu_: in place on a channels_last CPU map; a gradient, float64 or a strided
    view run torch's own (same numbers, no warning)."""
    torch.manual_seed(12)
    x = torch.randn(1, 8, 9, 7).contiguous(memory_format=torch.channels_last)
    want = torch.nn.functional.selu(x)
    assert ops.selu_(x) is x
    torch.testing.assert_close(x, want, rtol=4e-7, atol=1e-7)
    strided = torch.randn(6, 10)[:, ::2]
    torch.testing.assert_close(ops.selu_(strided.clone()), torch.nn.functional.selu(strided))
    double = torch.randn(5, dtype=torch.float64)
    assert torch.equal(ops.selu_(double.clone()), torch.nn.functional.selu(double))
    leaf = torch.randn(5, requires_grad=True)
    out = ops.selu_(leaf * 1.0)
    out.sum().backward()
    assert leaf.grad is not None


# --- sample_levels ---


def _levels_problem(seed: int, height: int, width: int, count: int, corners: int):
    from cvdeep.nets.bands import resize_positions

    torch.manual_seed(seed)
    fine = torch.randn(height * width, 8)
    coarse = []
    for factor, channels in ((2, 8), (8, 16), (32, 8)):
        h, w = max(1, height // factor), max(1, width // factor)
        coarse.append((torch.randn(h * w, channels), w, *resize_positions((h, w), (height, width), True)))
    index = torch.randint(0, height * width, (corners, count))
    weights = torch.rand(corners, count)
    return fine, coarse, index, weights


@pytest.mark.parametrize("height,width,count,corners", [(64, 96, 500, 4), (33, 17, 7, 1), (5, 3, 1, 4), (40, 64, 0, 4)])
def test_sample_levels_matches_the_reference_on_every_vector_path(isa: str, height: int, width: int, count: int,
                                                                  corners: int) -> None:
    fine, coarse, index, weights = _levels_problem(height + count, height, width, count, corners)
    fine_index = index.flip(0)  # any rows of fine, not only the pixel's own
    got = ops.sample_levels(fine, fine_index, coarse, index, weights, width)
    want = reference.sample_levels(fine, fine_index, coarse, index, weights, width)
    assert got.shape == (count, 40)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sample_levels_rejects_indices_outside_the_maps() -> None:
    fine, coarse, index, weights = _levels_problem(3, 16, 16, 10, 4)
    tables = [level[0] for level in coarse]
    widths = [level[1] for level in coarse]
    positions = [tensor for level in coarse for tensor in (*level[2], *level[3])]
    bad = index.clone()
    bad[0, 0] = 16 * 16
    with pytest.raises(RuntimeError, match="corner outside"):
        torch.ops.cvdeep.sample_levels(fine, index, tables, widths, positions, bad, weights, 16)
    with pytest.raises(RuntimeError, match="fine_index outside"):
        torch.ops.cvdeep.sample_levels(fine, bad, tables, widths, positions, index, weights, 16)
    with pytest.raises(RuntimeError, match="shaped as corners"):
        torch.ops.cvdeep.sample_levels(fine, index, tables, widths, positions, index, weights[:, :3], 16)
