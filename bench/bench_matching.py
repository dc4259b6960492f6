"""Matching and kernel benchmark: cvdeep's fused L2 top-k against the usual baselines, in one run.

For N = M and D in the grid, every method finds the 2 nearest neighbours of each row of
d1 among d2 (float32, random):

- cvdeep      ``cvdeep.ops.l2_match(k=2, mutual=True)`` (also the reverse nearest neighbour)
- cv2         ``cv2.BFMatcher(NORM_L2).knnMatch(k=2)`` (includes building cv2.DMatch objects)
- cdist       ``torch.cdist`` + ``topk`` (materialises the N x M matrix; skipped past 16384)
- faiss       ``faiss.IndexFlatL2.search(k=2)`` (bench-only dependency)

Times are the best of a few runs, as wall time and as process CPU time (all threads):
on a busy shared machine the CPU time is the steadier measure. "peak MiB" is the growth
of the process's peak RSS during the last call (Linux ``/proc/self/clear_refs``); memory
the allocator kept from earlier calls does not show there, so the largest size is also
matched in a fresh process whose peak RSS is reported. Ratios are
baseline / cvdeep, so > 1 means cvdeep is faster. Also times building DMatch lists (cvdeep.BFMatcher.knnMatch vs
the bare kernel) and NMS / soft-NMS kernels against their references.

    PYTHONPATH=. python bench/bench_matching.py            # full table
    PYTHONPATH=. python bench/bench_matching.py --quick    # small sizes, while developing
"""
from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

import cvdeep
from cvdeep import ops
from cvdeep.eval.runner import machine_description
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


class Timing:
    """Best wall time and best process CPU time (all threads) over the repeats, peak RSS growth."""

    def __init__(self, wall: float = float("nan"), cpu: float = float("nan"), peak_mib: float = float("nan")):
        self.wall, self.cpu, self.peak_mib = wall, cpu, peak_mib

    def cell(self, ours: Timing | None = None) -> str:
        if self.wall != self.wall:
            return "-"
        text = f"{self.wall * 1e3:.1f} / {self.cpu * 1e3:.1f}"
        if ours is not None:
            text += f" ({self.wall / ours.wall:.2f}x, {self.cpu / ours.cpu:.2f}x)"
        return text


def measure(fn: Callable[[], object], repeats: int) -> Timing:
    timing = Timing(float("inf"), float("inf"))
    for _ in range(repeats):
        before = _rss_kib("VmRSS:")
        tracked = _reset_peak()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        timing.wall = min(timing.wall, time.perf_counter() - start)
        timing.cpu = min(timing.cpu, time.process_time() - start_cpu)
        if tracked:
            timing.peak_mib = max(0.0, (_rss_kib("VmHWM:") - before) / 1024)
        del result
    return timing


