"""Which path an op takes: the compiled ``cvdeep._C`` kernels or the pure-torch references.

One place decides for every op: ``CVDEEP_DISABLE_EXT=1`` forces the references (no
warning: it was asked for); a missing extension, or a device it has no kernel for, falls
back with one warning per process.
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache
from typing import Any

import torch


@lru_cache(maxsize=None)
def _extension() -> Any | None:
    """The imported ``cvdeep._C`` module, or None when it was not built or fails to load."""
    try:
        from .. import _C
    except ImportError:  # not compiled (no compiler at install time), or an ABI mismatch
        return None
    return _C


@lru_cache(maxsize=None)
def build_info() -> dict[str, Any]:
    """How the extension was built (CUDA, OpenMP, CPU instruction set in use); {} without it."""
    ext = _extension()
    return dict(ext.build_info()) if ext is not None else {}


def _disabled() -> bool:
    return os.environ.get("CVDEEP_DISABLE_EXT", "") not in ("", "0")


_warned = False


def _use_kernel(*tensors: torch.Tensor) -> bool:
    """True when the compiled kernel can run on these tensors; warns once otherwise."""
    global _warned
    if _disabled():
        return False
    info = build_info()
    usable = bool(info) and all(t.device.type == "cpu" or (t.is_cuda and info["cuda"]) for t in tensors)
    if not usable and not _warned:
        _warned = True
        why = "cvdeep._C is not built" if not info else f"cvdeep._C has no kernels for {tensors[0].device.type}"
        warnings.warn(f"{why}; cvdeep.ops runs the slower pure-torch references", RuntimeWarning, stacklevel=3)
    return usable


def backend() -> str:
    """The live path: ``"reference"``, ``"cpu"`` or ``"cpu+cuda"``."""
    info = build_info()
    if _disabled() or not info:
        return "reference"
    return "cpu+cuda" if info["cuda"] else "cpu"
