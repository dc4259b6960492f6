"""ALIKED on the CPU: cvdeep against kornia 0.9 in the same run, plus what each optimisation buys.

    PYTHONPATH=. python bench/bench_aliked.py [--model aliked-n16] [--size 640x480] [--runs 7] [--threads 2]

Both run the same weights on the same image with the same settings (threshold 0.2,
at most 5000 keypoints, NMS radius 2) on 2 threads; runs are interleaved and the
median is reported, so a machine shared with other jobs affects both alike. Both wall
time and process CPU time are printed: on an overloaded machine every parallel region
waits for its threads to be scheduled, which inflates wall time by the number of ops;
with ``--threads 1`` the CPU time measures the work alone. The ablation rows turn off one
optimisation at a time (channels_last layout; the compiled kernels, deformable convolution
included, via CVDEEP_DISABLE_EXT) and time the whole extraction again.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import cv2
import torch

from cvdeep import ops
from cvdeep.image import to_tensor
from cvdeep.models import build_model, get_weight_spec
from cvdeep.weights import resolve

ROOT = Path(__file__).resolve().parents[1]


def _image(size: tuple[int, int]) -> torch.Tensor:
    shared = Path(os.environ.get("CVDEEP_SHARED", ROOT.parent / "shared"))
    image = cv2.imread(str(shared / "data" / "oxford_affine" / "images" / "graf" / "img1.ppm"))
    if image is None:
        raise SystemExit(f"cannot read the Oxford graf image under {shared}; set CVDEEP_SHARED")
    return to_tensor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), 3, torch.device("cpu"))


def _kornia(model: str):
    from kornia.feature.aliked.aliked import ALIKED as KorniaALIKED

    net = KorniaALIKED(model_name=model, max_num_keypoints=5000, detection_threshold=0.2, nms_radius=2)
    net.load_state_dict(torch.load(resolve(get_weight_spec(model)), weights_only=True), strict=False)
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="aliked-n16")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    image = _image((width, height))
    valid = torch.ones((1, 1, height, width), dtype=torch.bool)
    ours, kornia = build_model(args.model), _kornia(args.model)
    compiled = ops.backend() != "reference"

    def cvdeep_run(memory_format=torch.channels_last, kernel=compiled):
        ours.memory_format = memory_format
        if not kernel:
            os.environ["CVDEEP_DISABLE_EXT"] = "1"
        try:
            return len(ours.extract(image, valid)["keypoints"])
        finally:
            ours.memory_format = torch.channels_last
            os.environ.pop("CVDEEP_DISABLE_EXT", None)

    variants = {
        "kornia 0.9": lambda: len(kornia(image)[0].keypoints),
        "cvdeep": cvdeep_run,
        "cvdeep, NCHW layout": lambda: cvdeep_run(memory_format=torch.contiguous_format),
    }
    if compiled:
        variants["cvdeep, torch references for every op"] = lambda: cvdeep_run(kernel=False)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    counts = {}
    with torch.inference_mode():
        for run in range(args.runs + 1):
            for name, call in variants.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                counts[name] = call()
                if run:  # the first round warms up
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
    base_wall, base_cpu = statistics.median(wall["kornia 0.9"]), statistics.median(cpu["kornia 0.9"])
    print(f"{args.model} at {width}x{height}, {args.threads} thread(s), median of {args.runs} interleaved runs")
    print(f"{'':40s} {'wall ms':>8s} {'x kornia':>9s} {'cpu ms':>8s} {'x kornia':>9s} {'keypoints':>10s}")
    for name in variants:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:40s} {1000 * w:8.1f} {w / base_wall:9.2f} {1000 * c:8.1f} {c / base_cpu:9.2f} {counts[name]:10d}")


if __name__ == "__main__":
    main()
