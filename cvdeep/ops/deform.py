"""Deformable convolution (DCNv1/DCNv2) with the semantics of ``torchvision.ops.deform_conv2d``.

cvdeep never imports torchvision: ``deform_conv2d`` runs the compiled
``torch.ops.cvdeep.deform_conv2d`` kernel (csrc/cpu/deform_conv.cpp, csrc/cuda/deform_conv.cu)
when the extension is built and ``deform_conv2d_reference`` otherwise.

Semantics (the ones every pretrained DCN checkpoint assumes):

- ``offset`` is ``(B, 2 * offset_groups * kh * kw, Hout, Wout)``; for offset group ``g``
  and kernel tap ``k = i * kw + j`` channel ``2 * (g * kh * kw + k)`` is the vertical
  offset ``dy`` and the next channel the horizontal ``dx``.
- Tap ``(i, j)`` of output pixel ``(oy, ox)`` reads the input at
  ``y = oy * stride_h - pad_h + i * dilation_h + dy`` and
  ``x = ox * stride_w - pad_w + j * dilation_w + dx`` (pixel units), bilinearly, with
  zeros outside the image (each of the four corners counts only when it is inside).
- ``mask`` (DCNv2 modulation) is ``(B, offset_groups * kh * kw, Hout, Wout)`` and
  multiplies each sampled value; input channels are split evenly over offset groups.
- ``weight`` is ``(Cout, Cin / groups, kh, kw)`` as in a grouped ``nn.Conv2d``.

Only inference is supported by the compiled kernels (no autograd formula is
registered); the reference is differentiable.
"""
from __future__ import annotations

import torch
from torch.nn.modules.utils import _pair

from ._dispatch import kernel_or_reference


