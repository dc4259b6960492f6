"""Evaluation on real ground truth: dataset loaders, metrics and the benchmark runner.

``cvdeep bench`` and ``python -m cvdeep.eval`` both use ``add_bench_arguments`` and
``run_bench``; see docs/RESULTS.md for the protocol and the current numbers. Features are
described and matched by the same code as the applications (``cvdeep.matching.pairs``).
"""
from __future__ import annotations

from .datasets import Sequence, load_dataset, load_hpatches, load_oxford, load_shared, read_homography
from .runner import BenchConfig, add_bench_arguments, main, run, run_bench, write_outputs

__all__ = ["BenchConfig", "Sequence", "add_bench_arguments", "load_dataset", "load_hpatches", "load_oxford",
           "load_shared", "main", "read_homography", "run", "run_bench", "write_outputs"]
