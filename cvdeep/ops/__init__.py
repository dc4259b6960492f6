"""Tensor ops behind the detectors and matchers: compiled kernels with pure-torch references.

Each op here runs the compiled ``torch.ops.cvdeep.*`` kernel when the extension
``cvdeep._C`` was built (and has a kernel for the tensor's device), and otherwise its
reference in ``reference.py``; falling back warns once per process. Setting
``CVDEEP_DISABLE_EXT=1`` forces the references (no warning: it was asked for), which is
how tests compare the two paths. ``backend()`` says which path is live.
"""
from __future__ import annotations

import torch

from . import reference
from ._dispatch import _use_kernel, backend, build_info
from .deform import deform_conv2d  # own dispatch, see deform.py
from .patches import extract_patches
from .reference import sample_descriptors  # no kernel: grid_sample is already fast
from .soft_detection import soft_detection_score


def nms(
    scores: torch.Tensor,
    radius: int,
    threshold: float = 0.0,
    max_keypoints: int = -1,
    border: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Exact hard NMS on (B, 1, H, W) scores; see :func:`reference.nms` for the semantics."""
    if _use_kernel(scores):
        keypoints, values = torch.ops.cvdeep.nms(scores, int(radius), float(threshold), int(max_keypoints), int(border))
        return list(keypoints), list(values)
    return reference.nms(scores, radius, threshold, max_keypoints, border)


def soft_nms(
    keypoints: torch.Tensor,
    scores: torch.Tensor,
    sigma: float,
    max_keypoints: int = -1,
    min_score: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy Gaussian soft-NMS on points; see :func:`reference.soft_nms`."""
    if _use_kernel(keypoints, scores):
        return torch.ops.cvdeep.soft_nms(keypoints, scores, float(sigma), int(max_keypoints), float(min_score))
    return reference.soft_nms(keypoints, scores, sigma, max_keypoints, min_score)


class _SoftArgmax(torch.autograd.Function):
    """Differentiable wrapper of the compiled forward and backward kernels."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, keypoints: torch.Tensor, window: int, temperature: float):
        refined, value = torch.ops.cvdeep.softargmax(scores, keypoints, window, temperature)
        ctx.save_for_backward(scores, keypoints)
        ctx.window, ctx.temperature = window, temperature
        return refined, value

    @staticmethod
    def backward(ctx: Any, grad_refined: torch.Tensor | None, grad_value: torch.Tensor | None):
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


def softargmax(
    scores: torch.Tensor,
    keypoints: torch.Tensor,
    window: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed soft-argmax refinement, differentiable in ``scores``; see :func:`reference.softargmax`."""
    if _use_kernel(scores, keypoints):
        return _SoftArgmax.apply(scores, keypoints, int(window), float(temperature))
    return reference.softargmax(scores, keypoints, window, temperature)


def l2_match(
    d1: torch.Tensor,
    d2: torch.Tensor,
    k: int = 2,
    mutual: bool = False,
    ratio: float | None = None,
    max_distance: float | None = None,
    squared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused L2 distance + top-k (never the N x M matrix); see :func:`reference.l2_match`."""
    if _use_kernel(d1, d2):
        return torch.ops.cvdeep.l2_match(d1, d2, int(k), bool(mutual), ratio, max_distance, bool(squared))
    return reference.l2_match(d1, d2, k, mutual, ratio, max_distance, squared)


__all__ = ["backend", "build_info", "deform_conv2d", "extract_patches", "l2_match", "nms", "sample_descriptors",
           "soft_detection_score", "soft_nms", "softargmax"]