def _pairs(
    stride: int | tuple[int, int], padding: int | tuple[int, int], dilation: int | tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(vertical, horizontal) stride, padding and dilation; an int stands for both."""
    return _pair(stride), _pair(padding), _pair(dilation)


def _check_shapes(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int, int]:
    """Validate the arguments; returns (groups, offset_groups, out_h, out_w)."""
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"deform_conv2d: input, offset and weight must be 4-D, got {tuple(input.shape)}, "
            f"{tuple(offset.shape)}, {tuple(weight.shape)}"
        )
    batch, channels, height, width = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    if group_channels == 0 or channels % group_channels:
        raise ValueError(f"deform_conv2d: weight takes {group_channels} channels per group, input has {channels}")
    groups = channels // group_channels
    if out_channels % groups:
        raise ValueError(f"deform_conv2d: {out_channels} output channels do not split into {groups} groups")
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = kh * kw
    if offset.shape[1] % (2 * taps) or offset.shape[1] == 0:
        raise ValueError(f"deform_conv2d: offset has {offset.shape[1]} channels, expected a multiple of 2*{taps}")
    offset_groups = offset.shape[1] // (2 * taps)
    if channels % offset_groups:
        raise ValueError(f"deform_conv2d: {channels} input channels do not split into {offset_groups} offset groups")
    if tuple(offset.shape) != (batch, 2 * offset_groups * taps, out_h, out_w):
        raise ValueError(
            f"deform_conv2d: offset {tuple(offset.shape)} does not match the output size ({out_h}, {out_w})"
        )
    if mask is not None and tuple(mask.shape) != (batch, offset_groups * taps, out_h, out_w):
        raise ValueError(
            f"deform_conv2d: mask {tuple(mask.shape)} should be {(batch, offset_groups * taps, out_h, out_w)}"
        )
    return groups, offset_groups, out_h, out_w


def bilinear_corners(
    ys: torch.Tensor, xs: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (4, P) into an (H*W)-row map and weights (4, P) of bilinear sampling at pixel positions.

    Zeros outside: a corner outside the map gets weight 0 (and a clamped, valid index),
    which is the DCN convention, i.e. ``grid_sample(align_corners=True,
    padding_mode="zeros")`` in pixel units.
    """
    y0, x0 = ys.floor(), xs.floor()
    wy1, wx1 = ys - y0, xs - x0
    y0, x0 = y0.long(), x0.long()
    indices, weights = [], []
    for dy, wy in ((0, 1 - wy1), (1, wy1)):
        for dx, wx in ((0, 1 - wx1), (1, wx1)):
            y, x = y0 + dy, x0 + dx
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            indices.append(y.clamp(0, height - 1) * width + x.clamp(0, width - 1))
            weights.append(wy * wx * inside)
    return torch.stack(indices), torch.stack(weights)


def sample_rows(table: torch.Tensor, height: int, width: int, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample a map stored as rows, ``table`` (H*W, C), at pixel positions (P,) -> (P, C).

    Zeros outside (see ``bilinear_corners``). Rows of a channels_last map are
    contiguous, so this gathers whole feature vectors.
    """
    indices, weights = bilinear_corners(ys, xs, height, width)
    rows = table.index_select(0, indices.reshape(-1)).reshape(4, -1, table.shape[1])  # faster than table[...]
    return (rows * weights.unsqueeze(2)).sum(0)


def deform_conv2d_reference(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure-torch deformable convolution; see the module docstring for the semantics."""
    strides, paddings, dilations = _pairs(stride, padding, dilation)
    groups, offset_groups, out_h, out_w = _check_shapes(input, offset, weight, mask, strides, paddings, dilations)
    batch, channels, height, width = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    taps, pixels = kh * kw, out_h * out_w
    offset = offset.reshape(batch, offset_groups, taps, 2, pixels)
    oy = torch.arange(out_h, device=input.device, dtype=input.dtype) * strides[0] - paddings[0]
    ox = torch.arange(out_w, device=input.device, dtype=input.dtype) * strides[1] - paddings[1]
    ky = torch.arange(kh, device=input.device, dtype=input.dtype).repeat_interleave(kw) * dilations[0]
    kx = torch.arange(kw, device=input.device, dtype=input.dtype).repeat(kh) * dilations[1]
    base_y = (ky[:, None, None] + oy[None, :, None]).expand(taps, out_h, out_w).reshape(taps, pixels)
    base_x = (kx[:, None, None] + ox[None, None, :]).expand(taps, out_h, out_w).reshape(taps, pixels)
    ys = (base_y + offset[:, :, :, 0]).reshape(batch, offset_groups, taps * pixels)
    xs = (base_x + offset[:, :, :, 1]).reshape(batch, offset_groups, taps * pixels)
    group_size = channels // offset_groups
    columns = torch.stack(
        [
            sample_rows(input[b, g * group_size : (g + 1) * group_size].reshape(group_size, -1).t(), height, width,
                        ys[b, g], xs[b, g]).t()
            for b in range(batch)
            for g in range(offset_groups)
        ]
    )  # (B * OG, C/OG, taps * pixels)
    columns = columns.reshape(batch, offset_groups, group_size, taps, pixels)
    if mask is not None:
        columns = columns * mask.reshape(batch, offset_groups, 1, taps, pixels)
    columns = columns.reshape(batch, groups, group_channels * taps, pixels)
    kernels = weight.reshape(groups, out_channels // groups, group_channels * taps)
    out = torch.einsum("gok,bgkp->bgop", kernels, columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def _deform_conv2d_kernel(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          stride: int | tuple[int, int], padding: int | tuple[int, int],
                          dilation: int | tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
    """The compiled kernel (inference only); returns a channels_last tensor (its natural layout)
    with the reference's values."""
    strides, paddings, dilations = _pairs(stride, padding, dilation)
    _check_shapes(input, offset, weight, mask, strides, paddings, dilations)
    return torch.ops.cvdeep.deform_conv2d(
        input, offset, weight, bias, mask, strides[0], strides[1], paddings[0], paddings[1], dilations[0], dilations[1]
    )


#: Deformable convolution: the compiled kernel when built and no gradient is needed, else the reference.
deform_conv2d = kernel_or_reference("deform_conv2d", deform_conv2d_reference, _deform_conv2d_kernel,
                                    ("input", "offset", "weight"), inference_only=True)
