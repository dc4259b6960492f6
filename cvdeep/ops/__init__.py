"""Tensor ops behind the detectors and matchers: compiled kernels with pure-torch references.

Each op here runs the compiled ``torch.ops.cvdeep.*`` kernel when the extension
``cvdeep._C`` was built (and has a kernel for the tensor's device), and otherwise its
reference in ``reference.py``; falling back warns once per process. Setting
``CVDEEP_DISABLE_EXT=1`` forces the references (no warning: it was asked for), which is
how tests compare the two paths. ``backend()`` says which path is live.

Every op runs in float32 whatever autocast the caller has on (``precision="bf16"`` runs the
networks under autocast; see ``cvdeep.precision``): the kernels of ``deform_conv2d`` and
``softargmax`` take float and double only, and the references compute as the kernels do.
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
nms, soft_nms, softargmax, l2_match, sample_levels = (
    float32_op(op) for op in (nms, soft_nms, softargmax, l2_match, sample_levels))
deform_conv2d = float32_op(_deform_conv2d)
extract_patches = float32_op(_extract_patches)
sample_descriptors = float32_op(_sample_descriptors)
soft_detection_score = float32_op(_soft_detection_score)


__all__ = ["backend", "build_info", "deform_conv2d", "extract_patches", "l2_match", "nms", "sample_descriptors",
           "sample_levels", "selu_", "soft_detection_score", "soft_nms", "softargmax"]
