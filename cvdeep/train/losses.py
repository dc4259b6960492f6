"""Descriptor-learning losses of the papers cvdeep implements.

Batch convention (HardNet / L2-Net batch construction), shared by every loss here:
``anchor`` and ``positive`` are float tensors of shape ``(B, D)``, normally L2-normalised
descriptors; row ``i`` of both describes the same 3D point (a matching pair) and every
other combination -- anchor ``i`` with positive ``j``, and, where a loss says so, anchor
``i`` with anchor ``j`` or positive ``i`` with positive ``j`` -- is a non-matching pair,
so all ``B`` points of a batch must be distinct. ``B >= 2``. Each loss returns a scalar
tensor (the mean over the batch unless the docstring says otherwise) that is
differentiable with respect to both inputs. Distances are computed in float32 with
autocast switched off, so bf16 autocast training (and bf16/fp16 inputs) only changes the
network, never the loss arithmetic; float64 inputs stay float64. Invalid input raises
``cvdeep.Error`` (a ``ValueError``) saying what was given and what is accepted.

=======================  ==========================================  ===========================
name in ``LOSSES``       paper                                       callable
=======================  ==========================================  ===========================
``"deepdesc"``           Simo-Serra et al., ICCV 2015 (DeepDesc)     :func:`mined_hinge_loss`
``"hardnet"``            Mishchuk et al., NeurIPS 2017 (HardNet)     :func:`hardest_triplet_margin_loss`
``"sosnet"``             Tian et al., CVPR 2019 (SOSNet)             :func:`sosnet_loss`
``"hynet"``              Tian et al., NeurIPS 2020 (HyNet)           :func:`hybrid_similarity_loss`
``"sdgm"``               Deng and Ma, 2022 (SDGMNet)                 :class:`SDGMLoss`
=======================  ==========================================  ===========================

``"l2net"`` is L2-Net's own objective (Tian et al., CVPR 2017): a row and column softmax
of ``exp(2 - d)`` plus the decorrelation of descriptor dimensions. ``LOSSES[name](**overrides)``
builds an ``nn.Module`` whose ``forward(anchor, positive)`` returns the scalar loss;
:func:`make_loss` does the same.

Sources read for formulas and constants (facts only -- no code or prose was copied):

- ``DagnyT/hardnet`` (MIT licence): ``code/Losses.py`` (``loss_HardNet``,
  ``distance_matrix_vector``) and the argument defaults of ``code/HardNet.py``.
- ``yuruntian/HyNet`` (MIT licence): ``train.py`` (``Loss_HyNet``, ``Loss_SOSNet`` and
  the argument defaults) and ``utils.py`` (``dist_th``, ``eps_sqrt``,
  ``cal_l2_distance_matrix``). This is the authors' published training code for both
  HyNet and SOSNet.
- ``ACuOoOoO/SDGMNet`` (the repository carries no licence file; read for facts only):
  ``losses.py`` (``SDGMloss``), the argument defaults of ``train.py`` and
  ``pretrained/loggers/statistics_*.log``.
- ``etrulls/deepdesc-release`` (CC BY-NC-SA 4.0): ``README.md`` and the released model
  names; the release has inference code only, no training code.
- ``yuruntian/SOSNet`` and ``scape-research/SOSNet`` (no licence file): inference code
  only, nothing about the loss.
- Seed texts of the DeepDesc poster and the SDGMNet abstract (``shared/seeds``).
"""
from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from numbers import Integral, Real
from typing import Any

import torch
from torch import nn

from ..errors import Error

__all__ = [
    "DEEPDESC_MARGIN", "DEEPDESC_MINING_RATIO", "HARDNET_MARGIN", "HYNET_ALPHA", "HYNET_GAMMA", "HYNET_MARGIN",
    "LOSSES", "SDGM_ALPHA", "SDGM_MOMENTUM", "SDGM_PROB_MARGIN", "SOSNET_MARGIN", "SOS_KNN",
    "HardestTripletMarginLoss", "HybridSimilarityLoss", "L2NetLoss", "MinedHingeLoss", "SDGMLoss", "SOSNetLoss",
    "hardest_triplet_margin_loss", "hybrid_similarity_loss", "l2net_loss", "make_loss", "mined_hinge_loss",
    "sos_regularizer",
    "sosnet_loss",
]

# --- HardNet: DagnyT/hardnet, code/Losses.py and code/HardNet.py -----------------------------------
#: Triplet margin (``--margin`` default of code/HardNet.py).
HARDNET_MARGIN = 1.0
#: Anchor-positive distances below this are treated as the same point, not negatives (loss_HardNet).
HARDNET_DUPLICATE_DISTANCE = 0.008
#: Added to the diagonal and to near-duplicates so the row/column minimum skips them (loss_HardNet).
HARDNET_EXCLUSION = 10.0
#: Inside the square root of ``distance_matrix_vector``.
HARDNET_SQRT_EPS = 1e-6
#: Added to every distance by ``loss_HardNet``.
HARDNET_DISTANCE_EPS = 1e-8

# --- SOSNet and HyNet: yuruntian/HyNet, train.py and utils.py --------------------------------------
#: Neighbours per point of the second-order similarity (``--knn_sos`` default of train.py).
SOS_KNN = 8
#: First-order (triplet) margin of SOSNet: t = 1 of the SOSNet paper (see sosnet_loss for the caveat).
SOSNET_MARGIN = 1.0
#: HyNet triplet margin (``--margin`` default of train.py).
HYNET_MARGIN = 1.2
#: HyNet weight of the inner-product term in the hybrid similarity (``--alpha`` default of train.py).
HYNET_ALPHA = 2.0
#: HyNet weight of the descriptor-norm regulariser (``norm_loss_pos``: ``.mul(0.1)``).
HYNET_GAMMA = 0.1
#: Distances at or below this are treated as duplicates when ranking neighbours (utils.py ``dist_th``).
TIAN_DUPLICATE_DISTANCE = 8e-3
#: Inside every square root of train.py / utils.py (``eps_sqrt``).
TIAN_SQRT_EPS = 1e-6
#: Added to the ranking copy of a distance matrix on the diagonal and on duplicates (``sort_distance``).
TIAN_EXCLUSION = 2.0

