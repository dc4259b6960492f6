"""The benchmark: every feature, cvdeep or OpenCV, runs through one code path.

For each feature and sequence the six images are described once (``detectAndCompute``
on the BGR image, timed), the reference is matched against the five others and each pair
is scored with ``cvdeep.eval.metrics``. Results are written as JSON (every pair, every
image, the summaries, the machine), a markdown table and, when matplotlib is installed,
a plot of MMA against the pixel threshold.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence as SequenceType
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import Error
from ..feature_names import DetectThenDescribe, create_feature
from ..keypoints import keypoint_responses
from ..matching.pairs import LOWE_RATIO, MATCHERS, Feature, ImageFeatures, PairMatcher, detect_features
from ..precision import PRECISIONS
from . import metrics
from .datasets import LOADERS, SEQUENCE_KINDS, WARPED_MAX_SIDE, WARPED_PHOTOS, Sequence, load_dataset

_NFEATURES_SETTERS = ("setNFeatures", "setMaxFeatures")  # cv2.SIFT / cvdeep, cv2.ORB
#: The protocol's brute-force matcher (docs/RESULTS.md): OpenCV's own, whatever cvdeep.BFMatcher does.
PROTOCOL_BRUTE_FORCE = cv2.BFMatcher


@dataclass
class BenchConfig:
    """Everything that decides a benchmark's numbers (stored in the JSON)."""

    dataset: str
    root: str | None
    features: list[str]
    matcher: str = "mutual"
    ratio: float = LOWE_RATIO
    max_keypoints: int = 2048
    device: str = "auto"
    sequences: list[str] | None = None
    all_hpatches: bool = False
    lightglue_precision: str = "fp32"
    thresholds: list[int] = field(default_factory=lambda: list(metrics.MMA_THRESHOLDS))
    warped: dict[str, int] = field(default_factory=dict)
    """``load_warped`` options of the "warped" dataset (photos, max_side, min_side); empty: its defaults."""


def build_feature(name: str, max_keypoints: int, device: str = "auto") -> Feature:
    """The feature ``name`` names (``cvdeep.feature_names``: the vocabulary of every command, with
    ``name[param=value]`` and ``detector+descriptor``), limited to ``max_keypoints`` where the method has
    such a parameter (cv2.SIFT ``nfeatures``, cv2.ORB ``maxFeatures``, every cvdeep ``nfeatures``; the
    detector of a composition). ``device`` applies to cvdeep features only. Others are capped after
    detection (``extract``)."""
    feature: Any = create_feature(name, device=None if device == "auto" else device)
    detector = feature.detector if isinstance(feature, DetectThenDescribe) else feature
    if max_keypoints > 0:
        for setter in _NFEATURES_SETTERS:
            if hasattr(detector, setter):
                getattr(detector, setter)(max_keypoints)
                break
    return cast(Feature, feature)


def extract(feature: Feature, image: np.ndarray, max_keypoints: int) -> ImageFeatures:
    """``detectAndCompute`` (timed), then the ``max_keypoints`` strongest responses kept.

    The second cap makes the limit exact for every method (cv2.SIFT may return a few more
    than ``nfeatures`` because of extra orientations; some methods have no limit at all).
    """
    found = detect_features(feature, image)
    if 0 < max_keypoints < len(found):
        strongest = np.argsort(-keypoint_responses(found.keypoints), kind="stable")[:max_keypoints]
        found = found.subset(np.sort(strongest))
    return found


def _shape(features: ImageFeatures) -> tuple[int, int]:
    """(height, width) of the image the features come from, as the metrics take it."""
    width, height = features.size
    return height, width


