"""KeyPoint building: cvdeep's vectorised conversion vs a per-keypoint Python loop.

    python bench/bench_keypoints.py [--n 8000] [--repeat 50]

Prints the median time of each and the ratio; the issue's goal is 8,000 keypoints in < 2 ms.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from cvdeep.keypoints import KeypointArrays, from_cv_keypoints, to_cv_keypoints


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _loop_baseline(arrays: KeypointArrays) -> tuple:
    """What a straightforward implementation does: one constructor call per keypoint."""
    out = []
    for i in range(len(arrays)):
        kp = cv2.KeyPoint()
        kp.pt = (float(arrays.xy[i, 0]), float(arrays.xy[i, 1]))
        kp.size = float(arrays.size[i])
        kp.angle = float(arrays.angle[i])
        kp.response = float(arrays.response[i])
        kp.octave = int(arrays.octave[i])
        out.append(kp)
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    arrays = KeypointArrays(
        xy=rng.uniform(0, 1000, (args.n, 2)).astype(np.float32),
        size=np.full(args.n, 8.0, np.float32),
        angle=np.full(args.n, -1.0, np.float32),
        response=rng.uniform(0, 1, args.n).astype(np.float32),
        octave=np.zeros(args.n, np.int32),
    )
    fast = _median_ms(lambda: to_cv_keypoints(arrays), args.repeat)
    slow = _median_ms(lambda: _loop_baseline(arrays), max(5, args.repeat // 5))
    keypoints = to_cv_keypoints(arrays)
    back = _median_ms(lambda: from_cv_keypoints(keypoints), args.repeat)
    print(f"{args.n} keypoints, OpenCV {cv2.__version__}")
    print(f"  arrays -> cv2.KeyPoint  cvdeep {fast:7.2f} ms   per-keypoint loop {slow:7.2f} ms   "
          f"ratio {fast / slow:.2f}")
    print(f"  cv2.KeyPoint -> arrays  cvdeep {back:7.2f} ms")


if __name__ == "__main__":
    main()
