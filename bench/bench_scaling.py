"""How cost grows: extraction time and peak RSS against image size, LightGlue time against keypoints.

For each image size, cv2.SIFT and cvdeep's XFeat, ALIKED-n16 and DISK (at each ``--precision``)
are timed in one interleaved run (``bench_extractors.time_interleaved``: the same two photos, the
same thread count, process CPU time with ``--clock cpu``), and each model's peak RSS is measured
in a fresh process per cell (``bench_memory.run_child``: one ``detectAndCompute`` on the memory
benchmark's photo), all before this process runs anything large: Linux carries a parent's peak RSS
into a child it starts, so a child started after a large extraction here would report that instead.
LightGlue (cvdeep vs kornia, ``bench_lightglue.bench``) runs at each keypoint
count. A Markdown table goes to stdout; ``--out`` writes the numbers (JSON) and a log-log plot.

    PYTHONPATH=. python bench/bench_scaling.py [--threads 1] [--clock cpu] [--rounds 3]
        [--sizes 640x480 1280x720 1920x1080 3840x2160] [--precision fp32 bf16]
        [--lightglue aliked] [--keypoints 512 1024 2048 4096] [--out docs/scaling]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_extractors import Run, _sift, load_images, methods, time_interleaved  # noqa: E402
from bench_lightglue import bench as bench_lightglue  # noqa: E402
from bench_memory import run_child  # noqa: E402

from cvdeep.precision import PRECISIONS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEMORY_MODELS = {"XFeat": "xfeat", "ALIKED-n16": "aliked", "DISK": "disk"}  # registry family names


def _megapixels(size: str) -> float:
    width, height = (int(v) for v in size.lower().split("x"))
    return width * height / 1e6


def plot(results: dict, path: Path) -> None:
    """Three log-log panels: time and peak RSS against megapixels, LightGlue time against keypoints."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    sizes = results["sizes"]
    pixels = [_megapixels(size) for size in sizes]
    for name in results["time_ms"][sizes[0]]:
        axes[0].plot(pixels, [results["time_ms"][size][name] for size in sizes], marker="o", label=name)
    for name in results["peak_mb"][sizes[0]]:
        values = [results["peak_mb"][size].get(name) for size in sizes]
        axes[1].plot(pixels, [v if v is not None else float("nan") for v in values], marker="o", label=name)
    for name in ("cvdeep", "kornia"):
        axes[2].plot([int(k) for k in results["lightglue_ms"]], [v[name] for v in results["lightglue_ms"].values()],
                     marker="o", label=name)
    titles = ("extraction time (ms)", "peak RSS (MiB)", f"LightGlue ({results['lightglue_features']}) time (ms)")
    counts = [int(k) for k in results["lightglue_ms"]]
    ticks = ((pixels, sizes), (pixels, sizes), (counts, [str(k) for k in counts]))
    xlabels = ("image size", "image size", "keypoints per image")
    for axis, title, xlabel, (positions, labels) in zip(axes, titles, xlabels, ticks):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(positions, labels, fontsize=8)
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"{results['threads']} thread(s), {results['clock']} clock, torch {results['torch']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080", "3840x2160"])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--lightglue", default="aliked", help="features whose LightGlue is timed")
    parser.add_argument("--keypoints", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("CVDEEP_SHARED", ROOT.parent / "shared")))
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.png")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    results: dict = {"threads": args.threads, "clock": args.clock, "torch": torch.__version__, "sizes": args.sizes,
                     "time_ms": {}, "peak_mb": {}, "lightglue_features": args.lightglue, "lightglue_ms": {}}
    names = ["cv2.SIFT", *(method.name for method in methods())]
    for size in args.sizes:  # first: see the module docstring
        cells = {name: run_child("sift" if name == "cv2.SIFT" else MEMORY_MODELS[name], size, None, None,
                                 args.threads, None) for name in names}
        results["peak_mb"][size] = {name: float(cell["peak_mb"]) for name, cell in cells.items()  # type: ignore[arg-type]
                                    if "peak_mb" in cell and "error" not in cell}
    runs: dict[str, Run] = {"cv2.SIFT": _sift()}
    for method in methods():
        for precision in args.precision:
            runs[f"{method.name} {precision}"] = method.cvdeep(precision)
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} thread(s), {args.clock} clock, "
          f"median of {args.rounds} rounds")
    print("\n| size | method | ms | / cv2.SIFT | peak RSS MiB |\n| --- | --- | ---: | ---: | ---: |", flush=True)
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        timed = time_interleaved(runs, load_images(args.shared, (width, height)), args.rounds, 1, clock)
        results["time_ms"][size] = {name: timed[name][0] for name in runs}
        peaks = results["peak_mb"][size]  # per model, in its default precision
        sift_ms = results["time_ms"][size]["cv2.SIFT"]
        for name, ms in results["time_ms"][size].items():
            peak = peaks.get(name) if name == "cv2.SIFT" else peaks.get(name.rsplit(" ", 1)[0])
            print(f"| {size} | {name} | {ms:.1f} | {ms / sift_ms:.2f}x | {'' if peak is None else f'{peak:.0f}'} |",
                  flush=True)
    print(f"\n| LightGlue ({args.lightglue}) keypoints | cvdeep ms | kornia ms | kornia / cvdeep | inputs, matches |"
          "\n| ---: | ---: | ---: | ---: | --- |", flush=True)
    for count in args.keypoints:
        ours, theirs, summary = bench_lightglue(args.lightglue, count, args.rounds, args.shared / "data", clock)
        results["lightglue_ms"][str(count)] = {"cvdeep": ours, "kornia": theirs}
        print(f"| {count} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f} | {summary} |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
        plot(results, args.out.with_suffix(".png"))
        print(f"\nwrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
