"""Images per second of ``cvdeep extract`` on Ray with 1, 2 and 4 workers, the local engine in the same run as baseline.

    OMP_NUM_THREADS=1 python bench/bench_ray_scaling.py --images 24 --features aliked --max-size 640

The images are the first ``--images`` photos of ../shared/data/oxford_affine (or ``--folder``).
Every run writes a new file. For Ray the local cluster is started before the clock starts (its
start-up is printed apart): the time counted covers the actors' start, their model loading and
the extraction, as a run on a running cluster (``--address``) would.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from cvdeep.apps.extract import IMAGE_SUFFIXES, extract_to_h5

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oxford_affine" / "images"


def collect(folder: Path, count: int, into: Path) -> Path:
    """``count`` images of ``folder`` (recursively, sorted) copied flat into ``into``."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if len(paths) < count:
        raise SystemExit(f"{folder}: {len(paths)} images, asked for {count}")
    into.mkdir()
    for index, path in enumerate(paths):
        shutil.copy(path, into / f"{index:04d}_{path.parent.name}{path.suffix}")
    return into


def timed(images: Path, output: Path, args: argparse.Namespace, engine: str, workers: int) -> float:
    start = time.perf_counter()
    summary = extract_to_h5(images, output, args.features, args.nfeatures, args.max_size, progress=False,
                            workers=workers, engine=engine)
    seconds = time.perf_counter() - start
    assert summary.written == args.images and not summary.failed, summary
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=SHARED)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--features", default="aliked")
    parser.add_argument("--nfeatures", type=int, default=2048)
    parser.add_argument("--max-size", type=int, default=640)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    import ray

    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        images = collect(args.folder, args.images, work / "images")
        for workers in (1, 2):
            seconds = timed(images, work / f"local{workers}.h5", args, "local", workers)
            rows.append((f"local, {workers} process{'es' if workers > 1 else ''}", seconds, None))
        for workers in args.workers:
            start = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            started = time.perf_counter() - start
            try:
                seconds = timed(images, work / f"ray{workers}.h5", args, "ray", workers)
            finally:
                ray.shutdown()
            rows.append((f"ray, {workers} worker{'s' if workers > 1 else ''}", seconds, started))
    baseline = args.images / rows[0][1]
    print(f"{args.images} images ({args.folder}), {args.features}[nfeatures={args.nfeatures}], "
          f"max size {args.max_size}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("| engine | images/s | s/image | vs local 1 | cluster start (s) |")
    print("| --- | --- | --- | --- | --- |")
    for label, seconds, started in rows:
        rate = args.images / seconds
        print(f"| {label} | {rate:.2f} | {seconds / args.images:.2f} | {rate / baseline:.2f}x | "
              f"{'-' if started is None else f'{started:.1f}'} |")


if __name__ == "__main__":
    main()