# --- DeepDesc ---------------------------------------------------------------------------------------
#: Hinge margin C on unit-norm descriptors. Not taken from a source: see mined_hinge_loss.
DEEPDESC_MARGIN = 1.0
#: r_p = r_n = 8, read off the released model names ``CNN3_p8_n8_split*.t7`` (etrulls/deepdesc-release).
DEEPDESC_MINING_RATIO = 8.0
#: Inside the square root of every DeepDesc distance (smooths ||d1 - d2|| at 0; HardNet's value).
DEEPDESC_SQRT_EPS = 1e-6

# --- SDGMNet: ACuOoOoO/SDGMNet, losses.py (SDGMloss) and train.py ------------------------------------
#: Weight of the positive term, "indicative bias for the positive" (train.py ``--alpha`` default).
SDGM_ALPHA = 0.9
#: Probability of the probabilistic margin (train.py ``--pm`` default).
SDGM_PROB_MARGIN = 0.6
#: Momentum of every running statistic (losses.py ``self.lam``).
SDGM_MOMENTUM = 0.999
#: Cosines are clamped to 1 - eps before acos; also the early duplicate threshold (losses.py ``self.eps``).
SDGM_EPS = 1e-5
#: After the duplicate stage starts, pairs closer than this angle (rad) are not negatives (``np.cos(0.6)``).
SDGM_DUPLICATE_ANGLE = 0.6
#: Training progress from which pairs closer than SDGM_DUPLICATE_ANGLE are excluded (``timestep < 0.125``).
SDGM_DUPLICATE_START = 0.125
#: Training progress before which all modulation weights are 1 (``timestep < 0.1``).
SDGM_MODULATION_START = 0.1
#: Added to the running std in the auto-focus Gaussian width (``np.pi/6 + std``).
SDGM_WIDTH_OFFSET = math.pi / 6
#: Starting value of both running powers (``self.pos_power = self.neg_power = 10000``).
SDGM_INITIAL_POWER = 10000.0
#: Starting value of the running mean of pos - neg angle (``self.diff_ang_mean = -1``; see SDGMLoss).
SDGM_INITIAL_DIFF_MEAN = -1.0
#: Subtracted from similarities on the diagonal and of duplicates so the maximum skips them (``10``).
SDGM_EXCLUSION = 10.0


# ------------------------------------------------------------------------------------------------------
# validation and numerics shared by every loss
# ------------------------------------------------------------------------------------------------------

def _check_pair(anchor: Any, positive: Any) -> None:
    """Raise cvdeep.Error unless anchor and positive are floating (B, D) tensors of one shape, B >= 2."""
    for name, tensor in (("anchor", anchor), ("positive", positive)):
        if not isinstance(tensor, torch.Tensor):
            raise Error(f"{name} must be a torch.Tensor of shape (B, D); got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise Error(f"{name} must be a floating-point tensor (float32, float64, bfloat16 or float16); "
                        f"got dtype {tensor.dtype}")
        if tensor.dim() != 2:
            raise Error(f"{name} must be 2-D, (B, D) descriptors one per row; got shape {tuple(tensor.shape)}")
    if anchor.shape != positive.shape:
        raise Error("anchor and positive must have the same shape (B, D), row i of both a matching pair; "
                    f"got {tuple(anchor.shape)} and {tuple(positive.shape)}")
    if anchor.shape[0] < 2:
        raise Error(f"a batch needs B >= 2 pairs (the other rows are the negatives); got B={anchor.shape[0]}")
    if anchor.shape[1] < 1:
        raise Error(f"descriptors need D >= 1 dimensions; got shape {tuple(anchor.shape)}")
    if anchor.device != positive.device:
        raise Error(f"anchor and positive must be on one device; got {anchor.device} and {positive.device}")


def _check_real(name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = True) -> float:
    """``value`` as a float, or cvdeep.Error unless it is a real number in the stated interval."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise Error(f"{name} must be a finite real number; got {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise Error(f"{name} must lie in {left}{low}, {high}{right}; got {value!r}")
    return value


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise Error(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


@contextlib.contextmanager
def _full_precision(device: torch.device) -> Iterator[None]:
    """Switch autocast off for the loss arithmetic (it would run matmuls in bf16 otherwise)."""
    if device.type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> float32 (differentiable); float32 and float64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 for all i, j by the expansion, clamped at 0 against rounding."""
    squared = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    return squared.clamp_min(0.0)


def _unit_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """HyNet/SOSNet distance of unit vectors: sqrt(|2 (1 - x_i . y_j)| + 1e-6) (utils.py)."""
    return torch.sqrt(torch.abs(2.0 * (1.0 - x @ y.t())) + TIAN_SQRT_EPS)


def _ranking_copy(distances: torch.Tensor) -> torch.Tensor:
    """Detached distances with 2 added to the diagonal, then 2 more where the result is <= 8e-3.

    Used only to pick neighbours and hardest negatives (train.py ``sort_distance``); the
    values that enter a loss are read back from the undisturbed matrix.
    """
    ranked = distances.detach() + TIAN_EXCLUSION * torch.eye(distances.shape[0], dtype=distances.dtype,
                                                             device=distances.device)
    return ranked + TIAN_EXCLUSION * (ranked <= TIAN_DUPLICATE_DISTANCE).to(ranked.dtype)


def _hardest_negative_four_sets(within_anchor: torch.Tensor, within_positive: torch.Tensor,
                                cross: torch.Tensor) -> torch.Tensor:
    """Per pair i, the smallest of four hardest-negative distances (SOSNet/HyNet train.py):

    anchor i to its nearest other anchor, positive i to its nearest other positive,
    anchor i to its nearest non-matching positive, positive i to its nearest
    non-matching anchor. Nearest is judged on the ranking copy (diagonal and duplicates
    pushed back), the returned value is the true distance, so its gradient flows.
    """
    index = torch.arange(cross.shape[0], device=cross.device)
    ranked_a, ranked_p, ranked_ap = (_ranking_copy(m) for m in (within_anchor, within_positive, cross))
    candidates = torch.stack([
        within_anchor[index, ranked_a.argmin(dim=1)],
        within_positive[ranked_p.argmin(dim=0), index],
        cross[index, ranked_ap.argmin(dim=1)],
        cross[ranked_ap.argmin(dim=0), index],
    ])
    return candidates.min(dim=0).values


# ------------------------------------------------------------------------------------------------------
# DeepDesc
# ------------------------------------------------------------------------------------------------------

