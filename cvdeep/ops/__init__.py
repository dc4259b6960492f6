"""Tensor ops behind the detectors and matchers: compiled kernels with pure-torch references.

Each op here runs the compiled ``torch.ops.cvdeep.*`` kernel when the extension
``cvdeep._C`` was built (and has a kernel for the tensor's device), and otherwise its
reference in ``reference.py``; falling back warns once per process. Setting
``CVDEEP_DISABLE_EXT=1`` forces the references (no warning: it was asked for), which is
how tests compare the two paths. ``backend()`` says which path is live.

Every op but ``attention`` runs in float32 whatever autocast the caller has on (``precision="bf16"``
runs the networks under autocast; see ``cvdeep.precision``): the kernels of ``deform_conv2d`` and
``softargmax`` take float and double only, and the references compute as the kernels do.
``attention`` stands in for ``F.scaled_dot_product_attention`` and so follows the caller's autocast:
its kernel is the bf16 arithmetic that autocast asks for.
"""
from __future__ import annotations

from typing import Any

import torch

from ..precision import float32_op
from . import reference
from ._dispatch import backend, build_info, kernel_or_reference
from .deform import deform_conv2d as _deform_conv2d  # own dispatch, see deform.py
from .patches import extract_patches as _extract_patches
from .reference import sample_descriptors as _sample_descriptors  # no kernel: grid_sample is already fast
from .soft_detection import soft_detection_score as _soft_detection_score


