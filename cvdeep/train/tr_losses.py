"""TR (Wang et al., CVPR 2023): transformation-predictive representations for local features.

A BYOL-style pair of branches: the online branch (encoder, projector g_o, predictor q) sees one
view, the target branch (encoder, projector g_t, parameters an exponential moving average of the
online ones, no gradient) sees the transformed view; at corresponding locations c the online
prediction y_c = q(g_o(z))_c must match the target projection y'_c = g_t(z')_c. No negatives.

What the seed (the authors' slides) defines, implemented here:

- EMA: theta_t <- tau theta_t + (1 - tau) theta_o (``ema_update``);
- L_pred^c = 1 - <y_c, y'_c> on L2-normalised vectors, y'_c under stop-gradient (``prediction_loss``);
- L_hard = (1/|C|) sum_c w_c L_pred^c and L_soft = (1/|C|) sum_c w_c (l_c + 1 - L_pred^c), with
  w_c = s_c s'_c / sum_n s_n s'_n the detection-score weights (``tr_loss``). The 1/|C| in front of
  already-normalised weights is in the seed and kept (the loss scales with 1/|C|).
- soft labels l_c = exp(-alpha (1 - <y_c^{w^-1}, y'_c^{w^-1}>) / lambda), alpha the curriculum
  factor (``soft_labels``).

Where the sources are silent (the paper's full text was not reachable; only the seed slides and
the abstract were), the choices made here:

- L_soft as printed, (l_c + 1 - L_pred^c) = (l_c + <y, y'>), *decreases* when the similarity
  decreases, so minimising it pushes corresponding representations apart. It is implemented
  literally as ``soft_form="seed"`` (the default, because it is what the seed defines) and flagged.
  ``soft_form="target"`` uses |l_c - <y_c, y'_c>|: the similarity regressed to the soft label, which
  equals L_pred^c when l_c = 1 (a hard positive), the reading "soften the hard positive label 1
  into a continuous target" suggests. Choose it for training.
- The soft labels are detached (they are labels; the seed does not say whether gradients flow into
  the inverse-warped representations y^{w^-1}), and the vectors are L2-normalised before the dot
  product. lambda and alpha have no defaults (the values are not in the seed).
- EMA of buffers: floating-point buffers (BatchNorm running mean/var) are averaged with the same
  tau, integer ones (``num_batches_tracked``) copied from the online network (``buffers="copy"``
  copies all). BYOL leaves this to the implementation.
- tau: BYOL's schedule, tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 with tau_base = 0.996
  (``Curriculum.tau_at``); the TR seed gives no value.
- Curriculum: the transformation strength (a multiplier for the homography sampler's amplitudes)
  and alpha both ramp from a start to an end value over ``total_steps`` (linearly, or along a
  half cosine); defaults strength 0.2 -> 1 and alpha 0 -> 1 (alpha = 0 gives l_c = 1, hard labels,
  at the start). The seed only says positives are generated with a curriculum.
- The detection-score weights keep their gradient (the detector learns from the loss, as in D2-Net).

Sources (facts only; no code or text copied):

- Z. Wang, C. Wu, Y. Yang, Z. Li, "Learning Transformation-Predictive Representations for Detection
  and Description of Local Features", CVPR 2023: the authors' slides (the project seed
  ``tr_cvpr2023.txt``) and the abstract (CVPR 2023 proceedings, pp. 11464-11473). No code released.
- J.-B. Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
  NeurIPS 2020 (arXiv:2006.07733): EMA target, predictor, stop-gradient, normalised prediction
  loss, tau schedule and tau_base = 0.996.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Error


def make_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` for the target branch, with ``requires_grad`` off everywhere."""
    if not isinstance(online, nn.Module):
        raise Error(f"online must be a torch.nn.Module, got {type(online).__name__}")
    target = copy.deepcopy(online)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float, buffers: str = "average") -> None:
    """theta_t <- tau * theta_t + (1 - tau) * theta_o for every parameter, in place.

    ``tau`` in [0, 1]. ``buffers``: ``"average"`` applies the same rule to floating-point buffers
    and copies the others; ``"copy"`` copies every buffer. The two modules must have the same
    parameter and buffer names and shapes (``cvdeep.Error`` otherwise).
    """
    tau = float(tau)
    if not 0.0 <= tau <= 1.0:
        raise Error(f"tau must be in [0, 1], got {tau}")
    if buffers not in ("average", "copy"):
        raise Error(f"buffers must be 'average' or 'copy', got {buffers!r}")
    target_params, online_params = dict(target.named_parameters()), dict(online.named_parameters())
    target_buffers, online_buffers = dict(target.named_buffers()), dict(online.named_buffers())
    if target_params.keys() != online_params.keys() or target_buffers.keys() != online_buffers.keys():
        raise Error("target and online modules have different parameter or buffer names")
    for name, param in target_params.items():
        source = online_params[name]
        if param.shape != source.shape:
            raise Error(f"parameter {name!r} has shape {tuple(param.shape)} in target "
                        f"and {tuple(source.shape)} in online")
        param.mul_(tau).add_(source.detach(), alpha=1.0 - tau)
    for name, buffer in target_buffers.items():
        other = online_buffers[name]
        if buffer.shape != other.shape:
            raise Error(f"buffer {name!r} has shape {tuple(buffer.shape)} in target and {tuple(other.shape)} in online")
        if buffers == "average" and buffer.dtype.is_floating_point:
            buffer.mul_(tau).add_(other.detach(), alpha=1.0 - tau)
        else:
            buffer.copy_(other)


def _pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.dim() != 2 or a.shape != b.shape:
        raise Error(f"{name_a} and {name_b} must be (N, D) tensors of the same shape, got "
                    f"{tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}")


