"""``cvdeep.BFMatcher``: the ``cv2.BFMatcher`` contract on top of the fused L2 top-k kernel.

Same methods, arguments, overloads and results as OpenCV (real ``cv2.DMatch`` objects,
short k-NN lists when the train set has fewer than k rows, ``imgIdx`` over several
train images, masks, ``crossCheck``); only faster. Differences, all on purpose:

- Ties: among equal distances the lower train index (then lower image) comes first;
  OpenCV's order among exact ties is an implementation detail (it may even drop
  duplicates from a k-NN list).
- ``crossCheck=True`` also works with masks and several train images (OpenCV asserts);
  it is the mutual check over the whole collection.
- ``radiusMatch(..., compactResult=True)`` leaves out queries without matches; OpenCV 5.0
  moves them to the end of the list instead (its list keeps one entry per query).
- ``None`` descriptors (what ``detectAndCompute`` returns for an image without keypoints) are
  an empty set on either side: ``knnMatch(d, None, k=2)`` gives one empty list per query row,
  as OpenCV does for an empty train array; OpenCV asserts on a ``None`` train set.
- A train collection has one width and one dtype, checked by ``add`` (OpenCV accepts the
  mixture and asserts at the first match).
- Bad input raises :class:`cvdeep.Error` instead of ``cv2.error``.
- Instances pickle and deep-copy with their train collection (``joblib``, ``multiprocessing``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from .. import ops
from ..errors import Error

_NORM_NAMES = {
    cv2.NORM_L1: "NORM_L1",
    cv2.NORM_L2: "NORM_L2",
    cv2.NORM_L2SQR: "NORM_L2SQR",
    cv2.NORM_HAMMING: "NORM_HAMMING",
}
_CHUNK_ELEMENTS = 1 << 22  # query rows x train rows per block on the generic (masked / radius) path

Matches = tuple[cv2.DMatch, ...]


def _dmatches(query: np.ndarray, train: np.ndarray, image: np.ndarray, distance: np.ndarray) -> list[cv2.DMatch]:
    """Flat arrays -> cv2.DMatch objects; ``map`` over Python lists is the cheapest constructor call."""
    return list(map(cv2.DMatch, query.tolist(), train.tolist(), image.tolist(), distance.tolist()))


def _split_rows(matches: list[cv2.DMatch], counts: np.ndarray, compact: bool) -> tuple[Matches, ...]:
    """Per-query tuples; ``compact`` leaves out queries without any match (OpenCV's compactResult)."""
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    return tuple(tuple(matches[s:e]) for s, e in zip(starts, ends) if not compact or e > s)


def _hamming_distances(query: np.ndarray, train_bits: np.ndarray, train_counts: np.ndarray) -> np.ndarray:
    """Hamming distances of uint8 ``query`` rows to train rows given as unpacked float32 bits and
    their bit counts: |a xor b| = |a| + |b| - 2 a.b, one float32 matrix product. Exact (every partial
    sum is an integer below 2^24) and runs on any NumPy (``np.bitwise_count`` needs NumPy 2)."""
    bits = np.unpackbits(query, axis=1).astype(np.float32)
    distances = bits @ train_bits.T
    distances *= -2.0
    distances += bits.sum(axis=1, dtype=np.float32)[:, None]
    distances += train_counts[None, :]
    return distances


def _smallest_columns(dist: np.ndarray, k: int) -> np.ndarray:
    """(N, k) column indices of the k smallest entries of each row, ascending, the lower column first
    among equal values: ``np.argsort(dist, axis=1, kind="stable")[:, :k]`` without sorting whole rows.

    Non-finite entries (NaN and inf alike) come after every finite one.
    """
    n, m = dist.shape
    if k == 0 or 4 * k >= m:
        return np.argsort(dist, axis=1, kind="stable")[:, :k]
    dist = np.where(np.isnan(dist), np.inf, dist)
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]  # the k-th smallest value of each row
    rows, cols = np.nonzero(dist <= kth)  # at least k per row; ties at the k-th value add more
    order = np.lexsort((cols, dist[rows, cols], rows))  # by row, then value, then column
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within its row
    keep = rank < k
    smallest = np.empty((n, k), np.int64)
    smallest[rows[keep], rank[keep]] = cols[keep]
    return smallest


