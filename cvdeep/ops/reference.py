"""Pure-torch reference implementations of every op.

They define the semantics the compiled kernels in csrc/ must reproduce, and they are
the fallback when the extension is not built. Clarity over speed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def nms(
    scores: torch.Tensor,
    radius: int,
    threshold: float = 0.0,
    max_keypoints: int = -1,
    border: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Exact hard non-maximum suppression on a (B, 1, H, W) score map.

    A pixel is kept when its score is > ``threshold``, it is the maximum of its
    (2r+1)x(2r+1) window (ties: every tied maximum is kept, as max-pool NMS does), and it
    lies at least ``border`` pixels from the image edge. NaN scores are never kept.
    Returns per image ``keypoints`` (N, 2) int64 (x, y) and ``scores`` (N,), sorted by
    descending score (ties by raster order), truncated to ``max_keypoints`` when > 0.
    """
    if scores.dim() != 4 or scores.shape[1] != 1:
        raise ValueError(f"scores must be (B, 1, H, W), got {tuple(scores.shape)}")
    batch, _, height, width = scores.shape
    if scores.numel() == 0:
        empty = [torch.zeros((0, 2), dtype=torch.long, device=scores.device)] * batch
        return empty, [scores.new_zeros(0)] * batch
    clean = scores.masked_fill(torch.isnan(scores), float("-inf"))  # keeps +-inf as they are
    if radius > 0:
        pooled = F.max_pool2d(clean, kernel_size=2 * radius + 1, stride=1, padding=radius)
        keep = clean == pooled
    else:
        keep = torch.ones_like(clean, dtype=torch.bool)
    keep &= clean > threshold
    if border > 0:
        edge = torch.zeros_like(keep)
        edge[..., border : height - border, border : width - border] = True
        keep &= edge
    keypoints, values = [], []
    for b in range(batch):
        ys, xs = torch.nonzero(keep[b, 0], as_tuple=True)
        s = clean[b, 0, ys, xs]
        order = torch.argsort(-s, stable=True)
        if max_keypoints > 0:
            order = order[:max_keypoints]
        keypoints.append(torch.stack([xs[order], ys[order]], dim=1))
        values.append(s[order])
    return keypoints, values


