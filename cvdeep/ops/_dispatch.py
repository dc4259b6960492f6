"""Which path an op takes: the compiled ``cvdeep._C`` kernels or the pure-torch references.

One place decides for every op: ``CVDEEP_DISABLE_EXT=1`` forces the references (no
warning: it was asked for); a missing extension, or a device it has no kernel for, falls
back with one warning per process. ``kernel_or_reference`` builds each public op from its
reference (signature and documentation) and a call of its kernel.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings
from functools import cache
from typing import Any, Callable, TypeVar

import torch

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # torch depends on typing_extensions
    from typing_extensions import ParamSpec

P = ParamSpec("P")
R = TypeVar("R")


@cache
def _extension() -> Any | None:
    """The imported ``cvdeep._C`` module, or None when it was not built or fails to load."""
    try:
        return importlib.import_module("cvdeep._C")
    except ImportError:  # not compiled (no compiler at install time), or an ABI mismatch
        return None


@cache
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


def _needs_grad(value: Any) -> bool:
    """A tensor requiring gradients, or a list or tuple holding one (at any depth)."""
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    return isinstance(value, (list, tuple)) and any(_needs_grad(item) for item in value)


def kernel_or_reference(
    name: str,
    reference_op: Callable[P, R],
    kernel: Callable[..., R],
    tensors: tuple[str, ...],
    inference_only: bool = False,
    accepts: Callable[..., bool] | None = None,
) -> Callable[P, R]:
    """The public op ``name``: ``kernel`` when ``_use_kernel`` accepts the arguments named in
    ``tensors``, else ``reference_op``, whose signature and documentation it takes.

    ``kernel`` receives every argument of the reference by name, defaults filled in.
    ``inference_only``: a kernel without an autograd formula, so a call that needs
    gradients (grad mode on and a tensor argument, or one in a list or tuple, requiring them)
    runs the reference.
    ``accepts``: for a kernel that covers only some inputs (a device, a dtype), called with the
    arguments; the others run the reference without a warning (it is the intended path for them).
    """
    signature = inspect.signature(reference_op)

    def op(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        if inference_only and torch.is_grad_enabled() and any(_needs_grad(value) for value in arguments.values()):
            return reference_op(*args, **kwargs)
        if accepts is not None and not accepts(**arguments):
            return reference_op(*args, **kwargs)
        if _use_kernel(*(arguments[tensor] for tensor in tensors)):
            return kernel(**arguments)
        return reference_op(*args, **kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = reference_op.__doc__
    op.__module__ = "cvdeep.ops"
    setattr(op, "__signature__", signature)  # noqa: B010  (help() and inspect show the reference's parameters)
    return op