def _mining_count(pairs: int, ratio: float) -> int:
    """Pairs kept out of ``pairs`` forwarded with mining ratio r: floor(pairs / r), at least 1."""
    return max(1, int(pairs // ratio))


def mined_hinge_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = DEEPDESC_MARGIN,
                     positive_mining_ratio: float = DEEPDESC_MINING_RATIO,
                     negative_mining_ratio: float = DEEPDESC_MINING_RATIO, negatives: str = "random",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """DeepDesc's Siamese hinge embedding loss with hard positive and negative mining.

    Paper: E. Simo-Serra, E. Trulls, L. Ferraz, I. Kokkinos, P. Fua, F. Moreno-Noguer,
    "Discriminative Learning of Deep Convolutional Feature Point Descriptors", ICCV 2015.

    Formula: a matching pair costs its distance ``||d1 - d2||``; a non-matching pair costs
    ``max(0, C - ||d1 - d2||)`` (C = ``margin``). Hard mining: of the ``s_p`` positive and
    ``s_n`` negative pairs forwarded, only the ``floor(s / r)`` (at least one) with the
    largest cost of each kind are back-propagated; the loss is the mean cost of the kept
    pairs (positives and negatives together, as one hinge-embedding criterion averages
    its mini-batch). Gradients of the pairs not kept are exactly zero.

    Pairs forwarded here: the B diagonal pairs are the positives (s_p = B). The negatives
    are anchor i with positive j != i:

    - ``negatives="random"`` (default): one per anchor, j drawn uniformly among the other
      B - 1 rows (s_n = B, the paper's balanced s_p = s_n); ``generator`` makes the draw
      reproducible (the global CPU generator is used when it is None);
    - ``negatives="all"``: all B (B - 1) off-diagonal pairs (s_n = B (B - 1)).

    Defaults and where they come from:

    - r_p = r_n = 8: the released models are named ``CNN3_p8_n8_split*`` in
      etrulls/deepdesc-release; the poster text defines the ratio as s / 128 (forward s,
      back-propagate the 128 hardest). With B = 1024 this keeps 128 of each, as the paper.
    - C = 1.0 is cvdeep's choice, not the paper's: the stored sources leave C symbolic
      (the release contains no training code), and DeepDesc's C applied to its
      unnormalised tanh descriptors anyway. For unit descriptors distances lie in [0, 2];
      1.0 is HardNet's margin on the same scale (the distance of unit vectors 60 degrees
      apart). Pass ``margin`` to change it.
    - sqrt(... + 1e-6) in every distance (HardNet's constant), so ||d1 - d2|| is
      differentiable at 0.

    Descriptors need not be normalised for this loss; C is then in their units.

    Args:
        anchor, positive: (B, D) floating tensors, B >= 2.
        margin: C >= 0.
        positive_mining_ratio, negative_mining_ratio: r >= 1.
        negatives: ``"random"`` or ``"all"``.
        generator: a CPU torch.Generator for ``"random"``.

    Returns: scalar tensor (float32, float64 for float64 input).

    Raises: cvdeep.Error for bad shapes, B < 2, or a parameter out of range.
    """
    _check_pair(anchor, positive)
    margin = _check_real("margin", margin, 0.0)
    r_p = _check_real("positive_mining_ratio", positive_mining_ratio, 1.0)
    r_n = _check_real("negative_mining_ratio", negative_mining_ratio, 1.0)
    if negatives not in ("random", "all"):
        raise Error(f"negatives must be 'random' or 'all'; got {negatives!r}")
    with _full_precision(anchor.device):
        a, p = _upcast(anchor), _upcast(positive)
        size = a.shape[0]
        positive_cost = torch.sqrt((a - p).pow(2).sum(1) + DEEPDESC_SQRT_EPS)
        if negatives == "random":
            offsets = torch.randint(1, size, (size,), generator=generator).to(a.device)
            columns = (torch.arange(size, device=a.device) + offsets) % size
            negative_distance = torch.sqrt((a - p[columns]).pow(2).sum(1) + DEEPDESC_SQRT_EPS)
        else:
            off_diagonal = ~torch.eye(size, dtype=torch.bool, device=a.device)
            negative_distance = torch.sqrt(_squared_distances(a, p) + DEEPDESC_SQRT_EPS)[off_diagonal]
        negative_cost = torch.clamp(margin - negative_distance, min=0.0)
        kept_positive = positive_cost.topk(_mining_count(positive_cost.numel(), r_p)).values
        kept_negative = negative_cost.topk(_mining_count(negative_cost.numel(), r_n)).values
        return torch.cat([kept_positive, kept_negative]).mean()


# ------------------------------------------------------------------------------------------------------
# HardNet
# ------------------------------------------------------------------------------------------------------

def hardest_triplet_margin_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = HARDNET_MARGIN,
                                anchor_swap: bool = True) -> torch.Tensor:
    """HardNet's triplet margin loss with the hardest in-batch negative.

    Paper: A. Mishchuk, D. Mishkin, F. Radenovic, J. Matas, "Working hard to know your
    neighbor's margins: Local descriptor learning loss", NeurIPS 2017. Follows
    ``loss_HardNet`` of DagnyT/hardnet (code/Losses.py) with ``batch_reduce='min'``,
    ``loss_type='triplet_margin'``.

    Formula: with the anchor-positive distance matrix
    ``d_ij = sqrt(||a_i||^2 + ||p_j||^2 - 2 a_i.p_j + 1e-6) + 1e-8``, the loss of pair i is
    ``max(0, margin + d_ii - n_i)`` where ``n_i = min_{j != i} d_ij`` (the closest
    non-matching positive of anchor i) and, with ``anchor_swap``, also
    ``min(n_i, min_{j != i} d_ji)`` (the closest non-matching anchor of positive i). The
    loss is the mean over the B pairs. As in the official code the diagonal is excluded
    by adding 10 to it, and near-duplicates -- off-diagonal distances below 0.008, which
    are taken to be the same point -- by adding 10 to them (the sum is what competes for
    the minimum, so an excluded pair is only chosen if nothing else is left).

    Defaults: margin 1.0 and anchor_swap True (``--margin`` and ``--anchorswap`` defaults
    of code/HardNet.py); 0.008, 10, 1e-6 and 1e-8 are the constants of code/Losses.py.
    HardNet's descriptors are L2-normalised, so distances lie in [0, 2].

    Args:
        anchor, positive: (B, D) floating tensors, B >= 2, normally unit rows.
        margin: >= 0.
        anchor_swap: also consider the closest anchor to each positive.

    Returns: scalar tensor.

    Raises: cvdeep.Error for bad shapes, B < 2 or a negative margin.
    """
    _check_pair(anchor, positive)
    margin = _check_real("margin", margin, 0.0)
    with _full_precision(anchor.device):
        a, p = _upcast(anchor), _upcast(positive)
        distances = torch.sqrt(_squared_distances(a, p) + HARDNET_SQRT_EPS) + HARDNET_DISTANCE_EPS
        positive_distance = distances.diagonal()
        eye = torch.eye(a.shape[0], dtype=distances.dtype, device=distances.device)
        excluded = distances + HARDNET_EXCLUSION * eye
        excluded = excluded + HARDNET_EXCLUSION * (excluded < HARDNET_DUPLICATE_DISTANCE).to(excluded.dtype)
        negative_distance = excluded.min(dim=1).values
        if anchor_swap:
            negative_distance = torch.minimum(negative_distance, excluded.min(dim=0).values)
        return torch.clamp(margin + positive_distance - negative_distance, min=0.0).mean()


# ------------------------------------------------------------------------------------------------------
# SOSNet
# ------------------------------------------------------------------------------------------------------

def _sos_neighbours(within_anchor: torch.Tensor, within_positive: torch.Tensor, cross: torch.Tensor,
                    knn: int) -> torch.Tensor:
    """Boolean (B, B) neighbour graph of the second-order similarity (train.py ``sos_loss``)."""
    size = cross.shape[0]
    k = min(knn, size)

    def graph(ranked: torch.Tensor, dim: int) -> torch.Tensor:
        chosen = torch.zeros_like(ranked, dtype=torch.bool)
        return chosen.scatter_(dim, ranked.topk(k, dim=dim, largest=False).indices, True)

    ranked_a, ranked_p, ranked_ap = (_ranking_copy(m) for m in (within_anchor, within_positive, cross))
    in_anchors = graph(ranked_a, 1)
    in_positives = graph(ranked_p, 0)
    across = graph(ranked_ap, 1) | graph(ranked_ap, 0)
    union = (in_anchors | in_anchors.t()) | (in_positives | in_positives.t()) | (across | across.t())
    return union & ~torch.eye(size, dtype=torch.bool, device=cross.device)


def sos_regularizer(anchor: torch.Tensor, positive: torch.Tensor, knn: int = SOS_KNN) -> torch.Tensor:
    """SOSNet's second-order similarity regularisation (SOSR).

    Paper: Y. Tian, X. Yu, B. Fan, F. Wu, H. Heijnen, V. Balntas, "SOSNet: Second Order
    Similarity Regularization for Local Descriptor Learning", CVPR 2019. Form and
    constants from the authors' training code, yuruntian/HyNet train.py (``sos_loss``;
    the SOSNet repositories publish inference code only).

    Formula: a matching pair should see the other points at the same distances:
    ``R = mean_i sqrt( sum_{j in N_i} (d(a_i, a_j) - d(p_i, p_j))^2 + 1e-6 )`` with
    ``d(x, y) = sqrt(|2 (1 - x.y)| + 1e-6)`` (unit-vector distance, utils.py). The
    neighbour set N_i (never i itself) is the union of four k-nearest-neighbour graphs,
    each made symmetric (j in N_i whenever i in N_j): the knn nearest other anchors of
    each anchor, the knn nearest other positives of each positive, the knn nearest
    non-matching positives of each anchor and the knn nearest non-matching anchors of
    each positive. Neighbours are ranked on detached distances with 2 added to the
    diagonal and then 2 more to distances <= 8e-3 (duplicates go last), as the code does.
    The paper states N_i as the kNN of x_i among anchors together with the kNN of x_i+
    among positives; the code's union is wider (cross-view neighbours, symmetrised) and
    is what is reproduced here. The code sums over i; this function averages (the
    paper's 1/N), which rescales it by 1/B and leaves the ratio to the mean first-order
    loss of :func:`sosnet_loss` as in the code.

    Defaults: knn = 8 (train.py ``--knn_sos``, the paper's K); 1e-6 and 8e-3 from utils.py.
    With knn >= B - 1 every other point is a neighbour.

    Args:
        anchor, positive: (B, D) floating tensors of unit rows, B >= 2.
        knn: neighbours per point, >= 1.

    Returns: scalar tensor (>= 1e-3 because of the 1e-6 inside the root).

    Raises: cvdeep.Error for bad shapes, B < 2 or knn < 1.
    """
    _check_pair(anchor, positive)
    knn = _check_int("knn", knn, 1)
    with _full_precision(anchor.device):
        a, p = _upcast(anchor), _upcast(positive)
        within_anchor, within_positive = _unit_distances(a, a), _unit_distances(p, p)
        neighbours = _sos_neighbours(within_anchor, within_positive, _unit_distances(a, p), knn)
        mismatch = (within_anchor - within_positive) * neighbours.to(a.dtype)
        return torch.sqrt(mismatch.pow(2).sum(dim=1) + TIAN_SQRT_EPS).mean()


def sosnet_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = SOSNET_MARGIN,
                knn: int = SOS_KNN) -> torch.Tensor:
    """SOSNet's training loss: first-order triplet loss plus the second-order regulariser.

    Paper: Tian et al., CVPR 2019 (see :func:`sos_regularizer`); form from the authors'
    ``Loss_SOSNet`` in yuruntian/HyNet train.py.

    Formula: ``L = mean_i max(0, margin + d(a_i, p_i) - n_i)^2 + sos_regularizer(...)``
    with the squared hinge of the paper's first-order similarity (FOS) loss and
    ``d(x, y) = sqrt(|2 (1 - x.y)| + 1e-6)``. The hardest negative n_i is the smallest of
    four distances: anchor i to its nearest other anchor, positive i to its nearest other
    positive, anchor i to its nearest non-matching positive, positive i to its nearest
    non-matching anchor (nearest judged with the diagonal and duplicates <= 8e-3 pushed
    back, as for the SOS neighbours). The two terms are added with weight 1, as the code
    does (the code sums both over the batch; both are averaged here, same ratio).

    Defaults: margin = 1.0 is the paper's FOS margin t = 1 as cvdeep reads the SOSNet
    paper; it could not be checked against a stored source here, and the authors' HyNet
    repository trains SOSNet with its shared ``--margin`` default of 1.2 -- pass
    ``margin=1.2`` for that. knn = 8 (``--knn_sos``).

    Args:
        anchor, positive: (B, D) floating tensors of unit rows, B >= 2.
        margin: >= 0.
        knn: >= 1.

    Returns: scalar tensor.

    Raises: cvdeep.Error for bad shapes, B < 2 or parameters out of range.
    """
    _check_pair(anchor, positive)
    margin = _check_real("margin", margin, 0.0)
    knn = _check_int("knn", knn, 1)
    with _full_precision(anchor.device):
        a, p = _upcast(anchor), _upcast(positive)
        within_anchor, within_positive, cross = _unit_distances(a, a), _unit_distances(p, p), _unit_distances(a, p)
        negative_distance = _hardest_negative_four_sets(within_anchor, within_positive, cross)
        first_order = torch.clamp(margin + cross.diagonal() - negative_distance, min=0.0).pow(2).mean()
        neighbours = _sos_neighbours(within_anchor, within_positive, cross, knn)
        mismatch = (within_anchor - within_positive) * neighbours.to(a.dtype)
        second_order = torch.sqrt(mismatch.pow(2).sum(dim=1) + TIAN_SQRT_EPS).mean()
        return first_order + second_order


