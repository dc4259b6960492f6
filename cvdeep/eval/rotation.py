"""Rotation test: each sequence's first image against itself turned by 0, 30, 60, 90 and 180 degrees.

Protocol. For every sequence of the dataset (``shared``: the three HPatches viewpoint sequences and the
eight Oxford sequences of ``shared/data``) the first image is turned clockwise (on screen) about its centre
by each angle onto a canvas that holds it entirely (black borders): ``cv2.rotate`` for multiples of 90
degrees (exact), ``cv2.warpAffine`` with the exact 2x3 matrix of ``rotation_geometry`` (bilinear) otherwise.
Both images are described with the same feature (``detectAndCompute``, at most ``max_keypoints`` where the
method has such a parameter) and matched by mutual nearest neighbours, as ``cvdeep match`` does: the
protocol's ``PairMatcher`` without the search (``rotations`` 1), and with the test-time rotation search of
``cvdeep.matching.rotation`` (``rotations`` 4: the turned image also described turned by 90, 180 and 270
degrees, the turn with the most matches kept). A match is correct when the first image's keypoint, mapped by
the known rotation, lies within ``threshold`` (3) px of its match.

Reported per feature, search setting and angle, averaged over the sequences: the correct-match ratio
(correct / matches of a sequence, 0 when it has no match) and the number of correct matches.

Try it on one sequence; the full run is every sequence::

    python -m cvdeep.eval.rotation --features sift,aliked --sequences graf --out results/rotation_graf.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence as SequenceType
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import Error
from ..matching.pairs import Feature, ImageFeatures, PairMatcher, detect_features
from ..matching.rotation import ROTATIONS, match_with_rotation_search, rotate_image
from .datasets import Sequence, load_dataset
from .runner import (
    PROTOCOL_BRUTE_FORCE,
    _json_ready,
    _names,
    add_selection_arguments,
    build_feature,
    machine_description,
)

#: The angles of the test (degrees, clockwise on screen).
DEFAULT_ANGLES = (0.0, 30.0, 60.0, 90.0, 180.0)
#: The search settings: without (1) and with (4) the test-time rotation search.
DEFAULT_ROTATIONS = (1, 4)
#: Reprojection error (px) under which a match is correct.
CORRECT_THRESHOLD = 3.0
#: cos, sin of the right angles, exact (floating point gives cos 90 = 6e-17).
_RIGHT_ANGLES = {0: (1.0, 0.0), 90: (0.0, 1.0), 180: (-1.0, 0.0), 270: (0.0, -1.0)}


@dataclass
class RotationBenchConfig:
    """Everything that decides the rotation test's numbers (stored in the JSON)."""

    features: list[str]
    angles: list[float] = field(default_factory=lambda: list(DEFAULT_ANGLES))
    rotations: list[int] = field(default_factory=lambda: list(DEFAULT_ROTATIONS))
    max_keypoints: int = 2048
    root: str | None = None
    sequences: list[str] | None = None
    device: str = "auto"
    threshold: float = CORRECT_THRESHOLD


