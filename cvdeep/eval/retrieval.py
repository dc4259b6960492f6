"""Retrieval benchmark on the homography sequences: every image queries all the others.

Protocol. The database is every image of every sequence of the dataset (``shared``: the three
HPatches viewpoint sequences and the eight Oxford sequences of ``shared/data``) less the sequences
that repeat an earlier one (``distinct_sequences``: HPatches ``v_graffiti`` holds Oxford ``graf``'s
very images, so a graf query would find its own copy under another sequence's name and count it a
miss), 60 images of 10 sequences; each image is in turn the query, searched against all the other
images (``Database.query`` of ``cvdeep.retrieval`` with the query image left out of the database),
and its positives are the
other images of its own sequence (five). Every image is described once per feature (``extract``
of the homography benchmark: at most ``max_keypoints``, the strongest responses), so a query's
description is its indexing.

Each query gives two rankings of the other images: **votes** (the number of its descriptors with
a descriptor of the image among their ``knn`` nearest neighbours) and **verified** (the ``verify``
best voted images re-ranked by homography inliers of mutual-nearest-neighbour matches,
``find_homography``, ahead of the rest). Metrics, averaged over queries:

- ``mAP``: mean average precision over the full ranking (the mean, over a query's positives, of
  the precision at each positive's rank);
- ``R@1``, ``R@5``: the share of queries with at least one positive among the first 1 / 5 results
  (the usual recall@k of place recognition and landmark retrieval);
- times: describing an image (s, = indexing and query description), nearest-neighbour search
  and voting per query (s), geometric verification per query (s).

Run on a few sequences to try it; the full run is every sequence::

    python -m cvdeep.eval.retrieval --features delf,sift,aliked,disk --sequences graf,boat,v_wormhole \\
        --out results/retrieval_subset.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence as SequenceType
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import Error
from ..retrieval import VERIFIERS, Candidate, Database, Described
from .datasets import LOADERS, Sequence, load_dataset
from .runner import _json_ready, _names, add_selection_arguments, build_feature, extract, machine_description

RECALL_AT = (1, 5)


def average_precision(ranking: SequenceType[str], positives: set[str]) -> float:
    """Mean of the precision at the rank of each positive of ``ranking`` (positives never ranked count 0)."""
    if not positives:
        raise Error("average_precision: a query without positives has no average precision")
    found, total = 0, 0.0
    for rank, item in enumerate(ranking, start=1):
        if item in positives:
            found += 1
            total += found / rank
    return total / len(positives)


def recall_at(ranking: SequenceType[str], positives: set[str], k: int) -> float:
    """1 when a positive is among the first ``k`` of ``ranking``, else 0."""
    return float(any(item in positives for item in ranking[:k]))


def ranking_metrics(ranking: SequenceType[str], positives: set[str]) -> dict[str, float]:
    """AP and R@k of one query's ranking."""
    return {"ap": average_precision(ranking, positives),
            **{f"r@{k}": recall_at(ranking, positives, k) for k in RECALL_AT}}


@dataclass
class RetrievalBenchConfig:
    """Everything that decides the benchmark's numbers (stored in its JSON)."""

    features: list[str]
    dataset: str = "shared"
    root: str | None = None
    sequences: list[str] | None = None
    max_keypoints: int = 1000
    knn: int = 10
    verify: int = 20
    matcher: str = "mutual"
    estimator: str = "magsac"
    threshold: float = 8.0
    device: str = "auto"


def image_keys(sequences: list[Sequence]) -> list[tuple[str, str, int]]:
    """(key ``dataset/sequence/number``, sequence name, image index) of every image, in order."""
    return [(f"{seq.dataset}/{seq.name}/{index + 1}", seq.name, index)
            for seq in sequences for index in range(len(seq) + 1)]


