"""Read Lua Torch7 ``.t7`` checkpoints into plain state_dicts (optional ``torchfile`` package).

``torchfile`` parses the serialised data only (no code runs). A table becomes a flat
dict: a tensor under its key, an ``nn.Sequential`` as ``<key>.<index>.<param>`` with
0-based indices, as PyTorch's ``nn.Sequential`` names them. Per module type:
``nn.SpatialConvolution`` / ``nn.Linear`` give ``weight`` and ``bias``;
``nn.SpatialSubtractiveNormalization`` gives its mean estimator's convolution
(``weight`` (1, C, kH, kW), ``bias`` (1,)). Parameter-free modules give nothing.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..errors import Error

_PARAMETRIC = {b"nn.SpatialConvolution", b"nn.SpatialConvolutionMM", b"nn.Linear"}


def load_t7(path: str | os.PathLike) -> Any:
    """The raw torchfile object of a ``.t7`` file."""
    try:
        import torchfile
    except ImportError:
        raise Error("reading Torch7 .t7 files needs the optional package 'torchfile' (pip install torchfile)") from None
    try:
        return torchfile.load(os.fspath(path))
    except Exception as exc:
        raise Error(f"{os.fspath(path)}: not a readable Torch7 file ({type(exc).__name__}: {exc})") from exc


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _module_params(module: Any) -> dict[str, torch.Tensor]:
    kind = module._typename
    if kind in _PARAMETRIC:
        weight = module[b"weight"]
        if kind != b"nn.Linear":  # SpatialConvolutionMM stores (out, in * kH * kW)
            weight = weight.reshape(module[b"nOutputPlane"], module[b"nInputPlane"], module[b"kH"], module[b"kW"])
        params = {"weight": _tensor(weight)}
        if module._obj.get(b"bias") is not None:
            params["bias"] = _tensor(module[b"bias"])
        return params
    if kind == b"nn.SpatialSubtractiveNormalization":
        convolutions = [m for m in module[b"meanestimator"][b"modules"] if m._typename == b"nn.SpatialConvolution"]
        if len(convolutions) != 1:
            raise Error(f"unexpected Torch7 SpatialSubtractiveNormalization layout ({len(convolutions)} convolutions)")
        return {"weight": _tensor(convolutions[0][b"weight"]), "bias": _tensor(convolutions[0][b"bias"])}
    return {}


def sequential_state_dict(sequential: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters of a Torch7 ``nn.Sequential`` named ``<prefix><index>.<param>`` (0-based)."""
    if getattr(sequential, "_typename", None) != b"nn.Sequential":
        raise Error(f"expected a Torch7 nn.Sequential, got {getattr(sequential, '_typename', type(sequential))!r}")
    state = {}
    for index, module in enumerate(sequential[b"modules"]):
        for name, tensor in _module_params(module).items():
            state[f"{prefix}{index}.{name}"] = tensor
    return state


def t7_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.t7`` table of tensors and ``nn.Sequential`` networks as one flat state_dict."""
    table = load_t7(path)
    if not hasattr(table, "items"):
        raise Error(f"{os.fspath(path)}: the Torch7 file holds a {type(table).__name__}, not a table")
    state: dict[str, torch.Tensor] = {}
    for key, value in table.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if isinstance(value, np.ndarray):
            state[name] = _tensor(value)
        elif getattr(value, "_typename", None) == b"nn.Sequential":
            state.update(sequential_state_dict(value, prefix=f"{name}."))
    return state