def evaluate_pair(reference: ImageFeatures, target: ImageFeatures, homography: np.ndarray,
                  matcher: PairMatcher) -> dict[str, Any]:
    """Every metric of one (reference, target) pair, as a JSON-ready dict."""
    matches = matcher(reference, target)
    errors = metrics.match_errors(reference.points, target.points, matches, homography)
    estimated = metrics.estimate_homography(reference.points[matches[:, 0]], target.points[matches[:, 1]])
    in_target, in_reference = metrics.shared_view(reference.points, target.points, homography,
                                                  _shape(reference), _shape(target))
    rep, localisation = metrics.repeatability(reference.points, target.points, homography,
                                              _shape(reference), _shape(target))
    return {
        "keypoints": [len(reference.points), len(target.points)],
        "matches": len(matches),
        "mma": metrics.matching_accuracy(errors).tolist(),
        "corner_error": metrics.corner_error(estimated, homography, _shape(reference)),
        "repeatability": rep,
        "localization_error": localisation,
        "matching_score": metrics.matching_score(errors, int(in_target.sum()), int(in_reference.sum())),
    }


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(pairs: list[dict[str, Any]], images: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over a group of pairs: MMA per threshold (D2-Net: mean of per-pair accuracies),
    homography accuracy per corner-error threshold, repeatability, localisation error,
    matching score, keypoints per image, matches per pair, milliseconds per image."""
    corner_errors = np.array([p["corner_error"] for p in pairs], dtype=np.float64)
    return {
        "pairs": len(pairs),
        "mma": np.mean([p["mma"] for p in pairs], axis=0).tolist(),
        "homography_accuracy": {str(t): float(np.mean(corner_errors <= t)) for t in metrics.HOMOGRAPHY_THRESHOLDS},
        "repeatability": _mean([p["repeatability"] for p in pairs]),
        "localization_error": _mean([p["localization_error"] for p in pairs]),
        "matching_score": _mean([p["matching_score"] for p in pairs]),
        "keypoints_per_image": _mean([i["keypoints"] for i in images]),
        "matches_per_pair": _mean([p["matches"] for p in pairs]),
        "ms_per_image": 1000 * _mean([i["seconds"] for i in images]),
    }


def _groups(sequences: list[Sequence]) -> dict[str, set[str]]:
    """Summary group -> names of its sequences: all, each dataset (when several), each kind."""
    groups = {"all": {s.name for s in sequences}}
    datasets = sorted({s.dataset for s in sequences})
    if len(datasets) > 1:
        groups.update({f"{d} (all)": {s.name for s in sequences if s.dataset == d} for d in datasets})
    for kind in SEQUENCE_KINDS:
        names = {s.name for s in sequences if s.kind == kind}
        if names:
            groups[kind] = names
    return groups


def run_feature(name: str, feature: Feature, matcher: PairMatcher, sequences: list[Sequence],
                config: BenchConfig, progress: tqdm) -> dict[str, Any]:
    """Describe every image of every sequence with one feature and score the five pairs."""
    extract(feature, sequences[0].read_image(0), config.max_keypoints)  # warm-up: weights, first-call costs
    pairs, images = [], []
    for seq in sequences:
        progress.set_description(f"{name} {seq.name}")
        extractions = []
        for index in range(len(seq) + 1):
            extraction = extract(feature, seq.read_image(index), config.max_keypoints)
            extractions.append(extraction)
            images.append({"sequence": seq.name, "image": index + 1, "keypoints": len(extraction.points),
                           "seconds": extraction.seconds})
        for k, homography in enumerate(seq.homographies):
            result = evaluate_pair(extractions[0], extractions[k + 1], homography, matcher)
            pairs.append({"sequence": seq.name, "dataset": seq.dataset, "kind": seq.kind, "pair": [1, k + 2], **result})
            progress.update(1)
    summaries = {}
    for group, names in _groups(sequences).items():
        summaries[group] = summarize([p for p in pairs if p["sequence"] in names],
                                     [i for i in images if i["sequence"] in names])
    described_by = getattr(feature, "descriptor", feature)
    device = getattr(described_by, "device", "cpu (OpenCV)")
    # what ran, not what was asked: precision="bf16" runs fp32 where the hardware has no native bf16
    effective = getattr(described_by, "effectivePrecision", None)
    return {"feature": name, "device": str(device), "precision": effective() if effective else "fp32",
            "descriptor_norm": matcher.norm, "summary": summaries, "pairs": pairs, "images": images}


def machine_description() -> dict[str, Any]:
    """What the timings were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
    }


