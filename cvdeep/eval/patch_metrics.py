"""Metrics for patch descriptors: verification (FPR at 95 % recall) and matching (mAP).

Both take descriptors or distances as NumPy arrays or torch tensors (any float dtype,
any device; they are read as float64 on the CPU) and follow the convention of the
losses in ``cvdeep.train.losses``: a lower L2 distance means more similar. Invalid input
raises ``cvdeep.Error`` (a ``ValueError``).

- :func:`fpr_at_recall` -- the patch-verification protocol of Brown, Hua and Winder
  ("Discriminative Learning of Local Image Descriptors", PAMI 2011) used on the UBC
  PhotoTour pairs by every patch-descriptor paper since (HardNet, SOSNet, HyNet,
  SDGMNet): the false positive rate at the distance threshold that accepts 95 % of the
  matching pairs.
- :func:`matching_map` -- matching mean average precision in the style of HPatches
  (Balntas et al., CVPR 2017): each anchor descriptor ranks the candidate descriptors by
  distance; its true match is the candidate in the same row.
"""
from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from ..errors import Error

__all__ = ["fpr_at_recall", "matching_map"]

#: Memory budget (float64 elements) of one chunk of query-candidate differences in matching_map.
_CHUNK_ELEMENTS = 1 << 22


def _as_float64(name: str, values: Any) -> np.ndarray:
    """A float64 NumPy copy of an array-like or torch tensor; cvdeep.Error if it is not numeric and finite."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise Error(f"{name} must be numeric (a NumPy array or torch tensor); got {type(values).__name__}") from None
    if not np.all(np.isfinite(array)):
        raise Error(f"{name} must be finite; it contains NaN or infinity")
    return array


def fpr_at_recall(distances: Any, labels: Any, recall: float = 0.95) -> float:
    """False positive rate at the threshold that accepts ``recall`` of the matching pairs.

    Protocol of Brown et al. (PAMI 2011), "FPR95" at the default recall: pairs with a
    distance at or below a threshold t are declared matching. t is the smallest distance
    at which the accepted matching pairs reach ``recall`` of all matching pairs, i.e. the
    k-th smallest matching distance with k the least integer >= ``recall * n_matching``
    (the same k as the ``np.cumsum(labels) >= 0.95 * n`` rule of HardNet's
    ``ErrorRateAt95Recall``). The result is the fraction of non-matching pairs with
    distance <= t. Ties are resolved against the descriptor: a non-matching pair at
    exactly t counts as a false positive (HardNet's code breaks such ties by sort
    order instead; the two agree whenever no non-matching distance equals t).

    Args:
        distances: (N,) distances, lower = more similar.
        labels: (N,) 1/True for a matching pair, 0/False otherwise.
        recall: the true positive rate to reach, in (0, 1]; 0.95 by the protocol.

    Returns: the false positive rate in [0, 1] (float).

    Raises: cvdeep.Error for shapes that are not (N,) and (N,), labels other than 0/1,
    no matching or no non-matching pair, non-finite values, or recall outside (0, 1].
    """
    if isinstance(recall, bool) or not isinstance(recall, Real) or not 0.0 < float(recall) <= 1.0:
        raise Error(f"recall must be a number in (0, 1]; got {recall!r}")
    distance = _as_float64("distances", distances)
    label = _as_float64("labels", labels)
    if distance.ndim != 1 or label.shape != distance.shape:
        raise Error(f"distances and labels must both be 1-D of one length (N,); got shapes {distance.shape} "
                    f"and {label.shape}")
    if not np.all((label == 0) | (label == 1)):
        raise Error("labels must be 1/True (matching pair) or 0/False (non-matching pair); got other values")
    matching = label == 1
    n_matching, n_other = int(matching.sum()), int((~matching).sum())
    if n_matching == 0 or n_other == 0:
        raise Error(f"need at least one matching and one non-matching pair; got {n_matching} matching and "
                    f"{n_other} non-matching")
    ordered = np.sort(distance[matching])
    needed = int(np.argmax(np.arange(1, n_matching + 1) >= recall * n_matching)) + 1
    threshold = ordered[needed - 1]
    return float(np.count_nonzero(distance[~matching] <= threshold)) / n_other


def matching_map(anchor: Any, candidates: Any, return_per_query: bool = False) -> float | tuple[float, np.ndarray]:
    """Mean average precision of matching each anchor descriptor among the candidates.

    For query i (row i of ``anchor``) all candidates are ranked by L2 distance to it; the
    correct candidate is row i of ``candidates`` and every other row is wrong (rows
    beyond the number of anchors are pure distractors). With one relevant item the
    average precision of a query is 1 / rank of its correct candidate; the result is the
    mean over the queries (so it equals the mean reciprocal rank). Ties count against the
    query: the rank is the number of candidates at a distance <= that of the correct one.

    This is the per-query reading of HPatches' matching task. The HPatches benchmark
    code itself scores only each query's nearest neighbour and computes one precision-
    recall curve over all queries sorted by that distance; the two are different numbers.

    Args:
        anchor: (N, D) query descriptors.
        candidates: (M, D) descriptors, M >= N, row i the true match of anchor row i.
        return_per_query: also return the (N,) average precisions.

    Returns: the mAP in (0, 1] (float), and the per-query APs if asked.

    Raises: cvdeep.Error for shapes that are not (N, D) and (M >= N, D), N = 0, or
    non-finite values.
    """
    queries = _as_float64("anchor", anchor)
    pool = _as_float64("candidates", candidates)
    if queries.ndim != 2 or pool.ndim != 2 or queries.shape[1] != pool.shape[1]:
        raise Error(f"anchor and candidates must be 2-D (N, D) and (M, D) with one D; got shapes {queries.shape} "
                    f"and {pool.shape}")
    n_queries, n_pool = queries.shape[0], pool.shape[0]
    if n_queries == 0 or n_pool < n_queries:
        raise Error(f"need N >= 1 anchors and M >= N candidates (row i of candidates matches anchor i); got "
                    f"N={n_queries}, M={n_pool}")
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_pool * queries.shape[1]))
    precision = np.empty(n_queries)
    for start in range(0, n_queries, chunk):
        stop = min(n_queries, start + chunk)
        squared = ((queries[start:stop, None, :] - pool[None, :, :]) ** 2).sum(axis=2)
        correct = squared[np.arange(stop - start), np.arange(start, stop)]
        rank = (squared <= correct[:, None]).sum(axis=1)
        precision[start:stop] = 1.0 / rank
    mean = float(precision.mean())
    return (mean, precision) if return_per_query else mean
