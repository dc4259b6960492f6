"""Matching and kernel benchmark: cvdeep's fused L2 top-k against the usual baselines, in one run.

For N = M and D in the grid, every method finds the 2 nearest neighbours of each row of
d1 among d2 (float32, random):

- cvdeep      ``cvdeep.ops.l2_match(k=2, mutual=True)`` (also the reverse nearest neighbour)
- cv2         ``cv2.BFMatcher(NORM_L2).knnMatch(k=2)`` (includes building cv2.DMatch objects)
- cdist       ``torch.cdist`` + ``topk`` (materialises the N x M matrix; skipped past 16384)
- faiss       ``faiss.IndexFlatL2.search(k=2)`` (bench-only dependency)

Times are the best of a few runs; "peak MiB" is the growth of the process's peak RSS
during the call (Linux ``/proc/self/clear_refs``). Ratios are baseline / cvdeep, so > 1
means cvdeep is faster. Also times building DMatch lists (cvdeep.BFMatcher.knnMatch vs
the bare kernel) and NMS / soft-NMS kernels against their references.

    PYTHONPATH=. python bench/bench_matching.py            # full table
    PYTHONPATH=. python bench/bench_matching.py --quick    # small sizes, while developing
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

import cvdeep
from cvdeep import ops
from cvdeep.ops import reference

try:
    import faiss
except ImportError:  # faiss is optional: its column then reads "n/a"
    faiss = None

CDIST_LIMIT = 16384  # cdist's N x M float32 matrix past this would be >= 1 GiB


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall time (s) over ``repeats`` and the peak RSS growth (MiB) of one call."""
    best = float("inf")
    peak_mib = float("nan")
    for _ in range(repeats):
        before = _rss_kib("VmRSS:")
        tracked = _reset_peak()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        if tracked:
            peak_mib = max(0.0, (_rss_kib("VmHWM:") - before) / 1024)
        del result
    return best, peak_mib


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = ops.build_info()
    return (
        f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"OpenCV {cv2.__version__}, faiss {getattr(faiss, '__version__', 'absent')}, Python {platform.python_version()}, "
        f"cvdeep backend {ops.backend()} ({info.get('cpu_isa', '-')}), load average {os.getloadavg()[0]:.1f}"
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f}" if seconds == seconds else "      n/a"


def bench_matching(sizes: list[int], dims: list[int], repeats: int) -> None:
    print("| N = M | D | cvdeep ms | cv2 ms (x) | cdist ms (x) | faiss ms (x) | cvdeep GFLOP/s | peak MiB cvdeep / cv2 / cdist / faiss |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    for n in sizes:
        for d in dims:
            rng = np.random.default_rng(n + d)
            a, b = rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((n, d), dtype=np.float32)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            reps = repeats if n <= 8192 else 1
            ours = measure(lambda: ops.l2_match(ta, tb, k=2, mutual=True), reps)
            theirs = measure(lambda: matcher.knnMatch(a, b, k=2), reps)
            if n <= CDIST_LIMIT:
                cdist = measure(lambda: torch.cdist(ta, tb).topk(2, dim=1, largest=False), reps)
            else:
                cdist = (float("nan"), float("nan"))
            if faiss is not None:
                def run_faiss():
                    index = faiss.IndexFlatL2(d)
                    index.add(b)
                    return index.search(a, 2)
                flat = measure(run_faiss, reps)
            else:
                flat = (float("nan"), float("nan"))
            gflops = 2.0 * n * n * d / ours[0] / 1e9
            ratio = lambda other: f"{other[0] / ours[0]:.2f}" if other[0] == other[0] else "-"
            peaks = " / ".join(f"{p:.0f}" if p == p else "-" for p in (ours[1], theirs[1], cdist[1], flat[1]))
            print(
                f"| {n} | {d} | {_ms(ours[0])} | {_ms(theirs[0])} ({ratio(theirs)}) | {_ms(cdist[0])} ({ratio(cdist)}) "
                f"| {_ms(flat[0])} ({ratio(flat)}) | {gflops:.0f} | {peaks} |",
                flush=True,
            )


def bench_sgemm(n: int, d: int, repeats: int) -> None:
    """The matrix product alone (torch.mm, i.e. MKL sgemm), as a roofline reference point."""
    a, b = torch.randn(n, d), torch.randn(n, d)
    seconds, _ = measure(lambda: a @ b.t(), repeats)
    print(f"\nsgemm reference: torch.mm {n}x{d} @ {d}x{n}: {seconds * 1e3:.1f} ms = {2.0 * n * n * d / seconds / 1e9:.0f} GFLOP/s")


def bench_dmatch(n: int, d: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((n, d), dtype=np.float32)
    bare, _ = measure(lambda: ops.l2_match(torch.from_numpy(a), torch.from_numpy(b), k=2), repeats)
    full, _ = measure(lambda: cvdeep.BFMatcher().knnMatch(a, b, k=2), repeats)
    mutual, _ = measure(lambda: cvdeep.BFMatcher().match_mutual(a, b, ratio=0.8), repeats)
    print(
        f"\nDMatch building, {n}x{n}x{d} k=2: bare kernel {bare * 1e3:.1f} ms, cvdeep.BFMatcher.knnMatch "
        f"{full * 1e3:.1f} ms (DMatch lists cost {(full - bare) * 1e3:.1f} ms for {2 * n} objects, "
        f"{(full - bare) / (2 * n) * 1e9:.0f} ns each); match_mutual (index arrays) {mutual * 1e3:.1f} ms"
    )


def bench_kernels(repeats: int) -> None:
    torch.manual_seed(0)
    scores = torch.rand(1, 1, 768, 1024)
    ours, _ = measure(lambda: ops.nms(scores, 4), repeats)
    ref, _ = measure(lambda: reference.nms(scores, 4), repeats)
    print(f"\nNMS 1024x768, radius 4: cvdeep {ours * 1e3:.1f} ms, max-pool reference {ref * 1e3:.1f} ms ({ref / ours:.1f}x)")
    points, values = torch.rand(4000, 2) * 1000, torch.rand(4000)
    ours, _ = measure(lambda: ops.soft_nms(points, values, 4.0, 1000), repeats)
    ref, _ = measure(lambda: reference.soft_nms(points, values, 4.0, 1000), 1)
    print(f"soft-NMS 4000 points -> 1000: cvdeep {ours * 1e3:.1f} ms, reference {ref * 1e3:.1f} ms ({ref / ours:.1f}x)")
    keypoints = (torch.rand(8000, 2) * torch.tensor([1023.0, 767.0])).round()
    heat = scores[0, 0]
    ours, _ = measure(lambda: ops.softargmax(heat, keypoints, 2, 0.1), repeats)
    ref, _ = measure(lambda: reference.softargmax(heat, keypoints, 2, 0.1), repeats)
    print(f"softargmax 8000 keypoints, 5x5: cvdeep {ours * 1e3:.1f} ms, reference {ref * 1e3:.1f} ms ({ref / ours:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat (development)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes, dims, repeats = ([1024, 2048], [128], 1) if args.quick else ([1024, 2048, 8192, 32768], [64, 128, 256], args.repeats)
    print(machine(), "\n")
    bench_matching(sizes, dims, repeats)
    bench_sgemm(8192 if not args.quick else 2048, 128, repeats)
    bench_dmatch(8192 if not args.quick else 2048, 128, repeats)
    bench_kernels(repeats)


if __name__ == "__main__":
    main()