def distinct_sequences(sequences: list[Sequence]) -> tuple[list[Sequence], dict[str, str]]:
    """The sequences whose reference image differs (pixel for pixel) from every earlier one's, and
    ``{dropped: the earlier sequence it repeats}``."""
    kept: list[Sequence] = []
    seen: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for sequence in sequences:
        image = sequence.read_image(0)
        digest = hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
        if digest in seen:
            dropped[f"{sequence.dataset}/{sequence.name}"] = seen[digest]
            continue
        seen[digest] = f"{sequence.dataset}/{sequence.name}"
        kept.append(sequence)
    return kept, dropped


def _by_votes(candidates: list[Candidate], names: list[str]) -> list[str]:
    """The vote ranking behind a query result (most votes first, ties in database order)."""
    position = {name: i for i, name in enumerate(names)}
    return [c.image for c in sorted(candidates, key=lambda c: (-c.votes, position[c.image]))]


def run_feature(name: str, sequences: list[Sequence], config: RetrievalBenchConfig,
                progress: tqdm | None = None) -> dict[str, Any]:
    """Describe every image with one feature, then query with each; per-query metrics and the means."""
    feature = build_feature(name, config.max_keypoints, config.device)
    keys = image_keys(sequences)
    by_name = {seq.name: seq for seq in sequences}
    extract(feature, sequences[0].read_image(0), config.max_keypoints)  # warm-up: weights, first-call costs
    described = []
    for key, sequence, index in keys:
        if progress is not None:
            progress.set_description(f"{name}: describing {key}")
        found = extract(feature, by_name[sequence].read_image(index), config.max_keypoints)
        described.append(Described(found.points, found.descriptors, found.size, found.seconds))
        if progress is not None:
            progress.update(1)
    names = [key for key, _, _ in keys]
    database = Database.from_described(names, described, int(feature.defaultNorm()))
    queries = []
    for query, (key, sequence, _) in enumerate(keys):
        if progress is not None:
            progress.set_description(f"{name}: querying {key}")
        positives = {other for other, other_sequence, _ in keys if other_sequence == sequence and other != key}
        result = database.query(described[query], config.knn, config.verify, config.matcher,
                                estimator=config.estimator, threshold=config.threshold, exclude=query)
        verified = [c.image for c in result.candidates]
        queries.append({
            "query": key, "keypoints": len(described[query].points),
            "votes": ranking_metrics(_by_votes(result.candidates, names), positives),
            "verified": ranking_metrics(verified, positives),
            "top5": [{"image": c.image, "votes": c.votes, "inliers": c.inliers} for c in result.candidates[:5]],
            "search_seconds": result.seconds["search"], "verify_seconds": result.seconds["verification"],
        })
        if progress is not None:
            progress.update(1)
    return {"feature": name, "images": len(keys), "summary": summarize(queries, described),
            "backend": database.backend, "queries": queries}


def summarize(queries: list[dict[str, Any]], described: list[Described]) -> dict[str, Any]:
    """Means over queries: mAP and R@k of both rankings, keypoints and seconds."""
    summary: dict[str, Any] = {}
    for ranking in ("votes", "verified"):
        summary[ranking] = {"mAP": float(np.mean([q[ranking]["ap"] for q in queries])),
                            **{f"R@{k}": float(np.mean([q[ranking][f"r@{k}"] for q in queries])) for k in RECALL_AT}}
    summary.update({
        "keypoints_per_image": float(np.mean([len(d.points) for d in described])),
        "describe_seconds_per_image": float(np.mean([d.seconds for d in described])),
        "index_seconds": float(np.sum([d.seconds for d in described])),
        "search_seconds_per_query": float(np.mean([q["search_seconds"] for q in queries])),
        "verify_seconds_per_query": float(np.mean([q["verify_seconds"] for q in queries])),
    })
    return summary