# ------------------------------------------------------------------------------------------------------
# HyNet
# ------------------------------------------------------------------------------------------------------

def hybrid_similarity_loss(anchor: torch.Tensor, positive: torch.Tensor, alpha: float = HYNET_ALPHA,
                           margin: float = HYNET_MARGIN, gamma: float = HYNET_GAMMA,
                           raw_anchor: torch.Tensor | None = None,
                           raw_positive: torch.Tensor | None = None) -> torch.Tensor:
    """HyNet's triplet loss on the hybrid similarity, plus its descriptor-norm regulariser.

    Paper: Y. Tian, A. Barroso-Laguna, T. Ng, V. Balntas, K. Mikolajczyk, "HyNet:
    Learning Local Descriptor with Hybrid Similarity Measure and Triplet Loss", NeurIPS
    2020. Form and constants from the authors' ``Loss_HyNet`` in yuruntian/HyNet train.py.

    Formula: for unit vectors with inner product s and L2 distance
    ``d = sqrt(|2 (1 - s)| + 1e-6)`` the hybrid distance is ``h = d + alpha d^2 / 2``,
    i.e. ``alpha (1 - s) + d`` up to the 1e-6: a weighted sum of the inner-product and
    L2 dissimilarities, which is how the authors' code realises the paper's hybrid
    similarity s_H (up to sign and an additive constant). The triplet term is
    ``mean_i max(0, margin + h(d_ii) - h(n_i))`` with the hardest negative n_i taken as in
    :func:`sosnet_loss` (smallest of the four nearest-negative distances, diagonal and duplicates
    <= 8e-3 skipped; h is increasing so the hardest in d is the hardest in h). The regulariser is
    ``gamma * mean_i (||r_i|| - ||r_i+||)^2`` on the norms ``sqrt(sum r^2 + 1e-6)`` of the
    descriptors *before* L2 normalisation (``raw_anchor``, ``raw_positive``): the L2
    regularisation of HyNet acts on the magnitudes of the two descriptors of each
    positive pair, pulling them to the same norm. The normalised inputs all have norm 1,
    so without raw descriptors the regulariser is 0 and is skipped.

    Differences from the sources: the official code sums both terms over the batch and
    the paper averages; this averages both (same ratio, 1/B scale). The paper scales s_H
    by a constant 1/Z that bounds its gradient (SDGMNet's re-implementation of this loss
    divides by the maximum of that gradient); the authors' code, followed here, has no
    such factor and applies margin 1.2 to h directly.

    Defaults: alpha = 2, margin = 1.2 (train.py ``--alpha``, ``--margin``); gamma = 0.1
    (``norm_loss_pos``); 1e-6 and 8e-3 from utils.py.

    Args:
        anchor, positive: (B, D) floating tensors of unit rows, B >= 2.
        alpha: >= 0. margin: >= 0. gamma: >= 0.
        raw_anchor, raw_positive: both or neither; (B, D') pre-normalisation descriptors.

    Returns: scalar tensor.

    Raises: cvdeep.Error for bad shapes, B < 2, parameters out of range, or only one of
    the raw descriptors.
    """
    _check_pair(anchor, positive)
    alpha = _check_real("alpha", alpha, 0.0)
    margin = _check_real("margin", margin, 0.0)
    gamma = _check_real("gamma", gamma, 0.0)
    if (raw_anchor is None) != (raw_positive is None):
        raise Error("raw_anchor and raw_positive (descriptors before L2 normalisation) go together: pass both "
                    "or neither")
    if raw_anchor is not None and raw_positive is not None:
        _check_pair(raw_anchor, raw_positive)
        if raw_anchor.shape[0] != anchor.shape[0]:
            raise Error(f"raw descriptors need one row per pair, B={anchor.shape[0]}; got {tuple(raw_anchor.shape)}")
    with _full_precision(anchor.device):
        a, p = _upcast(anchor), _upcast(positive)
        within_anchor, within_positive, cross = _unit_distances(a, a), _unit_distances(p, p), _unit_distances(a, p)
        negative_distance = _hardest_negative_four_sets(within_anchor, within_positive, cross)
        positive_distance = cross.diagonal()

        def hybrid(distance: torch.Tensor) -> torch.Tensor:
            return distance + alpha * distance.pow(2) / 2.0

        loss = torch.clamp(margin + hybrid(positive_distance) - hybrid(negative_distance), min=0.0).mean()
        if raw_anchor is not None and raw_positive is not None and gamma > 0.0:
            ra, rp = _upcast(raw_anchor), _upcast(raw_positive)
            norm_a = torch.sqrt(ra.pow(2).sum(1) + TIAN_SQRT_EPS)
            norm_p = torch.sqrt(rp.pow(2).sum(1) + TIAN_SQRT_EPS)
            loss = loss + gamma * (norm_a - norm_p).pow(2).mean()
        return loss


