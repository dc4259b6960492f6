"""Tensor helpers for the export graphs: the same arithmetic in eager mode and under the ONNX tracer.

Every size here may be a Python int (eager) or a 0-d int64 tensor (when ``torch.onnx.export``
traces with dynamic axes), so sizes only meet tensors through ``torch.minimum``/``torch.maximum``
and arithmetic, never through Python ``max``/``if``. Sampling is written as gathers of rows of a
``(C, H*W)`` table plus weighted sums (ONNX ``Gather``, ``Mul``, ``Add``): every runtime has those,
unlike ``GridSample`` or a deformable convolution.

Conventions: pixel coordinates are OpenCV's (the centre of pixel ``(i, j)`` is ``x = j, y = i``);
"zeros outside" means a tap outside the map contributes nothing (the DCN and
``grid_sample(padding_mode="zeros")`` convention).
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

Size = Union[int, torch.Tensor]
"""A spatial size: an int in eager mode, a 0-d int64 tensor while tracing."""


def as_long(value: Size) -> torch.Tensor:
    """A size as a 0-d int64 tensor (traced sizes pass through)."""
    return value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.long)


def clip(values: torch.Tensor, low: Size, high: Size) -> torch.Tensor:
    """``values`` clamped to ``[low, high]`` elementwise; the bounds may be traced sizes."""
    low_t = as_long(low).to(values.dtype)
    high_t = as_long(high).to(values.dtype)
    return torch.minimum(torch.maximum(values, low_t), high_t)


def larger(a: Size, b: Size) -> Size:
    """``max(a, b)`` of two sizes (a Python int when both are)."""
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return torch.maximum(as_long(a), as_long(b))


def round_up(size: Size, multiple: int) -> Size:
    """The smallest multiple of ``multiple`` that is >= ``size``."""
    return size + (multiple - size % multiple) % multiple


def pixel_grid(height: Size, width: Size, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (H, 1) and column indices (1, W), int64."""
    # torch.arange takes the 0-d tensor of a traced size; its stub only lists numbers
    ys = torch.arange(height, device=device).reshape(-1, 1)  # type: ignore[arg-type]
    xs = torch.arange(width, device=device).reshape(1, -1)  # type: ignore[arg-type]
    return ys, xs


def valid_region(height: Size, width: Size, padded_height: Size, padded_width: Size, border: int,
                 device: torch.device) -> torch.Tensor:
    """(H', W') bool over the padded map: inside the real (H, W) image and at least ``border``
    pixels from its edge (the Feature2D layer's ``valid`` without a user mask)."""
    ys, xs = pixel_grid(padded_height, padded_width, device)
    return (ys >= border) & (ys < height - border) & (xs >= border) & (xs < width - border)


def window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the (2r+1)^2 window, outside the map counting as -inf (ONNX ``MaxPool``)."""
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)


def iterative_nms(scores: torch.Tensor, radius: int, iterations: int = 2) -> torch.Tensor:
    """SuperPoint's and ALIKED's official NMS on (1, 1, H, W) scores -> bool (1, 1, H, W); the
    same rule as ``cvdeep.nets.base.iterative_nms``."""
    keep = scores == window_max(scores, radius)
    zero = torch.zeros_like(scores)
    for _ in range(iterations):
        suppressed = window_max(keep.to(scores.dtype), radius) > 0
        remaining = torch.where(suppressed, zero, scores)
        keep = keep | ((remaining == window_max(remaining, radius)) & ~suppressed)
    return keep


def top_candidates(scores: torch.Tensor, chosen: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen entries of flat ``scores`` (P,), best first, at most ``limit`` (all when <= 0).

    Returns (values (K,), indices (K,) int64). ONNX ``TopK`` puts the lower index first among
    equal values, which is the order of cvdeep's stable sort of raster-ordered candidates.
    """
    count = chosen.sum()
    k = count if limit <= 0 else torch.minimum(count, torch.tensor(limit, dtype=count.dtype))
    masked = torch.where(chosen, scores, torch.full_like(scores, float("-inf")))
    return torch.topk(masked, k)  # type: ignore[arg-type]  # torch takes a 0-d tensor k; its stub lists int


def sort_descending(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, order) of a 1-D tensor sorted best first, lower index first among ties (``TopK``)."""
    return torch.topk(values, values.shape[0])


def gather_columns(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Columns of a (C, P) table at flat int64 ``index`` (any shape) -> (C, index.numel())."""
    return table.index_select(1, index.reshape(-1))