def run(config: BenchConfig, show_progress: bool = True) -> dict[str, Any]:
    """Run the benchmark described by ``config``; returns the JSON-ready results."""
    if not config.features:
        raise Error("features: got an empty list; expected names such as sift,orb,aliked")
    sequences = load_dataset(config.dataset, config.root, config.sequences, config.all_hpatches, config.warped)
    # Every feature and its matcher first, so that a bad name or a pairing LightGlue has no
    # weights for fails before any image is described.
    features = [build_feature(name, config.max_keypoints, config.device) for name in config.features]
    matchers = [PairMatcher(config.matcher, feature, config.ratio, brute_force=PROTOCOL_BRUTE_FORCE,
                            device=config.device, name=name, lightglue_precision=config.lightglue_precision)
                for name, feature in zip(config.features, features)]
    total = len(config.features) * sum(len(s) for s in sequences)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    with tqdm(total=total, unit="pair", disable=not show_progress, file=sys.stderr) as progress:
        results = [run_feature(name, feature, matcher, sequences, config, progress)
                   for name, feature, matcher in zip(config.features, features, matchers)]
    return {"config": asdict(config), "started": started, "machine": machine_description(),
            "sequences": [{"name": s.name, "dataset": s.dataset, "kind": s.kind} for s in sequences],
            "results": results}


def _json_ready(value: Any) -> Any:
    """inf/NaN -> None so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _number(value: float, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    """One table per summary group, one row per feature (percentages except counts, px and ms)."""
    first = results["results"][0]["summary"]
    lines = []
    for group in first:
        count = first[group]["pairs"]
        lines += [f"**{group}** ({count} pairs)", "",
                  "| feature | MMA@1 | MMA@3 | MMA@5 | MMA@10 | H@1 | H@3 | H@5 | H@10 | rep. | loc. err (px) "
                  "| M.score | kpts/img | matches | ms/img |",
                  "|---|" + "---:|" * 14]
        for entry in results["results"]:
            s = entry["summary"][group]
            mma = dict(zip(results["config"]["thresholds"], s["mma"]))
            label = entry["feature"]
            if "precision=bf16" in label.replace(" ", "") and entry.get("precision") == "fp32":
                label += " (ran fp32: no native bf16)"
            cells = [label, *(_number(mma[t], 100) for t in (1, 3, 5, 10)),
                     *(_number(s["homography_accuracy"][str(t)], 100) for t in metrics.HOMOGRAPHY_THRESHOLDS),
                     _number(s["repeatability"], 100), _number(s["localization_error"], digits=2),
                     _number(s["matching_score"], 100), _number(s["keypoints_per_image"], digits=0),
                     _number(s["matches_per_pair"], digits=0), _number(s["ms_per_image"], digits=0)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_mma(results: dict[str, Any], path: Path) -> bool:
    """MMA against threshold, one panel per summary group; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = list(results["results"][0]["summary"])
    thresholds = results["config"]["thresholds"]
    columns = min(4, len(groups))
    rows = math.ceil(len(groups) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), sharey=True, squeeze=False)
    for axis in axes.ravel()[len(groups):]:
        axis.set_visible(False)
    for axis, group in zip(axes.ravel(), groups):
        for entry in results["results"]:
            axis.plot(thresholds, entry["summary"][group]["mma"], marker="o", markersize=3, label=entry["feature"])
        axis.set_title(f"{group} ({results['results'][0]['summary'][group]['pairs']} pairs)", fontsize=9)
        axis.set_xlabel("threshold (px)")
        axis.set_xlim(thresholds[0], thresholds[-1])
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("MMA")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(results: dict[str, Any], out: Path, plot: bool = True) -> list[Path]:
    """``out`` (JSON), ``out`` with ``.md`` (the table) and, if possible, ``.png`` (the plot)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_ready(results), indent=1))
    written = [out, out.with_suffix(".md")]
    written[1].write_text(markdown_table(results))
    if plot and plot_mma(results, out.with_suffix(".png")):
        written.append(out.with_suffix(".png"))
    return written


def _names(text: str) -> list[str]:
    """Comma-separated names; commas inside ``[...]`` (feature parameters) do not split."""
    names, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            names.append(current)
            current = ""
        else:
            current += char
    return [name.strip() for name in [*names, current] if name.strip()]


def add_selection_arguments(parser: argparse.ArgumentParser,
                            device_help: str = "device of cvdeep features: auto, cpu, cuda, cuda:N") -> None:
    """``--sequences``, ``--device`` and ``--quiet``, alike in every benchmark command."""
    parser.add_argument("--sequences", type=_names, default=None, help="comma-separated sequence names to keep")
    parser.add_argument("--device", default="auto", help=device_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``cvdeep bench`` (and ``python -m cvdeep.eval``)."""
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="shared",
                        help="layout of --root: hpatches (<seq>/1.ppm, H_1_N), oxford (<seq>/img1.ppm, H1toNp), "
                             "shared (the project's shared/data subset; default), or warped (a folder of unlabeled "
                             "photos: 50 of them, each with five random warps of growing strength; "
                             "cvdeep.eval.datasets.load_warped)")
    parser.add_argument("--root", default=None,
                        help="dataset folder (for shared: defaults to $CVDEEP_SHARED/data or ../shared/data)")
    parser.add_argument("--warped-photos", type=int, default=WARPED_PHOTOS,
                        help=f"warped: how many photos (default {WARPED_PHOTOS})")
    parser.add_argument("--warped-max-side", type=int, default=WARPED_MAX_SIDE,
                        help=f"warped: photos shrunk to this longest side in pixels (default {WARPED_MAX_SIDE}); "
                             "use the size of the images the features will meet")
    parser.add_argument("--warped-min-side", type=int, default=0,
                        help="warped: only photos whose longest side is at least this many pixels (default 0: all)")
    parser.add_argument("--features", type=_names, default=["sift", "orb"],
                        help="comma-separated names accepted by cvdeep.features.create, or detector+descriptor "
                             "(e.g. sift+hardnet); default: sift,orb")
    parser.add_argument("--matcher", default="mutual", choices=MATCHERS,
                        help="tentative matches (default mutual: mutual nearest neighbours, D2-Net); "
                             "lightglue: LightGlue with aliked, disk or xfeat features")
    parser.add_argument("--ratio", type=float, default=LOWE_RATIO,
                        help=f"ratio of the 'ratio' matcher (default {LOWE_RATIO})")
    parser.add_argument("--lightglue-precision", choices=PRECISIONS, default="fp32",
                        help="arithmetic of the 'lightglue' matcher (cvdeep.LightGlue's precision; default fp32)")
    parser.add_argument("--max-keypoints", type=int, default=2048,
                        help="keep at most this many strongest keypoints per image; <= 0: each method's default")
    add_selection_arguments(parser, "device of cvdeep features and of LightGlue: auto, cpu, cuda, cuda:N")
    parser.add_argument("--all-hpatches", action="store_true",
                        help="keep the 8 high-resolution HPatches sequences D2-Net's protocol leaves out")
    parser.add_argument("--out", type=Path, default=Path("bench_results.json"),
                        help="JSON output; the table goes to the same name with .md, the plot with .png")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the MMA plot")
    return parser