# ------------------------------------------------------------------------------------------------------
# SDGMNet
# ------------------------------------------------------------------------------------------------------

_SDGM_RUNNING = ("pos_angle_mean", "pos_angle_std", "neg_angle_mean", "neg_angle_std", "diff_angle_mean",
                 "diff_angle_std", "pos_power", "neg_power")


class SDGMLoss(nn.Module):
    """SDGMNet's triplet loss on included angles with statistic-based gradient modulation.

    Paper: Y. Deng, J. Ma, "SDGMNet: Statistic-based Dynamic Gradient Modulation for Local
    Descriptor Learning", arXiv 2106.04434 (2022). Formulation and constants reproduce
    ``SDGMloss`` of the official code, ACuOoOoO/SDGMNet losses.py, with the defaults of
    its train.py.

    Per pair i (all angles in radians, ``acos`` of a cosine clamped to [-1+1e-5, 1-1e-5]):

    - positive angle ``theta_p,i`` between a_i and p_i;
    - negative angle ``theta_n,i``: the smallest included angle of point i to any other
      point j, over the four pairings (a_i, p_j), (a_j, p_i), (a_i, a_j), (p_i, p_j). The
      four cosines of each (i, j) are reduced to their maximum first; if that maximum is
      >= the duplicate threshold, the point pair (i, j) is skipped as a duplicate (the
      code subtracts 10). The threshold is cos = 1 - 1e-5 before training progress
      0.125 and cos(0.6 rad) from then on;
    - ``diff_i = theta_p,i - theta_n,i``.

    Running statistics (buffers, in ``state_dict``; ``m = momentum = 0.999``, update
    ``x <- m x + (1 - m) x_batch``; std is the unbiased batch std), updated once per
    forward call in training mode, *before* they are used in the same call:

    - ``pos_angle_mean/std`` and ``neg_angle_mean/std``: the first update sets them to
      the batch values, later updates use the momentum;
    - ``diff_angle_std``: likewise set by the first update;
    - ``diff_angle_mean``: starts at -1, the first update leaves it there and later
      updates use the momentum (so the first batch's mean is never copied in, unlike the
      other statistics: a quirk of the official code, reproduced as is; the -1 is
      forgotten long before the modulation starts at 10 % of training);
    - ``pos_power``, ``neg_power``: start at 10000 and are always averaged with the
      momentum, of the batch sums of the positive and negative weights below;
    - ``num_updates``: number of updates so far.

    Modulation (weights are constants for back-propagation):

    - (b) probabilistic margin: ``w_c,i = 1`` if ``diff_i >= mu_d + sigma_d * Phi^-1(0.6)``
      else 0, where (mu_d, sigma_d) are the running diff statistics and Phi^-1 the
      standard normal quantile: the ~60 % of triplets with the most negative diff
      (believed to have reached the optimum) are cut off. It applies to both the positive
      and the negative term of the triplet;
    - (a) auto-focus: ``w_s = exp(-(theta - mu)^2 / (2 (pi/6 + sigma)^2))`` with the
      running mean/std of positive (resp. negative) angles, so statistically uncommon
      pairs get less weight;
    - before training progress 0.1 all w_c and w_s are 1 (the statistics still update);
    - (c) power adjustment: ``w_p,i = w_s,p,i w_c,i / P_p`` and
      ``w_n,i = w_s,n,i w_c,i / P_n`` with the running powers, so the total weights of
      positives and negatives are balanced (each sums to about 1).

    Loss: ``sum_i (alpha w_p,i theta_p,i - w_n,i theta_n,i)`` -- a linear "pseudo loss"
    whose gradient is the modulated triplet gradient; its value can be negative. (The
    official code multiplies the weights by 100 and divides the sum by 100; identical.)

    Training progress (``progress``, the official ``timestep``: samples seen / samples of
    the whole run, in [0, 1)) decides the two stages above. It is, in order: the
    ``progress`` argument of ``forward``; else ``num_updates / total_steps`` when
    ``total_steps`` was given (this matches the official schedule exactly and resumes
    with the state_dict); else 1.0 (all stages on).

    In eval mode (``.eval()``) the statistics are not written back: the loss is what the
    training-mode call would return, without side effects.

    Defaults: alpha = 0.9 (train.py ``--alpha``), prob_margin = 0.6 (``--pm``), momentum =
    0.999 (``lam``), eps 1e-5, duplicate angle 0.6 and the stages 0.1 / 0.125, width offset
    pi/6, initial powers 10000 and initial diff mean -1: all from losses.py ``SDGMloss``.

    Differences from the official code, none of which changes a finite result: the
    negative cosine is clamped at both ends (the code clamps only the positive at
    1 - 1e-5, and would give NaN where every candidate of a point is a duplicate); the
    statistics live in buffers so ``state_dict`` resumes training exactly (the code
    re-seeds them from the first batch after a restart); nothing is printed or logged --
    :meth:`statistics` returns the figures for the trainer to log.

    Args:
        alpha: weight of the positive term, >= 0.
        prob_margin: probability of the probabilistic margin, in (0, 1).
        momentum: of the running statistics, in [0, 1).
        total_steps: optimisation steps of the whole run, to derive the progress.

    Raises: cvdeep.Error for parameters out of range, and in forward for bad shapes or B < 2.
    """

    pos_angle_mean: torch.Tensor
    pos_angle_std: torch.Tensor
    neg_angle_mean: torch.Tensor
    neg_angle_std: torch.Tensor
    diff_angle_mean: torch.Tensor
    diff_angle_std: torch.Tensor
    pos_power: torch.Tensor
    neg_power: torch.Tensor
    num_updates: torch.Tensor

    def __init__(self, alpha: float = SDGM_ALPHA, prob_margin: float = SDGM_PROB_MARGIN,
                 momentum: float = SDGM_MOMENTUM, total_steps: int | None = None) -> None:
        super().__init__()
        self.alpha = _check_real("alpha", alpha, 0.0)
        self.prob_margin = _check_real("prob_margin", prob_margin, 0.0, 1.0, low_open=True)
        self.momentum = _check_real("momentum", momentum, 0.0, 1.0)
        self.total_steps = None if total_steps is None else _check_int("total_steps", total_steps, 1)
        self._quantile = float(torch.special.ndtri(torch.tensor(self.prob_margin, dtype=torch.float64)))
        for name in _SDGM_RUNNING:
            self.register_buffer(name, torch.tensor(0.0))
        self.diff_angle_mean.fill_(SDGM_INITIAL_DIFF_MEAN)
        self.pos_power.fill_(SDGM_INITIAL_POWER)
        self.neg_power.fill_(SDGM_INITIAL_POWER)
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))
        self._last: dict[str, torch.Tensor | float] = {}

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, prob_margin={self.prob_margin}, momentum={self.momentum}, "
                f"total_steps={self.total_steps}")

    def _progress(self, progress: float | None) -> float:
        if progress is not None:
            if isinstance(progress, bool) or not isinstance(progress, Real) or not math.isfinite(float(progress)):
                raise Error(f"progress must be a finite real number (fraction of training done); got {progress!r}")
            return float(progress)
        if self.total_steps is not None:
            return int(self.num_updates) / self.total_steps
        return 1.0

    def _averaged(self, running: torch.Tensor, batch: torch.Tensor, first: bool, on_first: str) -> torch.Tensor:
        """The statistic after this update; on the first update "copy" the batch value, "keep" the
        initial value or "average" as on every later update (the official code's three cases)."""
        if first and on_first == "copy":
            return batch
        if first and on_first == "keep":
            return running.clone()
        return self.momentum * running + (1.0 - self.momentum) * batch

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, progress: float | None = None) -> torch.Tensor:
        """Scalar loss of a batch; updates the running statistics in training mode."""
        _check_pair(anchor, positive)
        stage = self._progress(progress)
        with _full_precision(anchor.device):
            a, p = _upcast(anchor), _upcast(positive)
            size = a.shape[0]
            cross, within_anchor, within_positive = a @ p.t(), a @ a.t(), p @ p.t()
            diagonal = SDGM_EXCLUSION * torch.eye(size, dtype=cross.dtype, device=cross.device)
            closest = torch.maximum(torch.maximum(cross - diagonal, cross.t() - diagonal),
                                    torch.maximum(within_anchor - diagonal, within_positive - diagonal))
            threshold = 1.0 - SDGM_EPS if stage < SDGM_DUPLICATE_START else math.cos(SDGM_DUPLICATE_ANGLE)
            closest = closest - SDGM_EXCLUSION * (closest >= threshold).to(closest.dtype)
            negative_cosine = closest.max(dim=0).values
            positive_cosine = cross.diagonal()
            pos_angle = torch.acos(positive_cosine.clamp(-1.0 + SDGM_EPS, 1.0 - SDGM_EPS))
            neg_angle = torch.acos(negative_cosine.clamp(-1.0 + SDGM_EPS, 1.0 - SDGM_EPS))

            with torch.no_grad():
                pos_batch, neg_batch = pos_angle.detach().float(), neg_angle.detach().float()
                diff = pos_batch - neg_batch
                first = int(self.num_updates) == 0
                new = {
                    "pos_angle_mean": self._averaged(self.pos_angle_mean, pos_batch.mean(), first, "copy"),
                    "pos_angle_std": self._averaged(self.pos_angle_std, pos_batch.std(), first, "copy"),
                    "neg_angle_mean": self._averaged(self.neg_angle_mean, neg_batch.mean(), first, "copy"),
                    "neg_angle_std": self._averaged(self.neg_angle_std, neg_batch.std(), first, "copy"),
                    "diff_angle_mean": self._averaged(self.diff_angle_mean, diff.mean(), first, "keep"),
                    "diff_angle_std": self._averaged(self.diff_angle_std, diff.std(), first, "copy"),
                }
                cutoff = new["diff_angle_mean"] + new["diff_angle_std"] * self._quantile
                if stage < SDGM_MODULATION_START:
                    kept = torch.ones_like(diff)
                    focus_pos = torch.ones_like(diff)
                    focus_neg = torch.ones_like(diff)
                else:
                    kept = (diff >= cutoff).float()
                    focus_pos = torch.exp(-(pos_batch - new["pos_angle_mean"]).pow(2)
                                          / (2.0 * (SDGM_WIDTH_OFFSET + new["pos_angle_std"]).pow(2)))
                    focus_neg = torch.exp(-(neg_batch - new["neg_angle_mean"]).pow(2)
                                          / (2.0 * (SDGM_WIDTH_OFFSET + new["neg_angle_std"]).pow(2)))
                weight_pos, weight_neg = focus_pos * kept, focus_neg * kept
                new["pos_power"] = self._averaged(self.pos_power, weight_pos.sum(), first, "average")
                new["neg_power"] = self._averaged(self.neg_power, weight_neg.sum(), first, "average")
                if self.training:
                    for name, value in new.items():
                        getattr(self, name).copy_(value)
                    self.num_updates += 1
                self._last = {"progress": stage, "cutoff": cutoff, "kept_fraction": kept.mean(),
                              "batch_pos_angle_mean": pos_batch.mean(), "batch_neg_angle_mean": neg_batch.mean(),
                              "batch_diff_angle_mean": diff.mean(), "batch_diff_angle_std": diff.std(),
                              "batch_pos_weight": weight_pos.sum(), "batch_neg_weight": weight_neg.sum()}
                scale_pos = (weight_pos / new["pos_power"]).to(pos_angle.dtype)
                scale_neg = (weight_neg / new["neg_power"]).to(neg_angle.dtype)
            return (self.alpha * scale_pos * pos_angle).sum() - (scale_neg * neg_angle).sum()

    def statistics(self) -> dict[str, float]:
        """The running statistics and the last batch's figures, as floats for a logger.

        Keys: the running ``pos_angle_mean``, ``pos_angle_std``, ``neg_angle_mean``,
        ``neg_angle_std``, ``diff_angle_mean``, ``diff_angle_std``, ``pos_power``,
        ``neg_power`` (radians / weight sums), ``num_updates``; and, after a forward call,
        that call's ``progress``, ``cutoff`` (the probabilistic margin on diff, rad),
        ``kept_fraction`` (triplets not cut off), ``batch_pos_angle_mean``,
        ``batch_neg_angle_mean``, ``batch_diff_angle_mean``, ``batch_diff_angle_std``,
        ``batch_pos_weight`` and ``batch_neg_weight`` (sums of the unnormalised weights).
        """
        result = {name: float(getattr(self, name)) for name in _SDGM_RUNNING}
        result["num_updates"] = float(self.num_updates)
        result.update({name: float(value) for name, value in self._last.items()})
        return result