def run(config: RetrievalBenchConfig, show_progress: bool = True) -> dict[str, Any]:
    """Run the benchmark for every feature of ``config``; a feature that cannot be built or run (missing
    weights, ...) is reported with its error and the others still run."""
    if not config.features:
        raise Error("features: got an empty list; expected names such as delf,sift,aliked,disk")
    if config.matcher not in VERIFIERS:
        raise Error(f"matcher: got {config.matcher!r}; accepted: {', '.join(VERIFIERS)}")
    sequences, repeated = distinct_sequences(load_dataset(config.dataset, config.root, config.sequences))
    for name, original in repeated.items():
        print(f"{name}: left out (its images are those of {original})", file=sys.stderr)
    if len(sequences) < 2:
        raise Error(f"the retrieval benchmark needs at least 2 sequences (distractors); got {len(sequences)}")
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    total = len(config.features) * 2 * len(image_keys(sequences))
    results = []
    with tqdm(total=total, unit="step", disable=not show_progress, file=sys.stderr) as progress:
        for name in config.features:
            try:
                results.append(run_feature(name, sequences, config, progress))
            except Error as error:
                results.append({"feature": name, "error": str(error)})
                print(f"{name}: skipped ({error})", file=sys.stderr)
    return {"config": asdict(config), "started": started, "machine": machine_description(),
            "sequences": [{"name": s.name, "dataset": s.dataset, "images": len(s) + 1} for s in sequences],
            "repeated_sequences_left_out": repeated, "results": results}


def _cell(value: float, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    """One row per feature: mAP and R@k (percent) by votes and after verification, then sizes and times."""
    images = sum(s["images"] for s in results["sequences"])
    lines = [f"**retrieval** ({images} queries, {len(results['sequences'])} sequences)", "",
             "| feature | mAP | R@1 | R@5 | mAP verified | R@1 verified | R@5 verified | kpts/img | describe s/img "
             "| search s/query | verify s/query |", "|---|" + "---:|" * 10]
    for entry in results["results"]:
        if "error" in entry:
            lines.append(f"| {entry['feature']} | error: {entry['error'][:80]} |" + " |" * 9)
            continue
        s = entry["summary"]
        cells = [entry["feature"], *(_cell(s[r][m], 100) for r in ("votes", "verified") for m in ("mAP", "R@1", "R@5")),
                 _cell(s["keypoints_per_image"], digits=0), _cell(s["describe_seconds_per_image"], digits=3),
                 _cell(s["search_seconds_per_query"], digits=3), _cell(s["verify_seconds_per_query"], digits=3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``python -m cvdeep.eval.retrieval``."""
    parser.add_argument("--features", type=_names, default=["sift"],
                        help="comma-separated names accepted by cvdeep.features.create (e.g. delf,sift,aliked,disk)")
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="shared", help="dataset layout (default shared)")
    parser.add_argument("--root", default=None, help="dataset folder (shared: $CVDEEP_SHARED/data or ../shared/data)")
    parser.add_argument("--max-keypoints", type=int, default=1000, help="keypoints per image, the strongest (1000)")
    parser.add_argument("--knn", type=int, default=10, help="nearest neighbours of each query descriptor (10)")
    parser.add_argument("--verify", type=int, default=20, help="best voted images verified by a homography (20)")
    parser.add_argument("--matcher", default="mutual", choices=VERIFIERS, help="matches for the verification")
    parser.add_argument("--threshold", type=float, default=8.0, help="inlier threshold in pixels (8)")
    parser.add_argument("--out", type=Path, default=Path("retrieval_results.json"),
                        help="JSON output; the table goes to the same name with .md")
    add_selection_arguments(parser)
    return parser


def main(argv: SequenceType[str] | None = None) -> int:
    """``python -m cvdeep.eval.retrieval [options]``; bad input exits with status 2 and the message."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m cvdeep.eval.retrieval",
                                                   description="Image retrieval with local features on the "
                                                               "homography sequences: mAP, R@1, R@5, times."))
    args = parser.parse_args(argv)
    config = RetrievalBenchConfig(features=args.features, dataset=args.dataset, root=args.root,
                                  sequences=args.sequences, max_keypoints=args.max_keypoints, knn=args.knn,
                                  verify=args.verify, matcher=args.matcher, threshold=args.threshold,
                                  device=args.device)
    try:
        results = run(config, show_progress=not args.quiet)
    except Error as error:
        parser.exit(2, f"error: {error}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_json_ready(results), indent=1))
    table = markdown_table(results)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
