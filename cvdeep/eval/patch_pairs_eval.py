"""Patch-level evaluation of descriptors on image pairs with a ground-truth homography.

For evaluation only (never feed these patches to training): the Oxford / HPatches pairs of
``cvdeep.eval.datasets`` are turned into patch pairs with the same code as the training
data (``cvdeep.train.patch_pairs.pairs_from_homography``): detector keypoints of image 1
(SIFT by default), kept when their patch lies inside both images, thinned to
``min_keypoint_distance`` px, the strongest ``max_keypoints``; each is mapped into image 2
by the homography, and both patches are cut by ``cvdeep.ops.extract_patches``.

Two protocols score a descriptor on such pairs (row ``i`` of ``descriptors_a`` and
``descriptors_b`` describe the two patches of point ``i``):

- **FPR95** (Brown et al., TPAMI 2011, the PhotoTour protocol): the false positive rate at
  the distance threshold that accepts 95 % of the positive pairs. Positives are the N
  corresponding pairs; negatives pair each patch of A with the patch of B of another point
  (a random cyclic shift), N of them.
- **Matching mAP** (HPatches' matching task, Balntas et al., CVPR 2017): each patch of A is
  matched to its nearest neighbour among all patches of B; the matches, sorted by
  increasing distance, form a ranked list whose positives are the correct ones; AP is the
  area under the precision-recall curve (trapezoidal rule, from precision 1 at recall 0,
  recall relative to all N points), as ``hpatches-benchmark`` computes it.

Command line, every listed patch descriptor on the same patches of every sequence (pairs 1-k):
``python -m cvdeep.eval.patch_pairs_eval --models tfeat-liberty,hardnet-cvdeep`` (a model may
be ``name@weights.pt``: the network of ``name`` with another file, e.g. a training run's).

Sources read for facts (no code copied): hpatches/hpatches-benchmark ``python/utils/tasks.py``
and ``python/utils/metrics.py`` (the matching task and its AP; licence not stated in the files
read).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import Error
from ..train.patch_pairs import (
    PatchPairConfig,
    PatchPairs,
    detector_for,
    pairs_from_homography,
    select_keypoints,
    to_gray,
)
from .datasets import LOADERS, load_dataset
from .datasets import Sequence as ImageSequence


def image_pair_patches(image_1: np.ndarray, image_2: np.ndarray, homography: Any, config: PatchPairConfig | None = None,
                       max_keypoints: int = 1000) -> PatchPairs:
    """Patch pairs of one evaluation pair (``homography`` maps image 1 to image 2): keypoints
    of ``config.detector`` on image 1, selected as the module docstring says; V = 2,
    ``point_id`` = rank of the keypoint in the selection."""
    config = PatchPairConfig() if config is None else config
    gray = to_gray(image_1, "image_1")
    table = select_keypoints(detector_for(config).detect(gray, None), gray.shape, config, limit=max_keypoints)
    pairs = pairs_from_homography(gray, image_2, homography, table, config)
    return pairs


def sequence_patches(sequence: ImageSequence, config: PatchPairConfig | None = None,
                     max_keypoints: int = 1000) -> list[PatchPairs]:
    """``image_pair_patches`` for the pairs (1, k), k = 2..6, of a ``cvdeep.eval.datasets``
    sequence; ``image_id`` of the rows is k - 2 (the homography's index)."""
    first = sequence.read_image(0)
    result = []
    for k, homography in enumerate(sequence.homographies):
        pairs = image_pair_patches(first, sequence.read_image(k + 1), homography, config, max_keypoints)
        pairs.image_id[:] = k
        result.append(pairs)
    return result


def describe_patches(descriptor: Any, patches: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """float32 (N, D) descriptors of uint8 patches (N, P, P).

    ``descriptor`` is a ``cvdeep.nets.patch_descriptor.PatchDescriptor`` network (fed patches
    in its authors' intensity range; its ``patch_size`` must be P) or any callable taking a
    float32 (B, 1, P, P) tensor in [0, 1] and returning (B, D).
    """
    from ..nets.patch_descriptor import PatchDescriptor

    patches = np.asarray(patches)
    if patches.dtype != np.uint8 or patches.ndim != 3:
        raise Error(f"describe_patches: got patches {patches.shape} {patches.dtype}; expected uint8 (N, P, P)")
    scale = 1.0
    if isinstance(descriptor, PatchDescriptor):
        if descriptor.patch_size != patches.shape[-1]:
            raise Error(f"describe_patches: {type(descriptor).__name__} takes {descriptor.patch_size} px patches; "
                        f"got {patches.shape[-1]} px")
        scale = descriptor.intensity_scale
        descriptor.eval()
        device = next(descriptor.parameters()).device if any(True for _ in descriptor.parameters()) else "cpu"
    elif callable(descriptor):
        device = "cpu"
    else:
        raise Error(f"describe_patches: descriptor got {type(descriptor).__name__}; expected a PatchDescriptor or a "
                    "callable on (B, 1, P, P) tensors")
    rows = []
    with torch.no_grad():
        for start in range(0, len(patches), batch_size):
            batch = torch.from_numpy(patches[start:start + batch_size]).unsqueeze(1).float().div_(255.0)
            rows.append(descriptor(batch.to(device) * scale).float().cpu().numpy())
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(rows).astype(np.float32, copy=False)


def _check_descriptors(descriptors_a: np.ndarray, descriptors_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(descriptors_a, dtype=np.float64), np.asarray(descriptors_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or len(a) < 2:
        raise Error(f"got descriptors of shapes {a.shape} and {b.shape}; expected two (N, D) arrays of the same "
                    "shape, N >= 2, row i of both describing point i")
    return a, b


def fpr_at_recall(positive_distances: Any, negative_distances: Any, recall: float = 0.95) -> float:
    """False positive rate at the smallest distance threshold accepting ``recall`` of the
    positives (a pair is accepted when its distance is <= the threshold)."""
    positive = np.sort(np.asarray(positive_distances, dtype=np.float64).reshape(-1))
    negative = np.asarray(negative_distances, dtype=np.float64).reshape(-1)
    if positive.size == 0 or negative.size == 0 or not 0 < recall <= 1:
        raise Error(f"fpr_at_recall: got {positive.size} positives, {negative.size} negatives, recall {recall!r}; "
                    "expected non-empty distances and 0 < recall <= 1")
    threshold = positive[int(np.ceil(recall * positive.size)) - 1]
    return float(np.mean(negative <= threshold))


def verification_fpr95(descriptors_a: np.ndarray, descriptors_b: np.ndarray,
                       rng: np.random.Generator | None = None) -> float:
    """FPR95 of corresponding rows against N negatives (row i of A with row (i + s) mod N of B,
    one random shift s in 1..N-1 drawn from ``rng``, default seed 0); L2 distances."""
    a, b = _check_descriptors(descriptors_a, descriptors_b)
    rng = np.random.default_rng(0) if rng is None else rng
    shift = int(rng.integers(1, len(a)))
    positive = np.linalg.norm(a - b, axis=1)
    negative = np.linalg.norm(a - np.roll(b, -shift, axis=0), axis=1)
    return fpr_at_recall(positive, negative)


def matching_ap(descriptors_a: np.ndarray, descriptors_b: np.ndarray) -> float:
    """HPatches matching average precision of one pair (see the module docstring); L2 distances."""
    a, b = _check_descriptors(descriptors_a, descriptors_b)
    distances = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0))
    nearest = distances.argmin(axis=1)
    correct = nearest == np.arange(len(a))
    order = np.argsort(distances[np.arange(len(a)), nearest], kind="mergesort")
    hits = correct[order]
    tp = np.concatenate(([0], np.cumsum(hits)))
    fp = np.concatenate(([0], np.cumsum(~hits)))
    recall = tp / len(a)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    return float(np.sum((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) / 2))


def evaluate_patch_descriptor(descriptor: Any, pair_sets: Sequence[PatchPairs],
                              rng: np.random.Generator | None = None) -> dict[str, float]:
    """Mean FPR95 and matching mAP of a descriptor (see ``describe_patches``) over pair sets
    (V = 2, e.g. from ``sequence_patches``), plus the number of pairs; sets with fewer than 2
    rows are skipped."""
    rng = np.random.default_rng(0) if rng is None else rng
    fprs, aps, count = [], [], 0
    for pairs in pair_sets:
        if len(pairs) < 2:
            continue
        a = describe_patches(descriptor, pairs.patches[:, 0])
        b = describe_patches(descriptor, pairs.patches[:, 1])
        fprs.append(verification_fpr95(a, b, rng))
        aps.append(matching_ap(a, b))
        count += len(pairs)
    if not fprs:
        raise Error("evaluate_patch_descriptor: no pair set with at least 2 pairs; expected usable PatchPairs")
    return {"fpr95": float(np.mean(fprs)), "map": float(np.mean(aps)), "pairs": float(count), "sets": float(len(fprs))}



def main(argv: Sequence[str] | None = None) -> int:
    """Print and save (JSON) FPR95 and matching mAP of each model over a dataset's patch pairs."""
    from ..models import build_model, get_model
    from ..nets.patch_descriptor import PatchDescriptor

    parser = argparse.ArgumentParser(prog="python -m cvdeep.eval.patch_pairs_eval", description=main.__doc__)
    parser.add_argument("--models", required=True,
                        help="comma-separated registered patch-descriptor models, each optionally name@weights.pt")
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="shared")
    parser.add_argument("--root", default=None, help="the dataset's folder (shared: found beside the repository)")
    parser.add_argument("--sequences", default=None, help="comma-separated sequence names to keep (default: all)")
    parser.add_argument("--max-keypoints", type=int, default=1000, help="SIFT keypoints per pair, the strongest")
    parser.add_argument("--out", type=Path, default=Path("patch_pairs_eval.json"))
    args = parser.parse_args(argv)
    names = [name for name in args.sequences.split(",") if name] if args.sequences else None
    sequences = load_dataset(args.dataset, args.root, names)
    pair_sets: dict[int, list[PatchPairs]] = {}  # patch size -> the pairs, cut once per size
    results: dict[str, dict[str, float]] = {}
    print(f"{'model':<40} {'FPR95':>7} {'mAP':>7} {'pairs':>7}")
    for entry in (name.strip() for name in args.models.split(",") if name.strip()):
        name, _, weights = entry.partition("@")
        if get_model(name)[0].kind != "patch":
            raise Error(f"--models: {name!r} is not a patch descriptor; expected one of `cvdeep models`' patch models")
        network = build_model(name, weights=weights or None)
        size = cast(PatchDescriptor, network).patch_size
        if size not in pair_sets:
            config = PatchPairConfig(patch_size=size)
            pair_sets[size] = [p for seq in sequences for p in sequence_patches(seq, config, args.max_keypoints)]
        results[entry] = evaluate_patch_descriptor(network, pair_sets[size])
        row = results[entry]
        print(f"{entry:<40} {row['fpr95']:>7.4f} {row['map']:>7.4f} {int(row['pairs']):>7}")
    args.out.write_text(json.dumps({"dataset": args.dataset, "max_keypoints": args.max_keypoints,
                                    "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