def prediction_loss(pred_online: torch.Tensor, proj_target: torch.Tensor) -> torch.Tensor:
    """(N,) per-correspondence L_pred = 1 - cos(pred_online, proj_target), with ``proj_target``
    detached (stop-gradient). Inputs (N, D); values in [0, 2]."""
    _pair("pred_online", pred_online, "proj_target", proj_target)
    return 1.0 - (F.normalize(pred_online, dim=1) * F.normalize(proj_target.detach(), dim=1)).sum(dim=1)


def soft_labels(y_a_inv: torch.Tensor, y_b_inv: torch.Tensor, lam: float, alpha: float) -> torch.Tensor:
    """(N,) soft positive labels exp(-alpha (1 - cos(y_a_inv, y_b_inv)) / lam) in (0, 1], detached.

    ``y_a_inv``, ``y_b_inv``: (N, D) representations of the two views brought back by the inverse
    transformation at the correspondences; ``lam`` > 0 the temperature, ``alpha`` >= 0 the curriculum
    factor (0: every label is 1)."""
    _pair("y_a_inv", y_a_inv, "y_b_inv", y_b_inv)
    if not lam > 0 or not alpha >= 0:
        raise Error(f"lam must be > 0 and alpha >= 0, got lam={lam}, alpha={alpha}")
    with torch.no_grad():
        cos = (F.normalize(y_a_inv, dim=1) * F.normalize(y_b_inv, dim=1)).sum(dim=1)
        return torch.exp(-float(alpha) * (1.0 - cos) / float(lam))


def tr_loss(
    pred: torch.Tensor,
    proj: torch.Tensor,
    scores_a: torch.Tensor,
    scores_b: torch.Tensor,
    soft_labels: torch.Tensor | None = None,
    soft_form: str = "seed",
) -> torch.Tensor:
    """L_hard (``soft_labels`` None) or L_soft of the seed, a scalar.

    ``pred`` (N, D): online predictions; ``proj`` (N, D): target projections (detached here);
    ``scores_a``, ``scores_b`` (N,): detection scores s_c, s'_c (>= 0, not all products zero) at the
    correspondences; ``soft_labels`` (N,): l_c. ``soft_form``: ``"seed"`` = (l_c + 1 - L_pred^c) as
    the seed prints it (its minimum pushes y and y' apart, see the module docstring) or
    ``"target"`` = |l_c - (1 - L_pred^c)|.
    """
    per_pair = prediction_loss(pred, proj)
    n = per_pair.shape[0]
    for name, s in (("scores_a", scores_a), ("scores_b", scores_b)):
        if not isinstance(s, torch.Tensor) or s.shape != (n,):
            raise Error(f"{name} must be an ({n},) tensor, got {tuple(getattr(s, 'shape', ()))}")
    products = scores_a * scores_b
    total = products.sum()
    if n == 0 or not total.detach() > 0:
        raise Error("the detection-score products s_c s'_c must have a positive sum (and N >= 1)")
    weights = products / total
    if soft_labels is None:
        terms = per_pair
    else:
        if not isinstance(soft_labels, torch.Tensor) or soft_labels.shape != (n,):
            raise Error(f"soft_labels must be an ({n},) tensor, got {tuple(getattr(soft_labels, 'shape', ()))}")
        if soft_form == "seed":
            terms = soft_labels + 1.0 - per_pair
        elif soft_form == "target":
            terms = (soft_labels - (1.0 - per_pair)).abs()
        else:
            raise Error(f"soft_form must be 'seed' or 'target', got {soft_form!r}")
    return (weights * terms).sum() / n


class CurriculumState(NamedTuple):
    strength: float  # multiplier of the transformation amplitudes, 0..1
    alpha: float  # soft-label curriculum factor
    tau: float  # EMA decay


@dataclass(frozen=True)
class Curriculum:
    """Step -> (transformation strength, soft-label alpha, EMA tau).

    ``strength`` and ``alpha`` go from their first to their second value over ``total_steps``
    (``schedule`` ``"linear"`` or ``"cosine"``: progress (1 - cos(pi t)) / 2), then stay. ``tau``
    follows BYOL: 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2, from ``tau_base`` to 1.
    """

    total_steps: int
    strength: tuple[float, float] = (0.2, 1.0)
    alpha: tuple[float, float] = (0.0, 1.0)
    tau_base: float = 0.996
    schedule: str = "linear"

    def __post_init__(self) -> None:
        if int(self.total_steps) < 1:
            raise Error(f"total_steps must be >= 1, got {self.total_steps}")
        if self.schedule not in ("linear", "cosine"):
            raise Error(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if not 0.0 <= self.tau_base <= 1.0:
            raise Error(f"tau_base must be in [0, 1], got {self.tau_base}")
        if min(self.alpha) < 0:
            raise Error(f"alpha must stay >= 0, got {self.alpha}")

    def progress(self, step: int) -> float:
        """Fraction of the schedule done at ``step``, shaped by ``schedule``, in [0, 1]."""
        t = min(max(float(step) / int(self.total_steps), 0.0), 1.0)
        return t if self.schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * t))

    def strength_at(self, step: int) -> float:
        start, end = self.strength
        return start + (end - start) * self.progress(step)

    def alpha_at(self, step: int) -> float:
        start, end = self.alpha
        return start + (end - start) * self.progress(step)

    def tau_at(self, step: int) -> float:
        t = min(max(float(step) / int(self.total_steps), 0.0), 1.0)
        return 1.0 - (1.0 - self.tau_base) * (math.cos(math.pi * t) + 1.0) / 2.0

    def __call__(self, step: int) -> CurriculumState:
        return CurriculumState(self.strength_at(step), self.alpha_at(step), self.tau_at(step))