# ------------------------------------------------------------------------------------------------------
# nn.Module wrappers and the registry
# ------------------------------------------------------------------------------------------------------

class MinedHingeLoss(nn.Module):
    """:func:`mined_hinge_loss` (DeepDesc) as a module; arguments as there."""

    def __init__(self, margin: float = DEEPDESC_MARGIN, positive_mining_ratio: float = DEEPDESC_MINING_RATIO,
                 negative_mining_ratio: float = DEEPDESC_MINING_RATIO, negatives: str = "random",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.margin = _check_real("margin", margin, 0.0)
        self.positive_mining_ratio = _check_real("positive_mining_ratio", positive_mining_ratio, 1.0)
        self.negative_mining_ratio = _check_real("negative_mining_ratio", negative_mining_ratio, 1.0)
        if negatives not in ("random", "all"):
            raise Error(f"negatives must be 'random' or 'all'; got {negatives!r}")
        self.negatives = negatives
        self.generator = generator

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, positive_mining_ratio={self.positive_mining_ratio}, "
                f"negative_mining_ratio={self.negative_mining_ratio}, negatives={self.negatives!r}")

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        return mined_hinge_loss(anchor, positive, self.margin, self.positive_mining_ratio,
                                self.negative_mining_ratio, self.negatives, self.generator)


