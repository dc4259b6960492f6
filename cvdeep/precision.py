"""Inference precision: where the network's arithmetic may run in bfloat16.

Every detector's and descriptor's ``precision`` parameter (``"fp32"``, ``"bf16"`` or ``"auto"``)
is applied by the Feature2D layer, in one place, around ``Extractor.extract``, ``extract_batch``
and ``describe_keypoints`` (``network_precision``): it knows nothing of the network inside.
``"auto"`` is bf16 where the device runs it natively and fp32 elsewhere, without a warning: the
default of the models whose bf16 accuracy was measured to hold (ALIKED, XFeat, DISK; docs/RESULTS.md);
the others default to ``"fp32"``.

``"bf16"`` runs the operations that autocast lowers (convolutions, linear layers, matrix
products: where the time goes) in bfloat16 with ``torch.autocast``, and turns each of their
results back into float32 at once (``_Float32Results``). Everything else stays float32: the
activations between layers, every score and feature map, and so the NMS, the sub-pixel
refinement, descriptor sampling and normalisation, the keypoints and the descriptors
returned. The ops of ``cvdeep.ops`` always run in float32 (``full_precision``): their compiled
``deform_conv2d`` and ``softargmax`` kernels take float and double only. An extractor whose own
post-processing uses a convolution or a matrix product (D2-Net's Hessian, DELF's PCA) runs it
inside ``full_precision()`` too.

bfloat16 runs only where the hardware has it: a CPU with AVX512-BF16 or AMX-BF16 (x86) or the
BF16 extension (ARM), or a CUDA device that runs bf16 natively. Elsewhere (oneDNN would emulate it,
slower than float32) ``"bf16"`` falls back to float32 with one ``RuntimeWarning`` per process and
device type, as OpenCV's DNN module falls back from a target the machine lacks;
``effective_precision`` says what runs.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

PRECISIONS = ("fp32", "bf16", "auto")
"""The accepted values of the ``precision`` parameter."""

_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 (Linux names) and ARM's FEAT_BF16
_warned: set[str] = set()


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (``flags`` on x86, ``Features`` on ARM); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def bf16_native(device: torch.device | str) -> bool:
    """Whether bf16 arithmetic runs natively (not emulated) on ``device``.

    CPU: oneDNN is available and the CPU has AVX512-BF16, AMX-BF16 or ARM BF16 (read from
    /proc/cpuinfo; without it, as on macOS or Windows, oneDNN's own check decides, which also
    accepts plain AVX-512). CUDA: the device computes in bf16 (Ampere and later).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    flags = _cpu_flags()
    if flags:
        return bool(flags & _CPU_BF16_FLAGS)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def effective_precision(precision: str, device: torch.device | str) -> str:
    """What runs for ``precision`` on ``device``: ``"bf16"`` only where ``bf16_native``, else ``"fp32"``
    (for ``"bf16"``, warning once per process and device type that bf16 was asked for and is not run;
    ``"auto"`` falls back silently)."""
    if precision not in ("bf16", "auto"):
        return "fp32"
    device = torch.device(device)
    if bf16_native(device):
        return "bf16"
    if precision == "auto":
        return "fp32"
    if device.type not in _warned:
        _warned.add(device.type)
        what = "this CPU has no native BF16 (AVX512-BF16, AMX-BF16 or ARM BF16)" if device.type == "cpu" else \
            f"this {device.type} device does not compute in bf16"
        warnings.warn(f"precision='bf16': {what}; running in fp32", RuntimeWarning, stacklevel=3)
    return "fp32"


def _to_float32(result: Any) -> Any:
    if isinstance(result, torch.Tensor):
        return result.float() if result.dtype == torch.bfloat16 else result
    if isinstance(result, (tuple, list)) and any(
        isinstance(item, torch.Tensor) and item.dtype == torch.bfloat16 for item in result
    ):
        return type(result)([_to_float32(item) for item in result])  # tuple, list or torch.return_types
    return result


class _Float32Results(TorchFunctionMode):
    """Every torch call's bfloat16 result comes back as float32: under autocast only the lowered
    operations compute in bfloat16, and no bfloat16 tensor ever reaches the next operation."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return _to_float32(func(*args, **(kwargs or {})))


@contextlib.contextmanager
def network_precision(precision: str, device: torch.device | str) -> Iterator[str]:
    """Run the enclosed network calls in ``precision`` on ``device`` (see the module docstring);
    yields the effective precision."""
    device = torch.device(device)
    effective = effective_precision(precision, device)
    if effective == "fp32":
        yield effective
        return
    with torch.autocast(device.type, dtype=torch.bfloat16), _Float32Results():
        yield effective


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Float32 arithmetic inside, whatever the caller's autocast (a no-op outside autocast)."""
    enabled = [kind for kind in ("cpu", "cuda") if torch.is_autocast_enabled(kind)]
    if not enabled:
        yield
        return
    with contextlib.ExitStack() as stack:
        for kind in enabled:
            stack.enter_context(torch.autocast(kind, enabled=False))
        yield


def float32_op(op: Any) -> Any:
    """``op`` run under ``full_precision`` (the ops of ``cvdeep.ops``), with its name, signature and doc."""
    @functools.wraps(op)
    def run(*args: Any, **kwargs: Any) -> Any:
        with full_precision():
            return op(*args, **kwargs)

    return run
