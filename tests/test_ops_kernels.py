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


# --- DISK's gating: affine_prelu, row_moments, upsample2_rows ---


def _gate(channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A per-channel scale, shift and PReLU slope (some slopes negative or above 1, as learned ones may be)."""
    return torch.rand(channels) * 3 + 0.1, torch.randn(channels), torch.randn(channels)


@pytest.mark.parametrize("pixels,channels", [(1000, 64), (333, 16), (77, 80), (50, 5), (1, 1), (0, 32)])
def test_affine_prelu_matches_the_reference_on_every_vector_path(isa: str, pixels: int, channels: int) -> None:
    """Channel counts that fill vectors, leave a tail, or fit none; NaN stays NaN, +-inf keep their sign."""
    torch.manual_seed(pixels + channels)
    x = torch.randn(pixels, channels) * 5
    if x.numel() > 3:
        x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), float("-inf")])
    scale, shift, slope = _gate(channels)
    got = torch.ops.cvdeep.affine_prelu(x, scale, shift, slope)
    want = reference.affine_prelu(x, scale, shift, slope)
    assert got.shape == x.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=2e-7, atol=2e-6, equal_nan=True)


def test_affine_prelu_op_runs_the_kernel_only_where_it_applies() -> None:
    """cvdeep.ops.affine_prelu: the kernel on a contiguous float32 CPU map (channels innermost); a
    strided view, float64 or a gradient run the reference (same numbers, no warning)."""
    torch.manual_seed(21)
    scale, shift, slope = _gate(8)
    x = torch.randn(1, 8, 9, 7).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    torch.testing.assert_close(ops.affine_prelu(x, scale, shift, slope), reference.affine_prelu(x, scale, shift, slope))
    strided = torch.randn(1, 8, 9, 7).permute(0, 2, 3, 1)
    torch.testing.assert_close(ops.affine_prelu(strided, scale, shift, slope),
                               reference.affine_prelu(strided, scale, shift, slope))
    double = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(ops.affine_prelu(double, scale.double(), shift.double(), slope.double()),
                               reference.affine_prelu(double, scale.double(), shift.double(), slope.double()))
    leaf = torch.randn(4, 8, requires_grad=True)
    ops.affine_prelu(leaf, scale, shift, slope).sum().backward()
    assert leaf.grad is not None
    with pytest.raises(RuntimeError, match="shape"):
        torch.ops.cvdeep.affine_prelu(torch.randn(4, 8), scale[:7], shift, slope)


@pytest.mark.parametrize("kernel", [True, False])
def test_affine_prelu_writes_into_a_channel_slice_of_a_wider_map(kernel: bool) -> None:
    """``out=``: two gated parts side by side in one channels-last map, as a concatenation would
    give them; the channels around the slice untouched. A destination without equal pixel steps
    runs the reference."""
    torch.manual_seed(22)
    parts = [torch.randn(1, channels, 6, 5).contiguous(memory_format=torch.channels_last) for channels in (16, 5)]
    gates = [_gate(part.shape[1]) for part in parts]
    joined = torch.full((1, 23, 6, 5), 7.0).contiguous(memory_format=torch.channels_last)
    first = 1
    for part, gate in zip(parts, gates):
        rows = part.permute(0, 2, 3, 1)
        target = joined[:, first : first + part.shape[1]].permute(0, 2, 3, 1)
        if kernel:
            torch.ops.cvdeep.affine_prelu_into(rows, *gate, target)
        else:
            ops.affine_prelu(rows, *gate, out=target)
        first += part.shape[1]
    want = torch.cat([reference.affine_prelu(part.permute(0, 2, 3, 1), *gate).permute(0, 3, 1, 2)
                      for part, gate in zip(parts, gates)], dim=1)
    torch.testing.assert_close(joined[:, 1:22], want, rtol=2e-7, atol=2e-6)
    assert torch.equal(joined[:, 0], torch.full((1, 6, 5), 7.0)) and torch.equal(joined[:, 22], joined[:, 0])
    transposed = torch.empty(1, 5, 6, 16).transpose(1, 2)  # pixels not at equal steps
    ops.affine_prelu(parts[0].permute(0, 2, 3, 1), *gates[0], out=transposed)
    torch.testing.assert_close(transposed, reference.affine_prelu(parts[0].permute(0, 2, 3, 1), *gates[0]))
    with pytest.raises(RuntimeError, match="equal pixel steps"):
        torch.ops.cvdeep.affine_prelu_into(parts[0].permute(0, 2, 3, 1), *gates[0], transposed)


@pytest.mark.parametrize("rows,width,channels", [(7, 640, 64), (3, 33, 16), (5, 9, 5), (1, 1, 1)])
def test_row_moments_match_the_reference_on_every_vector_path(isa: str, rows: int, width: int, channels: int) -> None:
    """Sums of x - shift and of its square per row in double: a map of large mean and small spread
    keeps its variance (the shift removes the cancellation)."""
    torch.manual_seed(rows * width)
    x = torch.randn(rows, width, channels) * 0.01 + 1000.0
    shift = x[0].mean(dim=0)
    got = torch.ops.cvdeep.row_moments(x, shift)
    want = reference.row_moments(x, shift)
    assert got.dtype == torch.float64 and got.shape == (rows, 2, channels)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    if rows * width > 100:
        d = (x.double() - x.double().mean(dim=(0, 1))).square().mean(dim=(0, 1))
        count = rows * width
        variance = got[:, 1].sum(0) / count - (got[:, 0].sum(0) / count) ** 2
        torch.testing.assert_close(variance, d, rtol=1e-3, atol=0)


@pytest.mark.parametrize("height,width,channels", [(30, 40, 64), (7, 5, 16), (1, 1, 3), (2, 9, 20)])
def test_upsample2_rows_match_interpolate_on_every_vector_path(isa: str, height: int, width: int,
                                                              channels: int) -> None:
    """Every band of rows of the x2 bilinear upsampling (first and last rows included), plain, gated
    and gated into channels of a wider map, and its row moments, against F.interpolate of the whole
    map to float rounding."""
    torch.manual_seed(height * width + channels)
    x = torch.randn(1, channels, height, width).contiguous(memory_format=torch.channels_last)
    whole = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    scale, shift, slope = _gate(channels)
    gated = reference.affine_prelu(whole.permute(0, 2, 3, 1), scale, shift, slope).permute(0, 3, 1, 2)
    for start, stop in [(0, 2 * height), (0, 1), (2 * height - 1, 2 * height), (1, min(4, 2 * height)), (3, 3)]:
        if start > stop or stop > 2 * height:
            continue
        got = ops.upsample2_rows(x, start, stop)
        assert got.is_contiguous(memory_format=torch.channels_last) and got.stride(0) == got[0].numel()
        torch.testing.assert_close(got, whole[..., start:stop, :], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ops.upsample2_rows(x, start, stop, scale, shift, slope), gated[..., start:stop, :],
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reference.upsample2_rows(x, 1, 5), whole[..., 1:5, :], rtol=0, atol=0)
    joined = torch.zeros(1, channels + 3, 2 * height, 2 * width).contiguous(memory_format=torch.channels_last)
    ops.upsample2_rows(x, 0, 2 * height, scale, shift, slope, out=joined[:, 2 : 2 + channels])
    torch.testing.assert_close(joined[:, 2 : 2 + channels], gated, rtol=1e-5, atol=1e-5)
    assert not joined[:, :2].any() and not joined[:, -1].any()
    shift = whole[0, :, 0].mean(dim=1)
    for start, stop in [(0, 2 * height), (1, min(4, 2 * height))]:
        moments = ops.upsample2_moments(x, start, stop, shift)
        torch.testing.assert_close(moments, reference.row_moments(whole[0, :, start:stop].permute(1, 2, 0), shift),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.cvdeep.upsample2_rows(x[0].permute(1, 2, 0), 0, 2 * height + 1)


# --- attention (bf16, AVX512-BF16) ---

needs_bf16_attention = pytest.mark.skipif(not ops.build_info().get("bf16_attention"),
                                          reason="this CPU has no AVX512-BF16")


@needs_bf16_attention
@pytest.mark.parametrize("heads,queries,keys,dim", [(4, 300, 517, 64), (1, 64, 64, 96), (2, 7, 1, 16), (1, 1, 70, 128),
                                                    (3, 129, 33, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bf16_attention_is_as_close_to_float32_as_torchs_bf16(heads: int, queries: int, keys: int, dim: int,
                                                             dtype: torch.dtype) -> None:
    """Against float32 SDPA on the same (bf16-rounded) inputs: within the error torch's own bf16 SDPA
    makes, whatever the key count (padding to whole vectors masked) and head size."""
    torch.manual_seed(queries + keys + dim)
    q, k, v = (torch.randn(1, heads, n, dim).bfloat16() * 2 for n in (queries, keys, keys))
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torchs = torch.nn.functional.scaled_dot_product_attention(q, k, v).float()
    got = torch.ops.cvdeep.attention_bf16(q.to(dtype), k.to(dtype), v.to(dtype))
    assert got.dtype == torch.float32 and got.shape == exact.shape
    bound = max(float((torchs - exact).abs().max()), 1e-3)
    assert float((got - exact).abs().max()) <= 1.5 * bound
    assert float((got - exact).abs().mean()) <= float((torchs - exact).abs().mean()) * 1.5 + 1e-5


@needs_bf16_attention
def test_bf16_attention_propagates_nan_and_infinite_scores_as_softmax_does() -> None:
    """A NaN score, or an infinite row maximum (inf - inf), makes the row NaN, as torch's softmax
    does; infinities in V reach the output as in SDPA; padded keys (-inf) weigh exactly 0."""
    torch.manual_seed(41)
    q, k, v = (torch.randn(1, 1, n, 64) for n in (5, 20, 20))
    nan_key = k.clone()
    nan_key[0, 0, 2, 3] = float("nan")
    assert torch.isnan(torch.ops.cvdeep.attention_bf16(q, nan_key, v)).all()
    inf_query = q.clone()
    inf_query[0, 0, 1] = float("inf")
    got = torch.ops.cvdeep.attention_bf16(inf_query, k, v)
    assert torch.isnan(got[0, 0, 1]).all() and torch.isfinite(got[0, 0, [0, 2, 3, 4]]).all()
    inf_value = v.clone()
    inf_value[0, 0, 4, 7] = float("inf")
    want = torch.nn.functional.scaled_dot_product_attention(q, k, inf_value)
    got = torch.ops.cvdeep.attention_bf16(q, k, inf_value)
    assert torch.equal(torch.isinf(got), torch.isinf(want)) and torch.equal(torch.isnan(got), torch.isnan(want))
    one = torch.ops.cvdeep.attention_bf16(q, k[..., :1, :], v[..., :1, :])  # one key among 64 padded
    torch.testing.assert_close(one, v[..., :1, :].bfloat16().float().expand_as(one), rtol=0, atol=0)


@needs_bf16_attention
def test_attention_op_runs_the_kernel_only_where_bf16_was_asked() -> None:
    """cvdeep.ops.attention: torch's SDPA in float32 (bit for bit), cvdeep's kernel under bf16 autocast
    (float32 results) or for bf16 inputs (bf16 results), torch's for an unsupported head size or a
    gradient."""
    from cvdeep.precision import network_precision

    torch.manual_seed(31)
    q, k, v = (torch.randn(1, 4, n, 64) for n in (40, 50, 50))
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.equal(ops.attention(q, k, v), exact)
    with network_precision("bf16", "cpu"):
        fast = ops.attention(q, k, v)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)
    torch.testing.assert_close(fast, exact, atol=3e-2, rtol=0)
    assert ops.attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).dtype == torch.bfloat16
    odd = [t[..., :8] for t in (q, k, v)]
    with network_precision("bf16", "cpu"):
        torch.testing.assert_close(ops.attention(*odd), torch.nn.functional.scaled_dot_product_attention(
            *(t.bfloat16() for t in odd)).float())
    with network_precision("bf16", "cpu"):
        assert ops.attention(q[..., :0, :], k, v).shape == (1, 4, 0, 64)  # no queries: torch's, empty
    leaf = q.clone().requires_grad_(True)
    with network_precision("bf16", "cpu"):
        ops.attention(leaf, k, v).sum().backward()
    assert leaf.grad is not None
    with pytest.raises(RuntimeError, match="multiple of 16"):
        torch.ops.cvdeep.attention_bf16(*(t.contiguous() for t in odd))