class HardestTripletMarginLoss(nn.Module):
    """:func:`hardest_triplet_margin_loss` (HardNet) as a module; arguments as there."""

    def __init__(self, margin: float = HARDNET_MARGIN, anchor_swap: bool = True) -> None:
        super().__init__()
        self.margin = _check_real("margin", margin, 0.0)
        self.anchor_swap = bool(anchor_swap)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, anchor_swap={self.anchor_swap}"

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        return hardest_triplet_margin_loss(anchor, positive, self.margin, self.anchor_swap)


class SOSNetLoss(nn.Module):
    """:func:`sosnet_loss` (SOSNet: first order + SOS regulariser) as a module; arguments as there."""

    def __init__(self, margin: float = SOSNET_MARGIN, knn: int = SOS_KNN) -> None:
        super().__init__()
        self.margin = _check_real("margin", margin, 0.0)
        self.knn = _check_int("knn", knn, 1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, knn={self.knn}"

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        return sosnet_loss(anchor, positive, self.margin, self.knn)


class HybridSimilarityLoss(nn.Module):
    """:func:`hybrid_similarity_loss` (HyNet) as a module; arguments as there.

    ``forward(anchor, positive, raw_anchor=None, raw_positive=None)``: pass the
    descriptors before L2 normalisation to activate the norm regulariser.
    """

    def __init__(self, alpha: float = HYNET_ALPHA, margin: float = HYNET_MARGIN, gamma: float = HYNET_GAMMA) -> None:
        super().__init__()
        self.alpha = _check_real("alpha", alpha, 0.0)
        self.margin = _check_real("margin", margin, 0.0)
        self.gamma = _check_real("gamma", gamma, 0.0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, margin={self.margin}, gamma={self.gamma}"

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, raw_anchor: torch.Tensor | None = None,
                raw_positive: torch.Tensor | None = None) -> torch.Tensor:
        return hybrid_similarity_loss(anchor, positive, self.alpha, self.margin, self.gamma, raw_anchor, raw_positive)


# --- L2-Net: Tian et al., CVPR 2017, section 3.2 ---------------------------------------------------
#: Offset in L2-Net's similarity exp(2 - d): 2 is the largest distance of unit descriptors.
L2NET_OFFSET = 2.0


def l2net_loss(anchor: torch.Tensor, positive: torch.Tensor, compactness_weight: float = 1.0) -> torch.Tensor:
    """L2-Net's training objective without its intermediate-feature term (Tian et al., CVPR 2017).

    E1 (relative distance): with ``d_ij = ||a_i - p_j||`` and similarity ``s_ij = exp(2 - d_ij)``,
    the matching pair should win both its column and its row softmax:
    ``E1 = -1/2 (mean_i log(s_ii / sum_k s_ki) + mean_i log(s_ii / sum_k s_ik))``.
    E2 (compactness): each set's descriptor dimensions, centred and normalised over the batch,
    should be decorrelated: ``E2 = 1/2 (mean of squared off-diagonal correlations of the anchors
    + the same for the positives)``. Returns ``E1 + compactness_weight * E2``.

    The paper sums over pairs and adds E3, a supervision of intermediate feature maps; this
    averages (so the scale does not grow with B) and leaves E3 out, as cvdeep's trainer sees
    only the descriptors. (B, D) inputs as every loss here.
    """
    _check_pair(anchor, positive)
    _check_real("compactness_weight", compactness_weight, 0.0)
    with _full_precision(anchor.device):
        a, p = _upcast(anchor), _upcast(positive)
        logits = L2NET_OFFSET - _unit_distances(a, p)
        diagonal = logits.diagonal()
        columns = diagonal - torch.logsumexp(logits, dim=0)
        rows = diagonal - torch.logsumexp(logits, dim=1)
        relative = -0.5 * (columns.mean() + rows.mean())

        def decorrelation(x: torch.Tensor) -> torch.Tensor:
            centred = x - x.mean(dim=0, keepdim=True)
            unit = centred / centred.norm(dim=0, keepdim=True).clamp_min(1e-8)
            correlation = unit.t() @ unit
            off = correlation - torch.diag_embed(correlation.diagonal())
            dims = x.shape[1]
            return off.pow(2).sum() / max(dims * (dims - 1), 1)

        compact = 0.5 * (decorrelation(a) + decorrelation(p))
        return relative + compactness_weight * compact


class L2NetLoss(nn.Module):
    """Module form of :func:`l2net_loss`."""

    def __init__(self, compactness_weight: float = 1.0) -> None:
        super().__init__()
        self.compactness_weight = _check_real("compactness_weight", compactness_weight, 0.0)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        return l2net_loss(anchor, positive, self.compactness_weight)


class _LossRegistry(dict):
    """A dict whose missing keys raise cvdeep.Error naming the accepted losses."""

    def __missing__(self, name: object) -> Callable[..., nn.Module]:
        raise Error(f"unknown loss {name!r}; accepted: {', '.join(sorted(self))}")


#: Loss name -> factory; ``LOSSES[name](**overrides)`` returns an nn.Module with
#: ``forward(anchor, positive) -> scalar`` built with its paper's defaults.
LOSSES: dict[str, Callable[..., nn.Module]] = _LossRegistry({
    "deepdesc": MinedHingeLoss,
    "hardnet": HardestTripletMarginLoss,
    "sosnet": SOSNetLoss,
    "hynet": HybridSimilarityLoss,
    "sdgm": SDGMLoss,
    "l2net": L2NetLoss,
})


def make_loss(name: str, **overrides: Any) -> nn.Module:
    """``LOSSES[name](**overrides)``; cvdeep.Error for an unknown name or a bad override value.

    A keyword the loss does not take raises cvdeep.Error listing the ones it does.
    """
    factory = LOSSES[name]
    try:
        return factory(**overrides)
    except TypeError as error:
        accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
        raise Error(f"loss {name!r} got an unexpected keyword ({error}); accepted: {', '.join(accepted)}") from None
