"""Evaluation on real ground truth: dataset loaders, metrics and the benchmark runner.

``cvdeep bench`` and ``python -m cvdeep.eval`` both use ``add_bench_arguments`` and
``run_bench``; see docs/RESULTS.md for the protocol and the current numbers.
"""
from __future__ import annotations

from .datasets import Sequence, load_dataset, load_hpatches, load_oxford, load_shared, read_homography
from .matchers import get_matcher, register_matcher
from .runner import BenchConfig, add_bench_arguments, main, run, run_bench, write_outputs

__all__ = ["BenchConfig", "Sequence", "add_bench_arguments", "get_matcher", "load_dataset", "load_hpatches",
           "load_oxford", "load_shared", "main", "read_homography", "register_matcher", "run", "run_bench",
           "write_outputs"]