def machine() -> str:
    """The benchmark's machine description (``cvdeep.eval``'s), plus faiss, cvdeep's backend and the load."""
    host = machine_description()
    return (
        f"{host['cpu']}, {host['cpu_count']} logical CPUs, torch {host['torch']} ({host['torch_threads']} threads), "
        f"OpenCV {host['opencv']}, faiss {getattr(faiss, '__version__', 'absent')}, Python {host['python']}, "
        f"cvdeep backend {ops.backend()} ({ops.build_info().get('cpu_isa', '-')}), "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def _cdist_top2(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cdist(a, b).topk(2, dim=1, largest=False)


def _faiss_top2(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(a.shape[1])
    index.add(b)
    return index.search(a, 2)


def bench_matching(sizes: list[int], dims: list[int], repeats: int) -> None:
    print("Cells: wall ms / CPU ms (baseline / cvdeep ratio on wall time, on CPU time); peak MiB = peak RSS growth.\n")
    print("| N = M | D | cvdeep | cv2 knnMatch | cdist + topk | faiss IndexFlatL2 | cvdeep GFLOP/s wall, per CPU-s "
          "| peak MiB cvdeep / cv2 / cdist / faiss |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    for n in sizes:
        for d in dims:
            rng = np.random.default_rng(n + d)
            a, b = rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((n, d), dtype=np.float32)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            reps = repeats if n <= 8192 else 1
            ours = measure(functools.partial(ops.l2_match, ta, tb, k=2, mutual=True), reps)
            theirs = measure(functools.partial(matcher.knnMatch, a, b, k=2), reps)
            cdist = Timing()
            if n <= CDIST_LIMIT:
                cdist = measure(functools.partial(_cdist_top2, ta, tb), reps)
            flat = Timing()
            if faiss is not None:
                flat = measure(functools.partial(_faiss_top2, a, b), reps)
            flops = 2.0 * n * n * d / 1e9
            peaks = " / ".join(f"{t.peak_mib:.0f}" if t.peak_mib == t.peak_mib else "-"
                               for t in (ours, theirs, cdist, flat))
            print(
                f"| {n} | {d} | {ours.cell()} | {theirs.cell(ours)} | {cdist.cell(ours)} | {flat.cell(ours)} "
                f"| {flops / ours.wall:.0f}, {flops / ours.cpu:.0f} | {peaks} |",
                flush=True,
            )


def bench_sgemm(n: int, d: int, repeats: int) -> None:
    """The matrix product alone (torch.mm, i.e. MKL sgemm), as a roofline reference point."""
    a, b = torch.randn(n, d), torch.randn(n, d)
    t = measure(lambda: a @ b.t(), repeats)
    flops = 2.0 * n * n * d / 1e9
    print(f"\nsgemm reference: torch.mm (MKL) {n}x{d} @ {d}x{n}: {t.cell()} ms = {flops / t.wall:.0f} GFLOP/s wall, "
          f"{flops / t.cpu:.0f} per CPU-second")


def bench_dmatch(n: int, d: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((n, d), dtype=np.float32)
    bare = measure(lambda: ops.l2_match(torch.from_numpy(a), torch.from_numpy(b), k=2), repeats).cpu
    full = measure(lambda: cvdeep.BFMatcher().knnMatch(a, b, k=2), repeats).cpu
    mutual = measure(lambda: cvdeep.BFMatcher().match_mutual(a, b, ratio=0.8), repeats).cpu
    print(
        f"\nDMatch building (CPU times), {n}x{n}x{d} k=2: bare kernel {bare * 1e3:.1f} ms, cvdeep.BFMatcher.knnMatch "
        f"{full * 1e3:.1f} ms (DMatch lists cost {(full - bare) * 1e3:.1f} ms for {2 * n} objects, "
        f"{(full - bare) / (2 * n) * 1e9:.0f} ns each); match_mutual (index arrays) {mutual * 1e3:.1f} ms"
    )


def bench_hamming(sizes: list[int], repeats: int) -> None:
    """Binary descriptors (ORB's 32 bytes, AKAZE's 61): cvdeep.BFMatcher's NORM_HAMMING k=2 (dense
    path: one float32 matrix product over the unpacked bits) against cv2.BFMatcher's."""
    rng = np.random.default_rng(2)
    print("\nHamming k=2, wall / CPU ms, cvdeep.BFMatcher vs cv2.BFMatcher (ratio: cv2 / cvdeep)")
    for n in sizes:
        for width in (32, 61):
            a = rng.integers(0, 256, size=(n, width), dtype=np.uint8)
            b = rng.integers(0, 256, size=(n, width), dtype=np.uint8)
            ours = measure(functools.partial(cvdeep.BFMatcher(cv2.NORM_HAMMING).knnMatch, a, b, k=2), repeats)
            theirs = measure(functools.partial(cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch, a, b, k=2), repeats)
            print(f"  {n}x{n}x{width} bytes: cvdeep {ours.cell()}, cv2 {theirs.cell(ours)}")


def bench_kernels(repeats: int) -> None:
    def compare(what: str, ours: Callable[[], object], ref: Callable[[], object], ref_repeats: int = repeats) -> None:
        a, b = measure(ours, repeats), measure(ref, ref_repeats)
        print(f"{what}: cvdeep {a.cell()} ms, reference {b.cell()} ms "
              f"({b.wall / a.wall:.1f}x wall, {b.cpu / a.cpu:.1f}x CPU)")

    torch.manual_seed(0)
    scores = torch.rand(1, 1, 768, 1024)
    print()
    compare("NMS 1024x768, radius 4", lambda: ops.nms(scores, 4), lambda: reference.nms(scores, 4))
    points, values = torch.rand(4000, 2) * 1000, torch.rand(4000)
    compare("soft-NMS 4000 points -> 1000", lambda: ops.soft_nms(points, values, 4.0, 1000),
            lambda: reference.soft_nms(points, values, 4.0, 1000), 1)
    keypoints = (torch.rand(8000, 2) * torch.tensor([1023.0, 767.0])).round()
    heat = scores[0, 0]
    compare("softargmax 8000 keypoints, 5x5", lambda: ops.softargmax(heat, keypoints, 2, 0.1),
            lambda: reference.softargmax(heat, keypoints, 2, 0.1))


_PEAK_CHILD = """
import sys, numpy as np, torch
from cvdeep import ops
n, d = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = torch.from_numpy(rng.standard_normal((n, d), dtype=np.float32))
b = torch.from_numpy(rng.standard_normal((n, d), dtype=np.float32))
ops.build_info()
def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))
before = kib("VmHWM:")
indices, _ = ops.l2_match(a, b, k=2, mutual=True)
print(before // 1024, kib("VmHWM:") // 1024, int((indices[:, 0] >= 0).sum()))
"""


def bench_peak_memory(n: int, d: int) -> None:
    """Peak RSS of a fresh process matching n x n x d: the N x M matrix would not fit unnoticed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(n), str(d)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"\npeak memory run failed: {out.stderr[-500:]}")
        return
    before, after, mutual = (int(v) for v in out.stdout.split())
    print(
        f"\nPeak RSS, fresh process, l2_match {n}x{n}x{d} k=2 mutual: {before} MiB before the call (inputs "
        f"{2 * n * d * 4 / 2**20:.0f} MiB included), {after} MiB peak, +{after - before} MiB during the call; "
        f"the N x M float32 matrix alone would be {n * n * 4 / 2**20:.0f} MiB. {mutual} mutual matches, "
        f"{time.perf_counter() - start:.1f} s including start-up."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat (development)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        sizes, dims, repeats = [1024, 2048], [128], 1
    else:
        sizes, dims, repeats = [1024, 2048, 8192, 32768], [64, 128, 256], args.repeats
    print(machine(), "\n")
    bench_matching(sizes, dims, repeats)
    bench_peak_memory(sizes[-1], 128)
    bench_sgemm(8192 if not args.quick else 2048, 128, repeats)
    bench_dmatch(8192 if not args.quick else 2048, 128, repeats)
    bench_hamming([2048] if args.quick else [2048, 8192], repeats)
    bench_kernels(repeats)


if __name__ == "__main__":
    main()
