"""CPU time per image pair of cvdeep's LightGlue vs kornia's (same weights, same inputs, same run).

    PYTHONPATH=. python bench/bench_lightglue.py [--features aliked,disk,xfeat] [--keypoints 512,1024,2048] \
        [--precision fp32 bf16] [--threads 1] [--clock cpu]

Both run with the published adaptive depth/width defaults on a real pair (LightGlue's own
sacre_coeur assets), with exactly N keypoints per image. Rounds alternate between the
implementations so machine load hits all alike; the median is reported and the ratio is
kornia / cvdeep (> 1: cvdeep is faster; 1.5 is cvdeep at 0.67x kornia's time). cvdeep runs
once per ``--precision`` (``cvdeep.LightGlue(precision=...)``; kornia is always float32), and
its time includes its input checks and NumPy conversions (what a user pays); kornia is handed
ready tensors. The last column counts cvdeep's matches and those it shares with kornia's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cvdeep  # noqa: E402
from matching_inputs import extractor, image_size, kornia_lightglue, read  # noqa: E402

SHARED = Path(os.environ.get("CVDEEP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PAIR = ("lightglue_assets/assets/sacre_coeur1.jpg", "lightglue_assets/assets/sacre_coeur2.jpg")


def _kornia_input(keypoints: np.ndarray, descriptors: np.ndarray, size: tuple[int, int]) -> dict:
    return {"keypoints": torch.from_numpy(keypoints)[None], "descriptors": torch.from_numpy(descriptors)[None],
            "image_size": torch.tensor([size])}


def bench(features: str, num_keypoints: int, rounds: int, data: Path,
          clock: Callable[[], float] = time.perf_counter, precision: str = "fp32") -> tuple[float, float, str]:
    """Median ms of cvdeep's (in ``precision``) and kornia's LightGlue on the pair at ``num_keypoints``
    (``clock``: wall time by default; ``time.process_time`` for one thread on a shared machine), and a
    summary of inputs and matches."""
    source, extract = extractor(features, num_keypoints)
    images = [read(data / relative) for relative in PAIR]
    (kp0, d0), (kp1, d1) = (extract(image) for image in images)
    size0, size1 = (image_size(image) for image in images)
    ours = cvdeep.LightGlue(features, precision=precision)
    reference = kornia_lightglue(features)
    reference_input = {"image0": _kornia_input(kp0, d0, size0), "image1": _kornia_input(kp1, d1, size1)}

    def run_ours() -> set[tuple[int, int]]:
        return set(map(tuple, ours.match_features(kp0, d0, size0, kp1, d1, size1)[0].tolist()))

    def run_kornia() -> set[tuple[int, int]]:
        with torch.inference_mode():
            return set(map(tuple, reference(reference_input)["matches"][0].tolist()))

    times: dict[str, list[float]] = {"cvdeep": [], "kornia": []}
    matches = {"cvdeep": run_ours(), "kornia": run_kornia()}  # warm-up
    for _ in range(rounds):
        for name, run in (("cvdeep", run_ours), ("kornia", run_kornia)):
            start = clock()
            run()
            times[name].append(clock() - start)
    summary = (f"{len(kp0)}/{len(kp1)} from {source}, {len(matches['cvdeep'])}/{len(matches['kornia'])} matches, "
               f"{len(matches['cvdeep'] & matches['kornia'])} shared")
    return statistics.median(times["cvdeep"]) * 1e3, statistics.median(times["kornia"]) * 1e3, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="aliked,disk,xfeat")
    parser.add_argument("--keypoints", default="512,1024,2048")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--precision", nargs="+", choices=cvdeep.precision.PRECISIONS, default=["fp32"],
                        help="cvdeep's precision(s), each timed against kornia (default fp32)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or process CPU time (use with --threads 1 on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"LightGlue CPU benchmark: torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
          f"median of {args.rounds} rounds")
    print("\n| features | keypoints | cvdeep precision | cvdeep ms | kornia ms | kornia / cvdeep "
          "| keypoints, matches (cvdeep/kornia, shared) |\n|---|---:|---|---:|---:|---:|---|", flush=True)
    for features in args.features.split(","):
        for num_keypoints in map(int, args.keypoints.split(",")):
            for precision in args.precision:
                ours, theirs, summary = bench(features, num_keypoints, args.rounds, args.data, clock, precision)
                effective = cvdeep.precision.effective_precision(precision, "cpu")
                print(f"| {features} | {num_keypoints} | {precision} ({effective}) | {ours:.1f} | {theirs:.1f} "
                      f"| {theirs / ours:.2f} | {summary} |", flush=True)


if __name__ == "__main__":
    main()