class BFMatcher:
    """Brute-force descriptor matcher, a drop-in for ``cv2.BFMatcher``.

    ``normType``: ``cv2.NORM_L2`` (default), ``NORM_L2SQR`` or ``NORM_L1`` for float32 (or
    uint8) descriptors, ``NORM_HAMMING`` for binary uint8 descriptors (ORB, BRISK, AKAZE).
    ``crossCheck``: keep only mutual nearest neighbours (then k-NN needs k = 1).
    """

    def __init__(self, normType: int = cv2.NORM_L2, crossCheck: bool = False) -> None:
        if normType not in _NORM_NAMES:
            accepted = ", ".join(f"cv2.{n} ({v})" for v, n in _NORM_NAMES.items())
            raise Error(f"BFMatcher: normType {normType!r} is not supported; accepted: {accepted}")
        self.normType = int(normType)
        self.crossCheck = bool(crossCheck)
        self._train: list[np.ndarray] = []
        self._stacked: tuple[np.ndarray, np.ndarray] | None = None  # (all rows, row offsets) cache

    @classmethod
    def create(cls, normType: int = cv2.NORM_L2, crossCheck: bool = False) -> BFMatcher:
        return cls(normType, crossCheck)

    # --- the train collection (cv2.DescriptorMatcher) ---

    def add(self, descriptors: Sequence[np.ndarray | None] | None) -> None:
        """Append train images' descriptors (a list of (M_i, D) arrays) to the collection.

        Every non-empty array must have the width and dtype of the collection's (``cvdeep.Error``
        otherwise); ``None`` adds nothing, a ``None`` entry adds an image without descriptors.
        """
        if descriptors is None:
            return
        if isinstance(descriptors, np.ndarray) or not isinstance(descriptors, (list, tuple)):
            raise Error(f"BFMatcher.add: expected a list of descriptor arrays, got {type(descriptors).__name__}")
        checked = [np.zeros((0, 0), np.float32) if d is None else self._check(d, "train descriptors")
                   for d in descriptors]
        self._check_collection([*self._train, *checked], "BFMatcher.add")
        self._train.extend(checked)
        self._stacked = None

    @staticmethod
    def _check_collection(arrays: Sequence[np.ndarray], where: str) -> None:
        """One descriptor width and one dtype over the train images (empty ones carry no dtype)."""
        widths = {d.shape[1] for d in arrays if d.ndim == 2 and d.shape[1] > 0}
        dtypes = {d.dtype for d in arrays if d.size}
        if len(widths) > 1 or len(dtypes) > 1:
            given = ", ".join(f"{i}: {d.dtype} ({len(d)}, {d.shape[1] if d.ndim == 2 else 0})"
                              for i, d in enumerate(arrays))
            raise Error(f"{where}: the train images' descriptors must all have one width and one dtype, "
                        f"as the queries will; got {given}")

    def getTrainDescriptors(self) -> tuple[np.ndarray, ...]:
        return tuple(self._train)

    def clear(self) -> None:
        self._train = []
        self._stacked = None

    def empty(self) -> bool:
        return len(self._train) == 0

    def train(self) -> None:
        """Check and prepare the collection for matching (stacks it once instead of at every call)."""
        self._collection()

    # --- pickling: parameters and the train collection travel, caches do not ---

    def __getstate__(self) -> dict[str, Any]:
        return {"normType": self.normType, "crossCheck": self.crossCheck, "train": list(self._train)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.normType, self.crossCheck = int(state["normType"]), bool(state["crossCheck"])
        self._train = [np.asarray(d) for d in state["train"]]
        self._stacked = None

    def isMaskSupported(self) -> bool:
        return True

    def getDefaultName(self) -> str:
        return "cvdeep.BFMatcher"

    def clone(self, emptyTrainData: bool = False) -> BFMatcher:
        copy = BFMatcher(self.normType, self.crossCheck)
        if not emptyTrainData:
            copy._train = [d.copy() for d in self._train]
        return copy

    # --- matching ---

    def match(self, queryDescriptors: np.ndarray | None, *args: Any, **kwargs: Any) -> Matches:
        """``match(query, train[, mask])`` or ``match(query[, masks])``: the best match of each query row."""
        query, trains, masks, _ = self._parse("match", queryDescriptors, args, kwargs, value_name=None)
        if query is None:
            return ()
        return tuple(m for row in self._knn(query, trains, masks, 1) for m in row)

    def knnMatch(self, queryDescriptors: np.ndarray | None, *args: Any, **kwargs: Any) -> tuple[Matches, ...]:
        """``knnMatch(query, train, k[, mask[, compactResult]])`` or
        ``knnMatch(query, k[, masks[, compactResult]])``."""
        query, trains, masks, (k, compact) = self._parse("knnMatch", queryDescriptors, args, kwargs, value_name="k")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise Error(f"BFMatcher.knnMatch: k must be an integer >= 1, got {k!r}")
        if query is None:
            return ()
        if self.crossCheck and k != 1:
            raise Error(f"BFMatcher.knnMatch: crossCheck=True needs k=1, got k={k}")
        return self._knn(query, trains, masks, int(k), compact)

    def radiusMatch(self, queryDescriptors: np.ndarray | None, *args: Any, **kwargs: Any) -> tuple[Matches, ...]:
        """``radiusMatch(query, train, maxDistance[, mask[, compactResult]])`` or
        ``radiusMatch(query, maxDistance[, masks[, compactResult]])``."""
        query, trains, masks, (radius, compact) = self._parse(
            "radiusMatch", queryDescriptors, args, kwargs, value_name="maxDistance"
        )
        if not isinstance(radius, (int, float, np.number)) or not radius > np.finfo(np.float32).eps:
            raise Error(f"BFMatcher.radiusMatch: maxDistance must be a number > {np.finfo(np.float32).eps}, "
                        f"got {radius!r}")
        if query is None:
            return ()
        train, offsets = trains
        if len(train) == 0:  # OpenCV: one empty list per query row
            return _split_rows([], np.zeros(len(query), np.int64), compact)
        found_q, found_t, found_d = [], [], []
        for start, dist in self._distance_blocks(query, train, masks):
            q, t = np.nonzero(dist <= radius)
            order = np.lexsort((t, dist[q, t], q))  # by row, then distance, then train index
            found_q.append(q[order] + start)
            found_t.append(t[order])
            found_d.append(dist[q, t][order])
        q, t, d = (np.concatenate(a) for a in (found_q, found_t, found_d))
        image, local = self._locate(t, offsets)
        counts = np.bincount(q, minlength=len(query))
        return _split_rows(_dmatches(q, local, image, d), counts, compact)

    def match_mutual(
        self, d1: np.ndarray | torch.Tensor | None, d2: np.ndarray | torch.Tensor | None, ratio: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mutual nearest neighbours (optionally with Lowe's ratio test) as index arrays.

        Returns ``(idx1, idx2)`` int64 arrays: ``d1[idx1[i]]`` matches ``d2[idx2[i]]``. No
        DMatch objects are built, which matters for tens of thousands of matches.
        """
        if ratio is not None and not 0 < ratio <= 1:
            raise Error(f"BFMatcher.match_mutual: ratio must be in (0, 1], got {ratio!r}")
        if self.normType not in (cv2.NORM_L2, cv2.NORM_L2SQR):
            raise Error(f"BFMatcher.match_mutual: needs NORM_L2 or NORM_L2SQR, this matcher uses "
                        f"{_NORM_NAMES[self.normType]}")
        if d1 is None or d2 is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        a, b = self._as_tensor(d1, "d1"), self._as_tensor(d2, "d2")
        if a.shape[1] != b.shape[1] and len(a) and len(b):
            raise Error(f"BFMatcher.match_mutual: d1 has {a.shape[1]} columns, d2 has {b.shape[1]}")
        if len(a) == 0 or len(b) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        indices, _ = ops.l2_match(a, b.to(a.device), k=2 if ratio is not None else 1, mutual=True, ratio=ratio)
        first = indices[:, 0].cpu().numpy()
        keep = np.nonzero(first >= 0)[0]
        return keep.astype(np.int64), first[keep].astype(np.int64)

    def _as_tensor(self, descriptors: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
        """Float tensor of (N, D) descriptors; torch tensors stay on their device (CUDA kernels)."""
        if isinstance(descriptors, torch.Tensor):
            if descriptors.dim() != 2 or not (descriptors.is_floating_point() or descriptors.dtype == torch.uint8):
                raise Error(f"BFMatcher: {what} must be a 2-D float or uint8 tensor, "
                            f"got {descriptors.dtype} {tuple(descriptors.shape)}")
            return descriptors.float()
        return torch.from_numpy(self._check(descriptors, what)).float()

    # --- internals ---

    def _check(self, descriptors: Any, what: str) -> np.ndarray:
        if not isinstance(descriptors, np.ndarray):
            raise Error(f"BFMatcher: {what} must be a numpy array, got {type(descriptors).__name__}")
        if descriptors.size == 0:
            return descriptors.reshape(0, descriptors.shape[-1] if descriptors.ndim == 2 else 0)
        if descriptors.ndim != 2:
            raise Error(f"BFMatcher: {what} must be 2-D (N, D), got shape {descriptors.shape}")
        accepted = (np.uint8,) if self.normType == cv2.NORM_HAMMING else (np.float32, np.uint8)
        if descriptors.dtype not in accepted:
            names = " or ".join(np.dtype(t).name for t in accepted)
            raise Error(f"BFMatcher: {what} have dtype {descriptors.dtype}; "
                        f"{_NORM_NAMES[self.normType]} accepts {names}")
        return np.ascontiguousarray(descriptors)

    @staticmethod
    def _check_pair(query: np.ndarray, train: np.ndarray) -> None:
        if query.size and train.size and (query.shape[1] != train.shape[1] or query.dtype != train.dtype):
            raise Error(
                f"BFMatcher: query ({query.dtype}, {query.shape[1]} columns) and train ({train.dtype}, "
                f"{train.shape[1]} columns) descriptors must have the same type and size"
            )

    def _collection(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stacked is None:
            self._check_collection(self._train, "BFMatcher.train")
            non_empty = [d for d in self._train if d.size]
            width = non_empty[0].shape[1] if non_empty else 0
            dtype = non_empty[0].dtype if non_empty else np.float32
            if non_empty:
                rows = np.concatenate([d.reshape(-1, width) for d in self._train])
            else:
                rows = np.zeros((0, width), dtype)
            offsets = np.cumsum([0, *(len(d) for d in self._train)])
            self._stacked = (rows, offsets)
        return self._stacked

    def _parse(
        self, method: str, query: Any, args: tuple[Any, ...], kwargs: dict[str, Any], value_name: str | None
    ) -> tuple[Any, Any, Any, tuple[Any, bool]]:
        """Resolve OpenCV's two overloads: (query, train, [value], mask, ...) and (query, [value], masks, ...).

        Returns (query, (train rows, row offsets), (N_query, M_total) bool mask or None, (value,
        compactResult)); query is None when there is nothing to match.
        """
        # As OpenCV's binding: an array (or None, an empty set) right after the query is the train set.
        explicit_train = bool(args) and (args[0] is None or isinstance(args[0], np.ndarray)) \
            or "trainDescriptors" in kwargs
        names = ["trainDescriptors"] if explicit_train else []
        names += [value_name] if value_name else []
        names += ["mask"] if explicit_train else ["masks"]
        names += ["compactResult"] if value_name else []
        if len(args) > len(names):
            raise Error(f"BFMatcher.{method}: too many positional arguments ({len(args) + 1})")
        values = dict(zip(names, args))
        for key, argument in kwargs.items():
            if key not in names or key in values:
                raise Error(f"BFMatcher.{method}: unexpected or repeated argument {key!r}; "
                            f"accepted: queryDescriptors, {', '.join(names)}")
            values[key] = argument
        if value_name and value_name not in values:
            raise Error(f"BFMatcher.{method}: missing argument {value_name!r}")
        value = values.get(value_name) if value_name else None
        if query is None:  # detectAndCompute's descriptors for an image without keypoints
            return None, None, None, (value, bool(values.get("compactResult", False)))
        query = self._check(query, "query descriptors")
        if explicit_train:
            given_train = values["trainDescriptors"]
            train = (np.zeros((0, 0), query.dtype) if given_train is None
                     else self._check(given_train, "train descriptors"))
            trains = (train, np.array([0, len(train)]))
            mask = values.get("mask")
            masks = None if mask is None or (isinstance(mask, np.ndarray) and mask.size == 0) else [mask]
        else:
            if self.empty():
                return None, None, None, (value, bool(values.get("compactResult", False)))
            trains = self._collection()
            given = values.get("masks")
            masks = None if given is None or len(given) == 0 else list(given)
        self._check_pair(query, trains[0])
        full_mask = None if masks is None else self._check_masks(method, masks, len(query), trains[1])
        result = (value, bool(values.get("compactResult", False)))
        if len(query) == 0:
            return None, None, None, result
        return query, trains, full_mask, result

    @staticmethod
    def _check_masks(method: str, masks: list[Any], n_query: int, offsets: np.ndarray) -> np.ndarray:
        """One (N_query, M_total) bool array from the per-image uint8 masks."""
        if len(masks) != len(offsets) - 1:
            raise Error(f"BFMatcher.{method}: got {len(masks)} masks for {len(offsets) - 1} train images")
        full = np.ones((n_query, offsets[-1]), dtype=bool)
        for i, mask in enumerate(masks):
            expected = (n_query, offsets[i + 1] - offsets[i])
            if mask is None or (isinstance(mask, np.ndarray) and mask.size == 0):
                continue
            if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.shape != expected:
                got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
                raise Error(f"BFMatcher.{method}: mask {i} must be uint8 of shape {expected} (query x train), "
                            f"got {got}")
            full[:, offsets[i] : offsets[i + 1]] = mask != 0
        return full

    @staticmethod
    def _locate(global_index: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = np.searchsorted(offsets, global_index, side="right") - 1
        return image, global_index - offsets[image]

    def _distances(self, query: np.ndarray, train: torch.Tensor) -> np.ndarray:
        """Dense float32 L1 / L2 / squared-L2 distances of a block of query rows to all train rows (float64)."""
        q = torch.from_numpy(query).double()
        if self.normType == cv2.NORM_L1:
            return torch.cdist(q, train, p=1).float().numpy()
        squared = ((q * q).sum(1, keepdim=True) - 2 * q @ train.t() + (train * train).sum(1)[None]).clamp_min(0)
        return (squared if self.normType == cv2.NORM_L2SQR else squared.sqrt()).float().numpy()

    def _distance_blocks(
        self, query: np.ndarray, train: np.ndarray, masks: np.ndarray | None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, distances) blocks of query rows; masked-out pairs are inf."""
        distances: Callable[[np.ndarray], np.ndarray]
        if self.normType == cv2.NORM_HAMMING:
            bits = np.unpackbits(train, axis=1).astype(np.float32)  # converted once, not per block
            counts = bits.sum(axis=1, dtype=np.float32)
            distances = functools.partial(_hamming_distances, train_bits=bits, train_counts=counts)
        else:
            distances = functools.partial(self._distances, train=torch.from_numpy(train).double())
        block = max(1, _CHUNK_ELEMENTS // max(1, len(train)))
        for start in range(0, len(query), block):
            dist = distances(query[start : start + block])
            if masks is not None:
                dist[~masks[start : start + block]] = np.inf
            yield start, dist

    def _knn(
        self,
        query: np.ndarray,
        trains: tuple[np.ndarray, np.ndarray],
        masks: np.ndarray | None,
        k: int,
        compact: bool = False,
    ) -> tuple[Matches, ...]:
        train, offsets = trains
        if len(train) == 0:  # OpenCV: one empty list per query row
            return _split_rows([], np.zeros(len(query), np.int64), compact)
        if masks is None and self.normType in (cv2.NORM_L2, cv2.NORM_L2SQR):
            found, found_distances = ops.l2_match(
                torch.from_numpy(query).float(), torch.from_numpy(train).float(), k=k, mutual=self.crossCheck,
                squared=self.normType == cv2.NORM_L2SQR,
            )
            indices, distances = found.numpy(), found_distances.numpy()
        else:
            indices, distances = self._knn_generic(query, train, masks, k)
        valid = indices >= 0
        q = np.nonzero(valid)[0]
        image, local = self._locate(indices[valid], offsets)
        matches = _dmatches(q, local, image, distances[valid])
        return _split_rows(matches, valid.sum(axis=1), compact)

    def _knn_generic(
        self, query: np.ndarray, train: np.ndarray, masks: np.ndarray | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n, kk = len(query), min(k, len(train))
        indices = np.full((n, k), -1, np.int64)
        distances = np.full((n, k), np.inf, np.float32)
        column_best = np.full(len(train), np.inf, np.float32)
        column_row = np.full(len(train), -1, np.int64)
        for start, dist in self._distance_blocks(query, train, masks):
            order = _smallest_columns(dist, kk)
            rows = slice(start, start + len(dist))
            indices[rows, :kk] = order
            distances[rows, :kk] = np.take_along_axis(dist, order, axis=1)
            if self.crossCheck:
                best_row = np.argmin(dist, axis=0)  # first (lowest) row among ties
                best = dist[best_row, np.arange(len(train))]
                better = best < column_best
                column_best[better], column_row[better] = best[better], best_row[better] + start
        indices[~np.isfinite(distances)] = -1
        if self.crossCheck:
            first = indices[:, 0]
            lost = (first >= 0) & (column_row[np.maximum(first, 0)] != np.arange(n))
            indices[lost, 0] = -1
        return indices, distances


def BFMatcher_create(normType: int = cv2.NORM_L2, crossCheck: bool = False) -> BFMatcher:
    """OpenCV-style factory for :class:`cvdeep.BFMatcher`."""
    return BFMatcher(normType, crossCheck)