def _nms_kernel(scores: torch.Tensor, radius: int, threshold: float, max_keypoints: int,
                border: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    keypoints, values = torch.ops.cvdeep.nms(scores, int(radius), float(threshold), int(max_keypoints), int(border))
    return list(keypoints), list(values)


def _soft_nms_kernel(keypoints: torch.Tensor, scores: torch.Tensor, sigma: float, max_keypoints: int,
                     min_score: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.ops.cvdeep.soft_nms(keypoints, scores, float(sigma), int(max_keypoints), float(min_score))


class _SoftArgmax(torch.autograd.Function):
    """Differentiable wrapper of the compiled forward and backward kernels."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, keypoints: torch.Tensor, window: int,
                temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        refined, value = torch.ops.cvdeep.softargmax(scores, keypoints, window, temperature)
        ctx.save_for_backward(scores, keypoints)
        ctx.window, ctx.temperature = window, temperature
        return refined, value

    @staticmethod
    def backward(ctx: Any, grad_refined: torch.Tensor | None,
                 grad_value: torch.Tensor | None) -> tuple[torch.Tensor, None, None, None]:
        scores, keypoints = ctx.saved_tensors
        n = keypoints.shape[0]
        if grad_refined is None:
            grad_refined = scores.new_zeros((n, 2))
        if grad_value is None:
            grad_value = scores.new_zeros((n,))
        grad = torch.ops.cvdeep.softargmax_backward(
            grad_refined, grad_value, scores, keypoints, ctx.window, ctx.temperature
        )
        return grad, None, None, None


def _softargmax_kernel(scores: torch.Tensor, keypoints: torch.Tensor, window: int,
                       temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _SoftArgmax.apply(scores, keypoints, int(window), float(temperature))


def _l2_match_kernel(d1: torch.Tensor, d2: torch.Tensor, k: int, mutual: bool, ratio: float | None,
                     max_distance: float | None, squared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.cvdeep.l2_match(d1, d2, int(k), bool(mutual), ratio, max_distance, bool(squared))


# Each op: the compiled kernel when built for the tensors' device, else its reference (same
# signature and documentation; see reference.py for the semantics).
nms = kernel_or_reference("nms", reference.nms, _nms_kernel, ("scores",))
soft_nms = kernel_or_reference("soft_nms", reference.soft_nms, _soft_nms_kernel, ("keypoints", "scores"))
softargmax = kernel_or_reference("softargmax", reference.softargmax, _softargmax_kernel, ("scores", "keypoints"))
l2_match = kernel_or_reference("l2_match", reference.l2_match, _l2_match_kernel, ("d1", "d2"))  # fused: no N x M matrix


def _selu_kernel(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.cvdeep.selu_(x)


# SELU: only a CPU kernel; float32 dense tensors that need no gradient, anything else runs torch's own
selu_ = kernel_or_reference("selu_", reference.selu_, _selu_kernel, ("x",), inference_only=True,
                            accepts=lambda x: x.device.type == "cpu" and x.dtype == torch.float32 and (
                                x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)))


def _affine_prelu_kernel(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, slope: torch.Tensor,
                         out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return torch.ops.cvdeep.affine_prelu(x, scale, shift, slope)
    return torch.ops.cvdeep.affine_prelu_into(x, scale, shift, slope, out)


def _pixels_at_equal_steps(out: torch.Tensor) -> bool:
    """Channels innermost and pixels at one stride (a channel slice of a channels-last map, permuted)."""
    strides, sizes = out.stride(), out.shape
    return strides[-1] == 1 and all(sizes[d] == 1 or strides[d] == strides[d + 1] * sizes[d + 1]
                                    for d in range(out.dim() - 2))


# DISK's gating: a CPU kernel for contiguous float32 maps (channels innermost) that need no gradient
affine_prelu = kernel_or_reference(
    "affine_prelu", reference.affine_prelu, _affine_prelu_kernel, ("x",), inference_only=True,
    accepts=lambda x, scale, shift, slope, out: x.device.type == "cpu" and x.is_contiguous() and all(
        t.dtype == torch.float32 for t in (x, scale, shift, slope)) and (
        out is None or (out.dtype == torch.float32 and out.shape == x.shape and _pixels_at_equal_steps(out))))


def _row_moments_kernel(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return torch.ops.cvdeep.row_moments(x, shift)


# InstanceNorm statistics band by band (DISK): a CPU kernel for contiguous float32 bands
row_moments = kernel_or_reference(
    "row_moments", reference.row_moments, _row_moments_kernel, ("x",), inference_only=True,
    accepts=lambda x, shift: x.device.type == "cpu" and x.dim() == 3 and x.is_contiguous() and
    x.dtype == shift.dtype == torch.float32)


def _upsample2_rows_kernel(x: torch.Tensor, start: int, stop: int, scale: torch.Tensor | None,
                           shift: torch.Tensor | None, slope: torch.Tensor | None,
                           out: torch.Tensor | None) -> torch.Tensor:
    source = x[0].permute(1, 2, 0)  # (h, w, C)
    if out is not None:
        into = out[0].permute(1, 2, 0)
        torch.ops.cvdeep.upsample2_rows_into(source, int(start), int(stop), scale, shift, slope, into)
        return out
    rows = torch.ops.cvdeep.upsample2_rows(source, int(start), int(stop), scale, shift, slope)
    return rows[None].permute(0, 3, 1, 2)  # (1, C, R, 2w), channels-last with the usual batch stride


# DISK's up blocks: a CPU kernel for one channels-last float32 map that needs no gradient
upsample2_rows = kernel_or_reference(
    "upsample2_rows", reference.upsample2_rows, _upsample2_rows_kernel, ("x",), inference_only=True,
    accepts=lambda x, scale, out, **_: x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and
    x.shape[0] == 1 and x.is_contiguous(memory_format=torch.channels_last) and (
        scale is None or scale.dtype == torch.float32) and (
        out is None or (out.dtype == torch.float32 and out.dim() == 4 and
                        _pixels_at_equal_steps(out[0].permute(1, 2, 0)))))


def _attention_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # float32 inputs are rounded to bf16 inside the kernel, as autocast would round them for SDPA
    heads = [t.reshape(-1, 1, *t.shape[-2:]).contiguous() for t in (q, k, v)]
    out = torch.ops.cvdeep.attention_bf16(*heads).reshape(q.shape)
    return out if q.dtype == torch.float32 else out.to(q.dtype)


def _computes_in_bf16(q: torch.Tensor) -> bool:
    """bf16 inputs, or float32 ones under the CPU's bf16 autocast (what SDPA would compute in)."""
    if q.dtype == torch.bfloat16:
        return True
    return q.dtype == torch.float32 and torch.is_autocast_enabled("cpu") and \
        torch.get_autocast_dtype("cpu") == torch.bfloat16


# LightGlue's attention in precision="bf16": a CPU kernel where the CPU has AVX512-BF16
attention = kernel_or_reference(
    "attention", reference.attention, _attention_kernel, ("q", "k", "v"), inference_only=True,
    accepts=lambda q, k, v: q.device.type == "cpu" and bool(build_info().get("bf16_attention")) and
    _computes_in_bf16(q) and k.dtype == v.dtype == q.dtype and q.shape[-1] % 16 == 0 and 0 < q.shape[-1] <= 128
    and q.numel() > 0 and k.numel() > 0 and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and k.shape == v.shape)


def _upsample2_moments_kernel(x: torch.Tensor, start: int, stop: int, shift: torch.Tensor) -> torch.Tensor:
    return torch.ops.cvdeep.upsample2_moments(x[0].permute(1, 2, 0), int(start), int(stop), shift)


upsample2_moments = kernel_or_reference(
    "upsample2_moments", reference.upsample2_moments, _upsample2_moments_kernel, ("x",), inference_only=True,
    accepts=lambda x, shift, **_: x.device.type == "cpu" and x.dtype == shift.dtype == torch.float32 and
    x.dim() == 4 and x.shape[0] == 1 and x.is_contiguous(memory_format=torch.channels_last))


def _sample_levels_kernel(fine: torch.Tensor, fine_index: torch.Tensor, coarse: Any, corners: torch.Tensor,
                          weights: torch.Tensor, width: int) -> torch.Tensor:
    tables = [level[0] for level in coarse]
    widths = [int(level[1]) for level in coarse]
    positions = [tensor for level in coarse for tensor in (*level[2], *level[3])]
    return torch.ops.cvdeep.sample_levels(fine, fine_index, tables, widths, positions, corners, weights, int(width))


# ALIKED's descriptor reads: a CPU kernel for float32
sample_levels = kernel_or_reference(
    "sample_levels", reference.sample_levels, _sample_levels_kernel, ("fine", "corners"), inference_only=True,
    accepts=lambda fine, weights, **_: fine.device.type == "cpu" and fine.dtype == weights.dtype == torch.float32)

# float32 whatever the caller's autocast (cvdeep.precision)
nms, soft_nms, softargmax, l2_match, sample_levels, affine_prelu, row_moments, upsample2_rows, upsample2_moments = (
    float32_op(op) for op in (nms, soft_nms, softargmax, l2_match, sample_levels, affine_prelu, row_moments,
                              upsample2_rows, upsample2_moments))
deform_conv2d = float32_op(_deform_conv2d)
extract_patches = float32_op(_extract_patches)
sample_descriptors = float32_op(_sample_descriptors)
soft_detection_score = float32_op(_soft_detection_score)


__all__ = ["affine_prelu", "attention", "backend", "build_info", "deform_conv2d", "extract_patches", "l2_match",
           "nms", "row_moments", "sample_descriptors", "sample_levels", "selu_", "soft_detection_score", "soft_nms",
           "softargmax", "upsample2_moments", "upsample2_rows"]