def soft_nms(
    keypoints: torch.Tensor,
    scores: torch.Tensor,
    sigma: float,
    max_keypoints: int = -1,
    min_score: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy Gaussian soft-NMS on points (Bodla et al. 2017, applied to keypoints).

    Repeatedly take the highest remaining score, then multiply every remaining score by
    ``1 - exp(-d^2 / (2 sigma^2))`` (d = distance to the taken point): the Gaussian
    overlap of two points is 1 when they coincide and 0 far apart, so close neighbours
    are suppressed and distant ones keep their score. Stops after
    ``max_keypoints`` picks (> 0) or when the best remaining score is <= ``min_score``.
    Non-finite scores (NaN, +-inf) never take part. Ties go to the lower index.
    Returns the picked keypoints (N, 2), their decayed scores (N,) and their indices
    into the input.
    """
    n = keypoints.shape[0]
    limit = n if max_keypoints <= 0 else min(n, max_keypoints)
    remaining = scores.detach().float().clone()
    alive = torch.isfinite(remaining)  # NaN / inf scores never take part
    points = keypoints.float()
    decay_scale = 1.0 / (2.0 * sigma * sigma)
    picked = []
    picked_scores = []
    for _ in range(limit):
        candidates = remaining.masked_fill(~alive, float("-inf"))
        best = int(torch.argmax(candidates)) if n else 0
        if n == 0 or not bool(alive[best]) or not bool(candidates[best] > min_score):
            break
        picked.append(best)
        picked_scores.append(remaining[best].clone())
        alive[best] = False
        d2 = ((points - points[best]) ** 2).sum(dim=1)
        remaining = torch.where(alive, remaining * -torch.expm1(-d2 * decay_scale), remaining)
    index = torch.tensor(picked, dtype=torch.long, device=keypoints.device)
    kept_scores = torch.stack(picked_scores) if picked_scores else scores.new_zeros(0).float()
    return keypoints[index], kept_scores.to(scores.dtype), index


def softargmax(
    scores: torch.Tensor,
    keypoints: torch.Tensor,
    window: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel refinement: soft-argmax of the scores in a (2w+1)^2 window around each keypoint.

    ``scores`` (H, W); ``keypoints`` (N, 2) integer-valued (x, y). Inside the window,
    weights are ``softmax((s - max) / temperature)`` over pixels inside the image;
    returns refined keypoints (N, 2) = keypoint + weighted mean offset, and the
    weighted-mean score at the window (the ALIKED / LIFT formulation). Differentiable
    with respect to ``scores``.
    """
    height, width = scores.shape[-2:]
    scores = scores.reshape(height, width)
    offsets = torch.arange(-window, window + 1, device=scores.device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    dx, dy = dx.reshape(-1), dy.reshape(-1)
    base = keypoints.round().long()
    xs = base[:, :1] + dx
    ys = base[:, 1:] + dy
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    patch = scores[ys.clamp(0, height - 1), xs.clamp(0, width - 1)]
    patch = patch.masked_fill(~inside, float("-inf"))
    peak = patch.max(dim=1, keepdim=True).values.detach()
    weights = torch.softmax((patch - peak) / temperature, dim=1)
    offset = torch.stack([(weights * dx).sum(1), (weights * dy).sum(1)], dim=1)
    refined = base.to(offset.dtype) + offset
    value = (weights * patch.masked_fill(~inside, 0.0)).sum(1)
    return refined, value


def sample_descriptors(descriptors: torch.Tensor, keypoints: torch.Tensor, stride: float = 1.0,
                       normalize: bool = True) -> torch.Tensor:
    """Bilinearly sample a (D, h, w) descriptor map at (N, 2) image-pixel keypoints.

    Map cell ``(i, j)`` is taken to sit at image pixel ``((j + 0.5) * stride - 0.5,
    (i + 0.5) * stride - 0.5)`` (cell centres, OpenCV pixel centres). Returns (N, D),
    L2-normalised when ``normalize``.
    """
    dim, h, w = descriptors.shape
    if keypoints.shape[0] == 0:
        return descriptors.new_zeros((0, dim))
    cells = (keypoints.to(descriptors.dtype) + 0.5) / stride - 0.5
    grid = torch.stack([(cells[:, 0] + 0.5) / w * 2 - 1, (cells[:, 1] + 0.5) / h * 2 - 1], dim=-1)
    sampled = F.grid_sample(descriptors[None], grid[None, None], mode="bilinear", padding_mode="border",
                            align_corners=False)
    sampled = sampled[0, :, 0].t()
    return F.normalize(sampled, dim=1) if normalize else sampled


def l2_match(
    d1: torch.Tensor,
    d2: torch.Tensor,
    k: int = 2,
    mutual: bool = False,
    ratio: float | None = None,
    max_distance: float | None = None,
    squared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of each row of ``d1`` (N, D) among rows of ``d2`` (M, D), L2 distance.

    Batched when both are (B, N, D) / (B, M, D). Returns ``indices`` (..., N, k) int64 and
    ``distances`` (..., N, k) float32 (Euclidean, or squared when ``squared``; ascending,
    ties by lower index). Missing entries (fewer than k candidates, or a non-finite
    distance, e.g. from NaN descriptors) are index -1 and distance inf. Filters act on the
    first neighbour only and set it to -1/inf when it fails, always on Euclidean
    distances: ``ratio`` (Lowe: d1st < ratio * d2nd, needs k >= 2), ``max_distance``
    (d1st <= max_distance), ``mutual`` (the first neighbour's own nearest row of ``d1``,
    lowest row among ties, is this row: OpenCV's crossCheck for k = 1).
    """
    if ratio is not None and k < 2:
        raise ValueError("the ratio test needs k >= 2")
    if d1.dim() == 3:
        pairs = [l2_match(a, b, k, mutual, ratio, max_distance, squared) for a, b in zip(d1, d2)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    n, m = d1.shape[0], d2.shape[0]
    kk = min(k, m)
    indices = torch.full((n, k), -1, dtype=torch.long, device=d1.device)
    distances = torch.full((n, k), float("inf"), dtype=torch.float32, device=d1.device)
    if n == 0 or m == 0:
        return indices, distances
    a, b = d1.float(), d2.float()
    dist2 = (a * a).sum(1, keepdim=True) - 2 * a @ b.t() + (b * b).sum(1)[None]
    dist2 = torch.where(torch.isfinite(dist2), dist2.clamp_min(0), float("inf"))
    # stable ascending sort gives the lowest index among ties
    order = torch.argsort(dist2, dim=1, stable=True)[:, :kk]
    indices[:, :kk] = order
    distances[:, :kk] = torch.gather(dist2, 1, order)
    indices[torch.isinf(distances)] = -1
    euclidean = distances.sqrt()
    reject = indices[:, 0] < 0
    if ratio is not None:
        reject |= ~(euclidean[:, 0] < ratio * euclidean[:, 1])
    if max_distance is not None:
        reject |= euclidean[:, 0] > max_distance
    if mutual:
        backward = torch.argsort(dist2, dim=0, stable=True)[0]  # (M,) best row for each column
        first = indices[:, 0].clamp_min(0)
        reject |= backward[first] != torch.arange(n, device=d1.device)
    if not squared:
        distances = euclidean
    indices[reject, 0] = -1
    distances[reject, 0] = float("inf")
    return indices, distances


def selu_(x: torch.Tensor) -> torch.Tensor:
    """SELU (Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017) of ``x`` in place,
    any shape -> ``x``: ``scale * x`` where positive, ``scale * alpha * (exp(x) - 1)`` elsewhere, with
    ``torch.nn.functional.selu``'s constants. The compiled CPU kernel evaluates exp by a polynomial
    (a few ulp from torch's) and runs on float32 tensors that need no gradient."""
    return F.selu(x, inplace=True)


def affine_prelu(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, slope: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``PReLU(x * scale + shift)`` per channel, channels innermost: x (..., C); scale, shift and
    slope (C,) -> (..., C), a new tensor or written into ``out`` (x's shape; e.g. a channel slice of
    a wider channels-last map, so that gated parts are concatenated without a copy). An InstanceNorm
    written as its per-channel affine form (``scale = 1 / std``, ``shift = -mean / std``) followed by
    a PReLU (He et al., ICCV 2015): DISK's gating. The compiled CPU kernel does it in one pass on
    contiguous float32 input."""
    y = torch.addcmul(shift, x, scale)
    gated = torch.where(y > 0, y, y * slope)
    return gated if out is None else out.copy_(gated)


def row_moments(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per row, the sums of ``x - shift`` and of its square over the row's pixels: x (R, W, C)
    (channels innermost), shift (C,) -> (R, 2, C) float64. Sums of whole rows, so the statistics
    of a map measured over bands of rows do not depend on the bands; a shift near the mean keeps
    ``variance = E[d^2] - E[d]^2`` free of cancellation. The compiled CPU kernel does it in one pass
    on contiguous float32 input, accumulating in double."""
    d = (x - shift).double()
    return torch.stack([d.sum(dim=1), d.square().sum(dim=1)], dim=1)


def upsample2_rows(x: torch.Tensor, start: int, stop: int, scale: torch.Tensor | None = None,
                   shift: torch.Tensor | None = None, slope: torch.Tensor | None = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``[start, stop)`` of ``F.interpolate(x, scale_factor=2, mode="bilinear")`` (align_corners
    False): x (1, C, h, w) -> (1, C, stop - start, 2w), reading only the source rows they need (a
    band of an upsampled map without the whole map); with ``scale``, ``shift`` and ``slope`` (C,)
    each, gated as they are written (``affine_prelu``). Here the same call on those rows plus one on
    each side, cropped: bit for bit ``F.interpolate``'s. Written into ``out`` when given (that shape;
    e.g. channels of a wider channels-last map). The compiled CPU kernel (channels-last float32)
    blends rows, then columns: equal to float rounding, the same whatever the bands."""
    height = x.shape[-2]
    lo, hi = max(0, start // 2 - 1), min(height, (stop - 1) // 2 + 2)
    up = F.interpolate(x[..., lo:hi, :], scale_factor=2, mode="bilinear", align_corners=False)
    up = up[..., start - 2 * lo : stop - 2 * lo, :]
    if scale is not None and shift is not None and slope is not None:
        up = affine_prelu(up.permute(0, 2, 3, 1), scale, shift, slope).permute(0, 3, 1, 2)
    return up if out is None else out.copy_(up)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention (Vaswani et al., NeurIPS 2017), ``softmax(q k^T / sqrt(D)) v``
    without a mask: q (..., Nq, D), k and v (..., Nk, D) -> (..., Nq, D), torch's
    ``F.scaled_dot_product_attention`` under the caller's autocast. On a CPU with AVX512-BF16, when
    the caller computes in bf16 (bf16 inputs, or float32 ones under bf16 autocast: ``precision="bf16"``)
    the compiled kernel runs instead: bf16 dot products into float32, the softmax in float32 with
    its numerators rounded to bf16 for the second product (as torch's bf16 path does), about twice
    torch's speed; float32 results for float32 inputs. Head dimensions: multiples of 16 up to 128."""
    return F.scaled_dot_product_attention(q, k, v)


def upsample2_moments(x: torch.Tensor, start: int, stop: int, shift: torch.Tensor) -> torch.Tensor:
    """``row_moments`` of rows ``[start, stop)`` of the x2 upsampling of x (1, C, h, w) (``upsample2_rows``):
    (stop - start, 2, C) float64, the statistics of a band of an upsampled map. The compiled CPU
    kernel never stores the band: each row is upsampled into a buffer that stays in cache."""
    return row_moments(upsample2_rows(x, start, stop).permute(0, 2, 3, 1)[0], shift)


Positions = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Where each output row (or column) of a bilinear resize reads: lower index, upper index (both
long), weight of the upper one (float), one entry per output position."""


def _resized_rows(table: torch.Tensor, width: int, rows: Positions, columns: Positions, ys: torch.Tensor,
                  xs: torch.Tensor) -> torch.Tensor:
    """Values (P, C) of the bilinear resize of a map given as rows ``table`` (h * w, C) of a ``width``-wide
    map, at integer output pixels ``(ys, xs)``: along rows, then along columns."""
    (top, bottom, wy), (left, right, wx) = rows, columns
    y0, y1, wy = top[ys] * width, bottom[ys] * width, wy[ys].to(table.dtype)[:, None]
    x0, x1, wx = left[xs], right[xs], wx[xs].to(table.dtype)[:, None]
    gather = table.index_select  # not table[index]: on CPU the gather of whole rows is ~10x faster
    at_left = torch.lerp(gather(0, y0 + x0), gather(0, y1 + x0), wy)
    at_right = torch.lerp(gather(0, y0 + x1), gather(0, y1 + x1), wy)
    return torch.lerp(at_left, at_right, wx)


def sample_levels(fine: torch.Tensor, fine_index: torch.Tensor,
                  coarse: Sequence[tuple[torch.Tensor, int, Positions, Positions]], corners: torch.Tensor,
                  weights: torch.Tensor, width: int) -> torch.Tensor:
    """Weighted sums (P, C) of L2-normalised feature vectors read from a multi-level map, without building it.

    The map (as ALIKED's) is, at every pixel of an ``H x width`` grid, the L2 normalisation of the
    concatenation of a full-resolution part and coarse levels resized bilinearly to the grid. Each
    output row ``p`` is ``sum_k weights[k, p] * v(corners[k, p]) / max(|v|, 1e-12)`` where ``v(i)``
    is that concatenation at pixel index ``i = y * width + x``: the bilinear sample of the map for
    ``K = 4`` corners, one normalised vector for ``K = 1``.

    ``fine`` (N, C0): rows of the full-resolution part, ``fine_index`` (K, P) long: its row for each
    corner. ``coarse``: per level ``(table (h * w, C_l), w, row positions, column positions)``, the
    positions of the resize to the grid (``cvdeep.nets.bands.resize_positions``). ``corners`` (K, P)
    long, ``weights`` (K, P) float. Returns ``C0 + sum C_l`` columns, in that order.
    """
    count = corners.shape[1]
    flat = corners.reshape(-1)
    ys, xs = flat // width, flat % width
    parts = [fine.index_select(0, fine_index.reshape(-1))]
    parts += [_resized_rows(table, level_width, rows, columns, ys, xs)
              for table, level_width, rows, columns in coarse]
    square = sum(torch.linalg.vector_norm(part, dim=1, keepdim=True).square_() for part in parts)
    scale = weights.reshape(-1, 1).to(fine.dtype) / square.sqrt_().clamp_min_(1e-12)  # F.normalize's eps
    return torch.cat([part.mul_(scale).reshape(len(corners), count, part.shape[1]).sum(0) for part in parts], dim=1)