def bilinear(table: torch.Tensor, height: Size, width: Size, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (C, N) of a (C, H*W) map at pixel positions ``ys``, ``xs`` (N,), zeros
    outside: each of the four corners counts only when it is inside the map."""
    y0, x0 = torch.floor(ys), torch.floor(xs)
    wy1, wx1 = ys - y0, xs - x0
    y0, x0 = y0.long(), x0.long()
    total = None
    for dy, wy in ((0, 1 - wy1), (1, wy1)):
        for dx, wx in ((0, 1 - wx1), (1, wx1)):
            y, x = y0 + dy, x0 + dx
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            index = clip(y, 0, height - 1) * width + clip(x, 0, width - 1)
            term = gather_columns(table, index) * (wy * wx * inside.to(wy.dtype)).to(table.dtype)
            total = term if total is None else total + term
    assert total is not None  # the loops above ran
    return total


def _cubic_weights(t: torch.Tensor, a: float = -0.75) -> list[torch.Tensor]:
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 for a fraction ``t`` (torch's A = -0.75)."""
    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic(table: torch.Tensor, height: Size, width: Size, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Bicubic samples (C, N) of a (C, H*W) map at pixel positions, zeros outside (each of the 16
    taps counts only when inside): ``grid_sample(mode="bicubic", padding_mode="zeros")``."""
    y0, x0 = torch.floor(ys), torch.floor(xs)
    wy, wx = _cubic_weights(ys - y0), _cubic_weights(xs - x0)
    y0, x0 = y0.long(), x0.long()
    total = None
    for i in range(4):
        y = y0 + (i - 1)
        inside_y = (y >= 0) & (y < height)
        row = clip(y, 0, height - 1) * width
        for j in range(4):
            x = x0 + (j - 1)
            inside = inside_y & (x >= 0) & (x < width)
            weight = (wy[i] * wx[j] * inside.to(ys.dtype)).to(table.dtype)
            term = gather_columns(table, row + clip(x, 0, width - 1)) * weight
            total = term if total is None else total + term
    assert total is not None  # the loops above ran
    return total


def deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor:
    """3x3 deformable convolution (DCNv1, stride 1, padding 1, one offset group) as gathers + one
    matrix product: the semantics of ``cvdeep.ops.deform_conv2d`` / torchvision.

    x (1, C, H, W); offset (1, 18, H, W), channel ``2k`` the vertical and ``2k+1`` the horizontal
    offset of tap ``k = 3i + j``; weight (Cout, C, 3, 3). Sampling positions are computed in float32
    whatever the input's precision.
    """
    channels = x.shape[1]
    height, width = x.shape[-2], x.shape[-1]
    table = x.reshape(channels, -1).float()
    pixels = torch.arange(height * width, device=x.device)
    base_y = (pixels // width).float() - 1.0
    base_x = (pixels % width).float() - 1.0
    taps = torch.arange(9, device=x.device)
    tap_y, tap_x = (taps // 3).float(), (taps % 3).float()
    offset = offset.float().reshape(9, 2, -1)
    ys = base_y[None, :] + tap_y[:, None] + offset[:, 0]
    xs = base_x[None, :] + tap_x[:, None] + offset[:, 1]
    columns = bilinear(table, height, width, ys.reshape(-1), xs.reshape(-1))  # (C, 9*H*W): channel, tap, pixel
    columns = columns.reshape(channels * 9, -1)
    out = weight.reshape(weight.shape[0], -1).float() @ columns
    if bias is not None:
        out = out + bias.float().reshape(-1, 1)
    return out.reshape(1, weight.shape[0], height, width).to(x.dtype)


def window_rows(table: torch.Tensor, height: Size, width: Size, xs: torch.Tensor, ys: torch.Tensor,
                size: int) -> torch.Tensor:
    """The ``size`` x ``size`` windows of a (C, H*W) map centred on integer pixels (N,), zeros
    outside the map, as rows (N, size*size*C) in (ky, kx, c) order: the input of a 'same'
    convolution evaluated at those pixels only."""
    reach = size // 2
    offsets = torch.arange(size, device=xs.device) - reach
    tap_y = (ys.reshape(-1, 1, 1) + offsets.reshape(1, -1, 1)).expand(-1, size, size)
    tap_x = (xs.reshape(-1, 1, 1) + offsets.reshape(1, 1, -1)).expand(-1, size, size)
    inside = (tap_y >= 0) & (tap_y < height) & (tap_x >= 0) & (tap_x < width)
    index = clip(tap_y, 0, height - 1) * width + clip(tap_x, 0, width - 1)
    values = gather_columns(table, index) * inside.reshape(1, -1).to(table.dtype)  # (C, N*size*size)
    return values.t().reshape(-1, size * size * table.shape[0])
