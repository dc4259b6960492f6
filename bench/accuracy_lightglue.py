"""Does LightGlue beat mutual nearest neighbours? ALIKED + LightGlue vs ALIKED + mutual-NN on the shared
Oxford Affine and HPatches sequences (image 1 against images 2..6, ground-truth homographies).

    PYTHONPATH=. python bench/accuracy_lightglue.py [--features aliked] [--max-keypoints 2048]

Metrics, per method, averaged over pairs:
- MMA@t: fraction of matches whose keypoint in image 1, mapped by the true homography, lands
  within t px of its match in image N (t = 1, 3, 5);
- homography accuracy@t: fraction of pairs whose homography estimated from the matches
  (cv2.findHomography, RANSAC, 3 px) moves the four corners of image 1 on average less than t px
  away from where the true homography puts them (the SuperPoint / HPatches protocol);
- matches per pair.

The features come from cvdeep's own extractor when this checkout has it, else from kornia's
with the same weights; mutual-NN is cv2.BFMatcher(NORM_L2, crossCheck=True).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cvdeep  # noqa: E402
from matching_inputs import extractor, image_size, read  # noqa: E402

SHARED = Path(os.environ.get("CVDEEP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
THRESHOLDS = (1, 3, 5)


def sequences(data: Path) -> list[tuple[str, list[Path], list[Path]]]:
    """(name, images 1..6, homographies 1->2..6) of every shared Oxford and HPatches sequence."""
    found = []
    for seq in sorted((data / "oxford_affine" / "images").iterdir()):
        images = sorted(p for p in seq.iterdir() if p.stem.startswith("img") and p.suffix in (".ppm", ".pgm"))
        found.append((f"oxford/{seq.name}", images, [seq / f"H1to{n}p" for n in range(2, 7)]))
    hpatches = data / "hpatches_subset"
    for seq in sorted(p for p in hpatches.rglob("v_*") if p.is_dir()):
        found.append((f"hpatches/{seq.name}", [seq / f"{n}.ppm" for n in range(1, 7)],
                      [seq / f"H_1_{n}" for n in range(2, 7)]))
    return found


def read_homography(path: Path) -> np.ndarray:
    return np.array(path.read_text().split(), dtype=np.float64).reshape(3, 3)


def corner_error(estimated: np.ndarray | None, truth: np.ndarray, size: tuple[int, int]) -> float:
    if estimated is None:
        return float("inf")
    width, height = size
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(corners, estimated) - cv2.perspectiveTransform(corners, truth)
    return float(np.linalg.norm(moved.reshape(-1, 2), axis=1).mean())


@dataclass
class Scores:
    precision: dict[int, list[float]] = field(default_factory=lambda: {t: [] for t in THRESHOLDS})
    homography: dict[int, list[bool]] = field(default_factory=lambda: {t: [] for t in THRESHOLDS})
    matches: list[int] = field(default_factory=list)

    def add(self, points0: np.ndarray, points1: np.ndarray, truth: np.ndarray, size0: tuple[int, int]) -> None:
        self.matches.append(len(points0))
        if len(points0):
            errors = np.linalg.norm(cv2.perspectiveTransform(points0.reshape(-1, 1, 2).astype(np.float64), truth)
                                    .reshape(-1, 2) - points1, axis=1)
        else:
            errors = np.zeros(0)
        estimated = None
        if len(points0) >= 4:
            estimated, _ = cv2.findHomography(points0, points1, cv2.RANSAC, 3.0)
        error = corner_error(estimated, truth, size0)
        for t in THRESHOLDS:
            self.precision[t].append(float(np.mean(errors < t)) if len(errors) else 0.0)
            self.homography[t].append(error < t)

    def row(self, name: str) -> str:
        mma = " | ".join(f"{np.mean(self.precision[t]):.3f}" for t in THRESHOLDS)
        hacc = " | ".join(f"{np.mean(self.homography[t]):.3f}" for t in THRESHOLDS)
        return f"| {name} | {mma} | {hacc} | {np.mean(self.matches):.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="aliked", choices=("aliked", "disk", "xfeat"))
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source, extract = extractor(args.features, args.max_keypoints)
    matcher = cvdeep.LightGlue(args.features)
    nearest = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    results = {"lightglue": Scores(), "mutual-nn": Scores()}
    for name, images, homographies in sequences(args.data):
        loaded = [read(path) for path in images]
        features = [extract(image) for image in loaded]
        (kp0, d0), size0 = features[0], image_size(loaded[0])
        for (kp, d), image, h_path in zip(features[1:], loaded[1:], homographies):
            truth = read_homography(h_path)
            pairs, _ = matcher.match_features(kp0, d0, size0, kp, d, image_size(image))
            results["lightglue"].add(kp0[pairs[:, 0]], kp[pairs[:, 1]], truth, size0)
            nn_matches = nearest.match(d0, d)
            index0 = np.array([m.queryIdx for m in nn_matches], dtype=np.int64)
            index1 = np.array([m.trainIdx for m in nn_matches], dtype=np.int64)
            results["mutual-nn"].add(kp0[index0], kp[index1], truth, size0)
        print(f"{name}: done ({len(kp0)} keypoints in image 1)", flush=True)
    pairs_count = len(results["lightglue"].matches)
    print(f"\n{args.features.upper()} ({source}'s extractor, up to {args.max_keypoints} keypoints), {pairs_count} pairs")
    header = " | ".join(f"MMA@{t}" for t in THRESHOLDS) + " | " + " | ".join(f"H-acc@{t}" for t in THRESHOLDS)
    print(f"| matcher | {header} | matches/pair |\n|---|" + "---:|" * (2 * len(THRESHOLDS) + 1))
    for name, scores in results.items():
        print(scores.row(f"{args.features.upper()} + {name}"))


if __name__ == "__main__":
    main()
