"""CPU time per image pair of cvdeep's LightGlue vs kornia's (same weights, same inputs, same run).

    PYTHONPATH=. python bench/bench_lightglue.py [--features aliked,disk,xfeat] [--keypoints 512,1024,2048]

Both run with the published adaptive depth/width defaults on a real pair (LightGlue's own
sacre_coeur assets), with exactly N keypoints per image. Rounds alternate between the two
implementations so machine load hits both alike; the median is reported and the ratio is
kornia / cvdeep (> 1: cvdeep is faster). cvdeep's time includes its input checks and NumPy
conversions (what a user pays); kornia is handed ready tensors.
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
          clock: Callable[[], float] = time.perf_counter) -> tuple[float, float, str]:
    """Median ms of cvdeep's and kornia's LightGlue on the pair at ``num_keypoints`` (``clock``: wall time by
    default; ``time.process_time`` for one thread on a shared machine), and a summary of inputs and matches."""
    source, extract = extractor(features, num_keypoints)
    images = [read(data / relative) for relative in PAIR]
    (kp0, d0), (kp1, d1) = (extract(image) for image in images)
    size0, size1 = (image_size(image) for image in images)
    ours = cvdeep.LightGlue(features)
    reference = kornia_lightglue(features)
    reference_input = {"image0": _kornia_input(kp0, d0, size0), "image1": _kornia_input(kp1, d1, size1)}

    def run_ours() -> int:
        return len(ours.match_features(kp0, d0, size0, kp1, d1, size1)[0])

    def run_kornia() -> int:
        with torch.inference_mode():
            return len(reference(reference_input)["matches"][0])

    times: dict[str, list[float]] = {"cvdeep": [], "kornia": []}
    counts = {"cvdeep": run_ours(), "kornia": run_kornia()}  # warm-up
    for _ in range(rounds):
        for name, run in (("cvdeep", run_ours), ("kornia", run_kornia)):
            start = clock()
            run()
            times[name].append(clock() - start)
    summary = f"{len(kp0)}/{len(kp1)} from {source}, {counts['cvdeep']}/{counts['kornia']} matches"
    return statistics.median(times["cvdeep"]) * 1e3, statistics.median(times["kornia"]) * 1e3, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="aliked,disk,xfeat")
    parser.add_argument("--keypoints", default="512,1024,2048")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"LightGlue CPU benchmark: torch {torch.__version__}, {args.threads} threads, median of {args.rounds} rounds")
    print("\n| features | keypoints | cvdeep ms | kornia ms | kornia / cvdeep | keypoints, matches (cvdeep/kornia) |"
          "\n|---|---:|---:|---:|---:|---|", flush=True)
    for features in args.features.split(","):
        for num_keypoints in map(int, args.keypoints.split(",")):
            ours, theirs, summary = bench(features, num_keypoints, args.rounds, args.data)
            print(f"| {features} | {num_keypoints} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f} | {summary} |",
                  flush=True)


if __name__ == "__main__":
    main()