def _warped_options(args: argparse.Namespace) -> dict[str, int]:
    """The ``--warped-*`` options that differ from ``load_warped``'s defaults (only for --dataset warped)."""
    if args.dataset != "warped":
        return {}
    given = {"photos": args.warped_photos, "max_side": args.warped_max_side, "min_side": args.warped_min_side}
    defaults = {"photos": WARPED_PHOTOS, "max_side": WARPED_MAX_SIDE, "min_side": 0}
    return {key: value for key, value in given.items() if value != defaults[key]}


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run from parsed ``add_bench_arguments`` options; writes the outputs and prints the table."""
    config = BenchConfig(dataset=args.dataset, root=None if args.root is None else str(args.root),
                         features=args.features, matcher=args.matcher, ratio=args.ratio,
                         max_keypoints=args.max_keypoints, device=args.device, sequences=args.sequences,
                         all_hpatches=args.all_hpatches, lightglue_precision=args.lightglue_precision,
                         warped=_warped_options(args))
    results = run(config, show_progress=not args.quiet)
    written = write_outputs(results, args.out, plot=not args.no_plot)
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in written))
    return results


def main(argv: SequenceType[str] | None = None) -> int:
    """``python -m cvdeep.eval [options]``; bad input exits with status 2 and the message."""
    parser = add_bench_arguments(argparse.ArgumentParser(prog="python -m cvdeep.eval",
                                                         description="Benchmark local features on "
                                                                     "homography datasets (MMA, homography "
                                                                     "accuracy, repeatability, ...)."))
    args = parser.parse_args(argv)
    try:
        run_bench(args)
    except Error as error:
        parser.exit(2, f"error: {error}\n")
    return 0
