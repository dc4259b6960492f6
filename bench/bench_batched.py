"""Images per second of detectAndCompute on a list of images, by batch size (Feature2D.setBatchSize), on CPU.

Every batch size runs the same list of real images (crops of the LightGlue and HPatches
photos, all of one size, so each batch holds whole groups), interleaved round by round so
that load on a shared machine hits every batch size alike; the ratios to batch size 1 of
the same run are what to read. Each run also checks that its keypoints and descriptors are
those of batch size 1.

    PYTHONPATH=. python bench/bench_batched.py [--models xfeat disk aliked-n16] [--batches 1 2 4 8]
        [--images 8] [--size 640x480] [--threads 1] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cvdeep  # noqa: E402
from cvdeep.features import create  # noqa: E402

SOURCES = (
    "lightglue_assets/assets/DSC_0410.JPG",
    "lightglue_assets/assets/DSC_0411.JPG",
    "lightglue_assets/assets/sacre_coeur1.jpg",
    "lightglue_assets/assets/sacre_coeur2.jpg",
    "hpatches_subset/vbalnt_tfeat/imgs/v_churchill/1.ppm",
    "hpatches_subset/vbalnt_tfeat/imgs/v_churchill/2.ppm",
    "oxford_affine/images/graf/img1.ppm",
    "oxford_affine/images/graf/img2.ppm",
)


def load_images(data: Path, count: int, width: int, height: int) -> list[np.ndarray]:
    """``count`` images of width x height: each source resized to cover the size and centre-cropped."""
    images = []
    for index in range(count):
        image = cv2.imread(str(data / SOURCES[index % len(SOURCES)]))
        if image is None:
            raise SystemExit(f"missing {data / SOURCES[index % len(SOURCES)]}")
        scale = max(width / image.shape[1], height / image.shape[0])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
        images.append(np.ascontiguousarray(image[top : top + height, left : left + width]))
    return images


def max_difference(a: tuple[list, list], b: tuple[list, list]) -> float:
    """Largest keypoint (px) or descriptor difference between two list results; inf when counts differ."""
    worst = 0.0
    for ka, da, kb, db in zip(a[0], a[1], b[0], b[1]):
        if len(ka) != len(kb):
            return float("inf")
        if len(ka):
            worst = max(worst, float(np.abs(cv2.KeyPoint_convert(ka) - cv2.KeyPoint_convert(kb)).max()),
                        float(np.abs(da - db).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["xfeat", "disk", "aliked-n16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    images = load_images(args.data, args.images, width, height)
    print(f"{len(images)} images of {width}x{height}, {args.threads} threads, torch {torch.__version__}, "
          f"cvdeep.ops backend {cvdeep.ops.backend()}, median of {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'model':<12} {'batch':>5} {'images/s':>9} {'vs batch 1':>10} {'max |diff| vs batch 1':>22}")
    for model in args.models:
        detector = create(model, device="cpu")
        detector.setBatchSize(1)
        reference = detector.detectAndCompute(images)  # also the warm-up
        times: dict[int, list[float]] = {b: [] for b in args.batches}
        differences: dict[int, float] = {}
        for _ in range(args.rounds):
            for batch in args.batches:
                detector.setBatchSize(batch)
                start = time.perf_counter()
                result = detector.detectAndCompute(images)
                times[batch].append(time.perf_counter() - start)
                differences[batch] = max(differences.get(batch, 0.0), max_difference(result, reference))
        base = len(images) / statistics.median(times[args.batches[0]])
        for batch in args.batches:
            rate = len(images) / statistics.median(times[batch])
            print(f"{model:<12} {batch:>5} {rate:>9.2f} {rate / base:>9.2f}x {differences[batch]:>22.2e}")


if __name__ == "__main__":
    main()
