"""extract_patches against the per-keypoint cv2.warpAffine loop of the authors' OpenCV helpers.

Same image, same keypoints, same run; prints both times and their ratio.
    PYTHONPATH=. python bench/bench_extract_patches.py [--keypoints 5000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cvdeep.ops import extract_patches

ROOT = Path(__file__).resolve().parents[1]


def warp_affine_loop(gray: np.ndarray, keypoints, patch_size: int, scale_factor: float) -> np.ndarray:
    """One cv2.warpAffine per keypoint (bilinear, replicated border), as in TFeat's tfeat_utils."""
    patches = np.empty((len(keypoints), patch_size, patch_size), np.float32)
    centre = (patch_size - 1) / 2
    for i, kp in enumerate(keypoints):
        step = scale_factor * kp.size / patch_size
        cos, sin = np.cos(np.deg2rad(kp.angle)) * step, np.sin(np.deg2rad(kp.angle)) * step
        matrix = np.array([[cos, -sin, kp.pt[0] - centre * (cos - sin)], [sin, cos, kp.pt[1] - centre * (sin + cos)]])
        patches[i] = cv2.warpAffine(gray, matrix, (patch_size, patch_size),
                                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return patches


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keypoints", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--scale-factor", type=float, default=6.0)
    args = parser.parse_args()
    shared = Path(os.environ.get("CVDEEP_SHARED", ROOT.parent / "shared"))
    image_path = shared / "data" / "oxford_affine" / "images" / "graf" / "img1.ppm"
    gray = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise SystemExit(f"cannot read {image_path}")
    keypoints = cv2.SIFT_create(args.keypoints).detect(gray)
    tensor = torch.from_numpy(gray).float()[None, None] / 255
    xy = torch.from_numpy(cv2.KeyPoint_convert(keypoints)).float()
    sizes = torch.tensor([kp.size for kp in keypoints])
    angles = torch.tensor([kp.angle for kp in keypoints])
    gray_float = gray.astype(np.float32) / 255
    side, factor = args.patch_size, args.scale_factor
    baseline = best_of(args.repeats, lambda: warp_affine_loop(gray_float, keypoints, side, factor))
    with torch.inference_mode():
        ours = best_of(args.repeats, lambda: extract_patches(tensor, xy, sizes, angles, side, factor))
    print(f"{len(keypoints)} keypoints, {args.patch_size}x{args.patch_size} patches, {torch.get_num_threads()} threads")
    print(f"cv2.warpAffine loop: {baseline * 1e3:8.1f} ms")
    print(f"extract_patches:     {ours * 1e3:8.1f} ms   speed-up x{baseline / ours:.2f}")


if __name__ == "__main__":
    main()