def rotation_geometry(size: tuple[int, int], angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The turn of a ``size`` = (W, H) image clockwise on screen by ``angle`` degrees about its centre.

    Returns the (2, 3) float64 matrix taking a pixel (x, y) of the image (OpenCV's pixel-centre convention)
    to its position on the turned canvas, and that canvas's (width, height): the smallest holding the whole
    turned image, its centre on the image's centre. Multiples of 90 degrees are exact and are ``cv2.rotate``'s
    mapping (90: (x, y) -> (H - 1 - y, x)). Raises ``cvdeep.Error`` for a non-finite angle.
    """
    if not math.isfinite(angle):
        raise Error(f"rotation angle: got {angle}; expected a finite number of degrees")
    width, height = size
    turn = angle % 360
    cos, sin = _RIGHT_ANGLES[int(turn)] if turn % 90 == 0 else (math.cos(math.radians(turn)),
                                                                 math.sin(math.radians(turn)))
    # the image spans W x H pixel areas; rounding keeps float noise from adding a column
    canvas = (math.ceil(round(width * abs(cos) + height * abs(sin), 6)),
              math.ceil(round(width * abs(sin) + height * abs(cos), 6)))
    linear = np.array([[cos, -sin], [sin, cos]])  # y points down: this turns clockwise on screen
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    canvas_centre = np.array([(canvas[0] - 1) / 2, (canvas[1] - 1) / 2])
    return np.hstack([linear, (canvas_centre - linear @ centre)[:, None]]), canvas


def rotate(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W[, C]) turned as ``rotation_geometry`` says, and that (2, 3) matrix: ``cv2.rotate`` for
    multiples of 90 degrees, else ``cv2.warpAffine`` (bilinear, black outside the image)."""
    matrix, canvas = rotation_geometry((image.shape[1], image.shape[0]), angle)
    turn = angle % 360
    if turn % 90 == 0:
        return rotate_image(image, int(turn)), matrix
    return cv2.warpAffine(image, matrix, canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0), matrix


def correct_matches(first_points: np.ndarray, second_points: np.ndarray, matches: np.ndarray, matrix: np.ndarray,
                    threshold: float = CORRECT_THRESHOLD) -> np.ndarray:
    """(M,) bool: match (i, j) of ``matches`` (M, 2) is correct when ``first_points[i]`` (N, 2) mapped by the
    (2, 3) ``matrix`` lies within ``threshold`` px of ``second_points[j]``."""
    first = first_points[matches[:, 0]].astype(np.float64)
    mapped = first @ matrix[:, :2].T + matrix[:, 2]
    return np.linalg.norm(mapped - second_points[matches[:, 1]], axis=1) <= threshold


def evaluate_angle(feature: Feature, matcher: PairMatcher, first: ImageFeatures, image: np.ndarray, angle: float,
                   rotations: int, threshold: float = CORRECT_THRESHOLD) -> dict[str, Any]:
    """``image`` (whose features are ``first``) against itself turned by ``angle``, matched with
    ``match_with_rotation_search`` (``rotations`` 1: no search): keypoints, matches, correct matches, their
    ratio (0 without matches) and the turn the search kept."""
    turned, matrix = rotate(image, angle)
    search = match_with_rotation_search(feature, matcher, first, turned, rotations)
    correct = int(correct_matches(first.points, search.second.points, search.matches, matrix, threshold).sum())
    count = len(search.matches)
    return {"keypoints": [len(first), len(search.second)], "matches": count, "correct": correct,
            "ratio": correct / count if count else 0.0, "kept_rotation": search.rotation}


def _angle_key(angle: float) -> str:
    return f"{angle:g}"


def check_config(config: RotationBenchConfig) -> None:
    """Raise ``cvdeep.Error`` naming what is wrong with the features, angles, search settings or threshold."""
    if not config.features:
        raise Error("features: got an empty list; expected names such as sift,aliked,aliked-n16rot")
    if not config.angles:
        raise Error("angles: got an empty list; expected degrees such as 0,30,60,90,180")
    if not all(math.isfinite(a) for a in config.angles):
        raise Error(f"angles: got {config.angles}; expected finite numbers of degrees")
    keys = [_angle_key(a) for a in config.angles]
    if len(set(keys)) != len(keys):
        raise Error(f"angles: got {config.angles}; each angle may be given once")
    if not config.rotations or any(r not in ROTATIONS for r in config.rotations):
        raise Error(f"rotations: got {config.rotations}; expected search settings among "
                    f"{', '.join(map(str, ROTATIONS))} (1: no search, 4: 0/90/180/270)")
    if len(set(config.rotations)) != len(config.rotations):
        raise Error(f"rotations: got {config.rotations}; each search setting may be given once")
    if not config.threshold > 0:
        raise Error(f"threshold: got {config.threshold}; expected a positive number of pixels")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize(pairs: list[dict[str, Any]], angles: list[float]) -> dict[str, dict[str, float]]:
    """Angle -> means over the sequences: correct-match ratio, correct matches, matches, keypoints of the turned
    image."""
    summary = {}
    for angle in angles:
        chosen = [p for p in pairs if p["angle"] == angle]
        summary[_angle_key(angle)] = {"sequences": len(chosen), "correct_ratio": _mean([p["ratio"] for p in chosen]),
                                      "correct_matches": _mean([p["correct"] for p in chosen]),
                                      "matches": _mean([p["matches"] for p in chosen]),
                                      "keypoints": _mean([p["keypoints"][1] for p in chosen])}
    return summary


def run_feature(name: str, feature: Feature, matcher: PairMatcher, sequences: list[Sequence],
                config: RotationBenchConfig, progress: tqdm) -> list[dict[str, Any]]:
    """One result per search setting of ``config.rotations``: the summary and every (sequence, angle)."""
    pairs: dict[int, list[dict[str, Any]]] = {r: [] for r in config.rotations}
    for seq in sequences:
        image = seq.read_image(0)
        first = detect_features(feature, image)
        for rotations in config.rotations:
            for angle in config.angles:
                progress.set_description(f"{name} x{rotations} {seq.name} {_angle_key(angle)} deg")
                result = evaluate_angle(feature, matcher, first, image, angle, rotations, config.threshold)
                pairs[rotations].append({"sequence": seq.name, "angle": angle, **result})
                progress.update(1)
    device = str(getattr(getattr(feature, "descriptor", feature), "device", "cpu (OpenCV)"))
    return [{"feature": name, "rotations": r, "device": device, "summary": summarize(pairs[r], config.angles),
             "pairs": pairs[r]} for r in config.rotations]


def run(config: RotationBenchConfig, show_progress: bool = True) -> dict[str, Any]:
    """Run the rotation test described by ``config``; returns the JSON-ready results. Bad features, angles or
    search settings raise ``cvdeep.Error`` before any image is described."""
    check_config(config)
    sequences = load_dataset("shared", config.root, config.sequences)
    features = [build_feature(name, config.max_keypoints, config.device) for name in config.features]
    matchers = [PairMatcher("mutual", feature, brute_force=PROTOCOL_BRUTE_FORCE, name=name)
                for name, feature in zip(config.features, features)]
    total = len(features) * len(sequences) * len(config.rotations) * len(config.angles)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = []
    with tqdm(total=total, unit="pair", disable=not show_progress, file=sys.stderr) as progress:
        for name, feature, matcher in zip(config.features, features, matchers):
            results += run_feature(name, feature, matcher, sequences, config, progress)
    return {"config": asdict(config), "started": started, "machine": machine_description(),
            "sequences": [{"name": s.name, "dataset": s.dataset, "kind": s.kind} for s in sequences],
            "results": results}


def _label(entry: dict[str, Any]) -> str:
    return entry["feature"] if entry["rotations"] == 1 else f"{entry['feature']} (search x{entry['rotations']})"


def markdown_table(results: dict[str, Any]) -> str:
    """One row per feature and search setting, one column per angle: correct-match ratio (%) and, in brackets,
    the mean number of correct matches."""
    angles = [_angle_key(a) for a in results["config"]["angles"]]
    lines = [f"Correct-match ratio (%) and (correct matches), mean over the sequences ({len(results['sequences'])})",
             "", "| feature | " + " | ".join(f"{a} deg" for a in angles) + " |", "|---|" + "---:|" * len(angles)]
    for entry in results["results"]:
        cells = [f"{100 * entry['summary'][a]['correct_ratio']:.1f} ({entry['summary'][a]['correct_matches']:.0f})"
                 for a in angles]
        lines.append(f"| {_label(entry)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_ratios(results: dict[str, Any], path: Path) -> bool:
    """Correct-match ratio against angle, one line per feature and search setting (the search dashed, in its
    feature's colour); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    angles = results["config"]["angles"]
    colours = {name: f"C{k}" for k, name in enumerate(dict.fromkeys(e["feature"] for e in results["results"]))}
    fig, axis = plt.subplots(figsize=(9.0, 4.2))  # room for the legend beside the lines
    for entry in results["results"]:
        ratios = [entry["summary"][_angle_key(a)]["correct_ratio"] for a in angles]
        axis.plot(angles, ratios, marker="o", markersize=4, color=colours[entry["feature"]],
                  linestyle="-" if entry["rotations"] == 1 else "--", label=_label(entry))
    axis.set_xlabel("rotation (degrees, clockwise)")
    axis.set_ylabel(f"correct-match ratio (<= {results['config']['threshold']:g} px)")
    axis.set_xticks(angles)
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.set_title(f"Rotation test, sequences: {len(results['sequences'])}", fontsize=10)
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    """``out`` (JSON) and, when matplotlib is importable, ``out`` with ``.png`` (the plot)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_ready(results), indent=1))
    written = [out]
    if plot_ratios(results, out.with_suffix(".png")):
        written.append(out.with_suffix(".png"))
    return written


def parse_angles(text: str) -> list[float]:
    """Comma-separated degrees -> floats; ``cvdeep.Error`` names a part that is not a finite number."""
    angles = []
    for part in text.split(","):
        try:
            angle = float(part)
        except ValueError:
            raise Error(f"angles: {part.strip()!r} is not a number; expected comma-separated degrees such as "
                        "0,30,60,90,180") from None
        if not math.isfinite(angle):
            raise Error(f"angles: got {part.strip()!r}; expected finite numbers of degrees")
        angles.append(angle)
    return angles


def parse_rotations(text: str) -> list[int]:
    """Comma-separated search settings -> ints; ``cvdeep.Error`` names a part that is not one of ``ROTATIONS``."""
    accepted = {str(r): r for r in ROTATIONS}
    parts = [part.strip() for part in text.split(",")]
    wrong = [part for part in parts if part not in accepted]
    if wrong:
        raise Error(f"rotations: got {', '.join(map(repr, wrong))}; expected comma-separated settings among "
                    f"{', '.join(accepted)} (1: no search, 4: 0/90/180/270)")
    return [accepted[part] for part in parts]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``python -m cvdeep.eval.rotation``."""
    parser.add_argument("--features", type=_names, default=["sift"],
                        help="comma-separated names accepted by cvdeep.features.create (e.g. "
                             "sift,aliked,aliked[model=aliked-n16rot]); default: sift")
    parser.add_argument("--angles", default=",".join(_angle_key(a) for a in DEFAULT_ANGLES),
                        help="comma-separated clockwise turns in degrees (default 0,30,60,90,180)")
    parser.add_argument("--rotations", default=",".join(map(str, DEFAULT_ROTATIONS)),
                        help="comma-separated settings of the test-time rotation search, each run in turn "
                             "(1: none, 2: 0/180, 4: 0/90/180/270; default 1,4)")
    parser.add_argument("--max-keypoints", type=int, default=2048,
                        help="keypoints per image where the method has such a limit; <= 0: each method's default")
    parser.add_argument("--root", default=None, help="the shared data folder ($CVDEEP_SHARED/data or ../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("rotation_results.json"),
                        help="JSON output; the plot goes to the same name with .png")
    add_selection_arguments(parser)
    return parser


def main(argv: SequenceType[str] | None = None) -> int:
    """``python -m cvdeep.eval.rotation [options]``; bad input exits with status 2 and the message."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m cvdeep.eval.rotation",
                                                   description="Rotation test: the first image of each sequence "
                                                               "against itself turned; correct-match ratio per "
                                                               "angle, without and with the rotation search."))
    args = parser.parse_args(argv)
    try:
        config = RotationBenchConfig(features=args.features, angles=parse_angles(args.angles),
                                     rotations=parse_rotations(args.rotations), max_keypoints=args.max_keypoints,
                                     root=args.root, sequences=args.sequences, device=args.device)
        results = run(config, show_progress=not args.quiet)
    except Error as error:
        parser.exit(2, f"error: {error}\n")
    written = write_outputs(results, args.out)
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
