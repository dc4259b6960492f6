"""Read MatConvNet ``simplenn`` networks from MATLAB ``.mat`` files (optional ``scipy`` package).

Only data is read (``scipy.io.loadmat``). A simplenn network is a struct whose ``layers``
cell holds one struct per layer with a ``type`` string and, for learned layers, a
``weights`` cell: ``conv`` -> {filters (kH, kW, in, out), biases}; ``bnorm`` ->
{multipliers, biases, moments (C, 2) = [mean, sigma]}.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import Error


def load_mat(path: str | os.PathLike) -> dict[str, Any]:
    """The variables of a ``.mat`` file (MATLAB structs as attribute objects)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise Error("reading MatConvNet .mat files needs the optional package 'scipy' (pip install scipy)") from None
    try:
        return loadmat(os.fspath(path), squeeze_me=False, struct_as_record=False)
    except Exception as exc:
        raise Error(f"{os.fspath(path)}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc


def unwrap(value: Any) -> Any:
    """MATLAB wraps every struct, cell element and string in 1x1 arrays; peel them off."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return "".join(value.flat)
    return value


def simplenn_layers(net: Any) -> list[tuple[str, list[np.ndarray], Any]]:
    """``(type, weights, layer struct)`` of each layer, in order."""
    net = unwrap(net)
    if not hasattr(net, "layers"):
        raise Error("expected a MatConvNet simplenn struct with a 'layers' field")
    layers = []
    for entry in np.asarray(net.layers, dtype=object).flat:
        layer = unwrap(entry)
        kind = unwrap(layer.type) if hasattr(layer, "type") else ""
        weights = getattr(layer, "weights", None)
        arrays = ([] if weights is None
                  else [np.asarray(unwrap(w), dtype=np.float64) for w in np.asarray(weights, dtype=object).flat])
        layers.append((str(kind), arrays, layer))
    return layers
