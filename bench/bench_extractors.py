"""Time cvdeep's learned extractors against kornia 0.9 and cv2.SIFT in one run.

Every method sees the same images (Oxford graf img1 and HPatches v_churchill 1,
resized with INTER_AREA to each benchmark size), on the same number of threads, and
the timings are interleaved round by round so that load on a shared machine hits all
methods alike; the ratios are what to read. kornia runs with the same weight files.
``--precision fp32 bf16`` adds a cvdeep row per method and precision (``precision=`` of every
cvdeep Feature2D), timed in the same rounds, with its ratio to cvdeep fp32; a precision the
machine cannot run natively is labelled with what ran (``bf16->fp32``). ``--no-kornia`` leaves
kornia out.

    PYTHONPATH=. python bench/bench_extractors.py [--threads 2] [--rounds 15] [--warmup 2] [--clock wall|cpu] \
        [--sizes 640x480 1024x768] [--methods XFeat DISK ALIKED-n16] [--precision fp32 bf16] [--no-kornia]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cvdeep  # noqa: E402
import cvdeep.ops  # noqa: E402
from cvdeep.models import get_weight_spec  # noqa: E402
from cvdeep.precision import PRECISIONS, bf16_native, effective_precision  # noqa: E402
from cvdeep.weights import resolve  # noqa: E402

IMAGES = (
    "oxford_affine/images/graf/img1.ppm",
    "hpatches_subset/vbalnt_tfeat/imgs/v_churchill/1.ppm",
)
SIFT_FEATURES = 2048

Run = Callable[[np.ndarray], int]  # BGR uint8 image -> number of keypoints


@dataclass
class Method:
    """One learned method: how cvdeep runs it (at a precision) and how kornia runs it."""

    name: str
    factory: Callable[..., cvdeep.Feature2D]  # keyword parameters -> the cvdeep detector
    kornia: Callable[[], Run]

    def cvdeep(self, precision: str = "fp32") -> Run:
        detector = self.factory(precision=precision)
        return lambda image: len(detector.detectAndCompute(image, None)[0])


def _gray_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[None, None].float().div_(255.0)


def _rgb_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float().div_(255.0)


def _kornia_xfeat() -> Run:
    import kornia.feature as KF

    model = KF.XFeat(top_k=4096, detection_threshold=0.05)
    model.net.load_state_dict(torch.load(resolve(get_weight_spec("xfeat")), map_location="cpu", weights_only=True))
    model.eval()
    return lambda image: len(model.detectAndCompute(_gray_tensor(image))[0]["keypoints"])


def _kornia_disk() -> Run:
    import kornia.feature as KF

    model = KF.DISK()
    checkpoint = torch.load(resolve(get_weight_spec("disk-depth")), map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["extractor"])
    model.eval()

    def run(image: np.ndarray) -> int:
        with torch.inference_mode():
            return len(model(_rgb_tensor(image), pad_if_not_divisible=True)[0].keypoints)

    return run


def _kornia_aliked(name: str) -> Callable[[], Run]:
    def build() -> Run:
        import kornia.feature as KF

        model = KF.ALIKED(model_name=name)
        state = torch.load(resolve(get_weight_spec(name)), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=False)
        model.eval()

        def run(image: np.ndarray) -> int:
            with torch.inference_mode():
                return len(model(_rgb_tensor(image))[0].keypoints)

        return run

    return build


def methods() -> list[Method]:
    """The learned methods cvdeep has in this build (ALIKED once its branch is merged)."""
    found = [
        Method("XFeat", lambda **params: cvdeep.XFeat_create(nfeatures=4096, **params), _kornia_xfeat),
        Method("DISK", lambda **params: cvdeep.DISK_create(**params), _kornia_disk),
    ]
    if hasattr(cvdeep, "ALIKED"):
        found.append(
            Method("ALIKED-n16", lambda **params: cvdeep.ALIKED_create(model="aliked-n16", **params),
                   _kornia_aliked("aliked-n16"))
        )
    return found


def _sift() -> Run:
    sift = cv2.SIFT_create(nfeatures=SIFT_FEATURES)
    return lambda image: len(sift.detectAndCompute(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), None)[0])


def load_images(shared: Path, size: tuple[int, int]) -> list[np.ndarray]:
    images = []
    for relative in IMAGES:
        image = cv2.imread(str(shared / "data" / relative))
        if image is None:
            raise SystemExit(f"cannot read {shared / 'data' / relative}; point --shared at the shared data")
        images.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return images


def time_interleaved(
    runs: dict[str, Run],
    images: list[np.ndarray],
    rounds: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, tuple[float, float]]:
    """Median milliseconds per image and mean keypoint count of each run, interleaved per round."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, list[int]] = {name: [] for name in runs}
    for round_index in range(warmup + rounds):
        for name, run in runs.items():
            for image in images:
                start = clock()
                count = run(image)
                elapsed = clock() - start
                if round_index >= warmup:
                    samples[name].append(elapsed * 1000.0)
                    counts[name].append(count)
    return {name: (statistics.median(samples[name]), float(np.mean(counts[name]))) for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1024x768"])
    parser.add_argument("--methods", nargs="+", help="subset of method names (default: all available)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu = this process's CPU time: with --threads 1, robust to a machine loaded by others")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS,
                        help="cvdeep rows at each of these precisions (fp32 is always timed: the ratios' base)")
    parser.add_argument("--no-kornia", action="store_true", help="leave kornia out (its ratio column stays empty)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("CVDEEP_SHARED", ROOT.parent / "shared")))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    chosen = [m for m in methods() if not args.methods or m.name in args.methods]
    precisions = ["fp32", *(p for p in dict.fromkeys(args.precision) if p != "fp32")]
    device = torch.device("cpu")
    labels = {p: p if effective_precision(p, device) == p else f"{p}->{effective_precision(p, device)}"
              for p in precisions}
    runs: dict[str, Run] = {"cv2.SIFT": _sift()}
    for method in chosen:
        for precision in precisions:
            runs[f"cvdeep {method.name} {precision}"] = method.cvdeep(precision)
        if not args.no_kornia:
            runs[f"kornia {method.name}"] = method.kornia()

    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads, "
          f"{len(IMAGES)} images, {args.rounds} rounds, {args.clock} clock, ops backend: {cvdeep.ops.backend()}, "
          f"native bf16: {bf16_native(device)}")
    header = (f"| size | method | ms (median) | keypoints | cvdeep / kornia | cvdeep / cv2.SIFT({SIFT_FEATURES}) "
              "| / cvdeep fp32 |")
    print(header)
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for size_text in args.sizes:
        width, height = (int(v) for v in size_text.lower().split("x"))
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        results = time_interleaved(runs, load_images(args.shared, (width, height)), args.rounds, args.warmup, clock)
        sift_ms, sift_count = results["cv2.SIFT"]
        print(f"| {width}x{height} | cv2.SIFT | {sift_ms:.1f} | {sift_count:.0f} | | | |")
        for method in chosen:
            ref_ms = None
            if not args.no_kornia:
                ref_ms, ref_count = results[f"kornia {method.name}"]
                print(f"| {width}x{height} | kornia {method.name} | {ref_ms:.1f} | {ref_count:.0f} | | | |")
            base_ms = results[f"cvdeep {method.name} fp32"][0]
            for precision in precisions:
                ours_ms, ours_count = results[f"cvdeep {method.name} {precision}"]
                kornia_ratio = f"{ours_ms / ref_ms:.2f}x" if ref_ms else ""
                print(f"| {width}x{height} | cvdeep {method.name} {labels[precision]} | {ours_ms:.1f} | "
                      f"{ours_count:.0f} | {kornia_ratio} | {ours_ms / sift_ms:.2f}x | {ours_ms / base_ms:.2f}x |")


if __name__ == "__main__":
    main()
