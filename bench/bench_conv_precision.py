"""What bf16 and int8 would buy on DISK's costliest layer, timed against fp32 in one run.

DISK at 640x480 spends about a quarter of its time in one 5x5 convolution, the third up block's
(96 -> 64 channels at 240x320, 11.8 G multiply-adds). This times it in float32, bfloat16 (oneDNN;
native on AVX512-BF16) and int8 (torch's x86 quantized engine, per-channel weights, a fixed input
scale: timing only, no accuracy), each with process CPU time, median of ``--rounds``.

    PYTHONPATH=. python bench/bench_conv_precision.py [--threads 1] [--rounds 7]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F


def median_ms(run: Callable[[], object], rounds: int) -> float:
    run()
    times = []
    for _ in range(rounds):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 96, 240, 320).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(64, 96, 5, 5) * 0.05, torch.randn(64)
    rows = {"fp32": median_ms(lambda: F.conv2d(x, weight, bias, padding=2), args.rounds)}
    xb, wb, bb = x.bfloat16(), weight.bfloat16(), bias.bfloat16()
    rows["bf16"] = median_ms(lambda: F.conv2d(xb, wb, bb, padding=2), args.rounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch 2.13: quantized tensors are deprecated
        import torch.ao.nn.quantized.functional as qF

        torch.backends.quantized.engine = "x86"
        xq = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
        scales = weight.abs().amax((1, 2, 3)) / 127
        wq = torch.quantize_per_channel(weight, scales, torch.zeros(64, dtype=torch.long), 0, torch.qint8)
        rows["int8"] = median_ms(lambda: qF.conv2d(xq, wq, bias, padding=2, scale=0.1, zero_point=128), args.rounds)
    print(f"DISK's 96->64 5x5 convolution at 240x320, torch {torch.__version__}, {args.threads} thread(s), "
          f"CPU time, median of {args.rounds}")
    print("\n| precision | ms | / fp32 |\n| --- | ---: | ---: |")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.1f} | {ms / rows['fp32']:.2f}x |")


if __name__ == "__main__":
    main()
