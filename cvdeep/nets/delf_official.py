"""DELF's official backbone and weight files: ResNet-50 in TF-slim's layout, and the converter.

The released DELF models (``delf_v1_20171026``, ICCV'17, and ``delf_gld_20190411``, trained on
Google-Landmarks v1) are TF1 SavedModels of ``delf_v1.py``: TF-slim's ``resnet_v1_50`` up to its
``block3`` (1024 channels) and the attention network on top, plus PCA parameters stored as
``DatumProto`` files. This module holds

- ``SlimResNet50``: that backbone in torch, operation for operation as TF-slim builds it (so the
  converted weights give the official feature map): a 7x7/2 convolution padded 3 on both sides
  (``conv2d_same``), a 3x3/2 max-pool with TensorFlow's ``SAME`` padding (nothing before and one
  row/column after on even sizes, one on both sides on odd sizes), then bottleneck units (1x1,
  3x3, 1x1 convolutions, each followed by BatchNorm with epsilon 1e-5, ReLU after the first two
  and after the sum) whose stride sits in the 3x3 convolution of the *last* unit of each block
  (slim's layout; torchvision puts it in the first), a projection shortcut where the depth
  changes and otherwise the input itself, subsampled ``[::2, ::2]`` where the unit strides.
  Blocks of 3, 4 and 6 units, bottleneck depths 64, 128, 256: stride 32, receptive field 291 px.
- ``convert_variables``: official variable names and layouts -> this module's ``state_dict``
  (convolution kernels HWIO -> OIHW, BatchNorm ``gamma``/``beta``/``moving_mean``/
  ``moving_variance`` -> ``weight``/``bias``/``running_mean``/``running_var``).
- ``read_datum``: the ``DatumProto`` wire format of the PCA files (shape, then packed floats).
- ``read_weights``: the hub's reader for every DELF model file: a torch checkpoint (cvdeep's own,
  or one converted earlier), a ``.npz`` of official variables (name -> array, optionally
  ``pca/mean``, ``pca/projection``, ``pca/variances``), or the official release ``.tar.gz``
  (its variables read with TensorFlow when installed; cvdeep itself does not need it).

Variable names, as ``delf_v1.py`` and TF-slim's ``resnet_v1``/``resnet_utils`` build them
(tensorflow/models, Apache-2.0; facts read, no code copied)::

    resnet_v1_50/conv1/weights                                  (7, 7, 3, 64)
    resnet_v1_50/conv1/BatchNorm/{gamma,beta,moving_mean,moving_variance}
    resnet_v1_50/block{b}/unit_{u}/bottleneck_v1/{shortcut,conv1,conv2,conv3}/weights
    resnet_v1_50/block{b}/unit_{u}/bottleneck_v1/{shortcut,conv1,conv2,conv3}/BatchNorm/...
    attention_block/attention/compute/conv1/weights             (1, 1, 1024, 512)
    attention_block/attention/compute/conv1/BatchNorm/...
    attention_block/attention/compute/conv2/{weights,biases}    (1, 1, 512, 1), (1,)

The classifier (``attention_block/logits``), ``block4``, ``global_step`` and optimiser slots are
not part of the extractor and are skipped.
"""
from __future__ import annotations

import importlib
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Error

UNITS = (3, 4, 6)
"""Bottleneck units of blocks 1, 2 and 3 (ResNet-50 up to block3)."""
BASE_DEPTHS = (64, 128, 256)
"""Bottleneck (inner) depth of each block; a unit's output has four times as many channels."""
BN_EPSILON = 1e-5
"""TF-slim's ``resnet_arg_scope`` BatchNorm epsilon."""

_RESNET = "resnet_v1_50"
_ATTENTION = "attention_block/attention/compute"
_BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_PCA_KEYS = {"pca/mean": "pca_mean", "pca/projection": "pca_matrix", "pca/variances": "pca_variances"}


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    padding = (kernel - 1) // 2  # conv2d_same: symmetric for odd kernels, strided or not
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
    return conv, nn.BatchNorm2d(out_channels, eps=BN_EPSILON)


class Bottleneck(nn.Module):
    """One ``bottleneck_v1`` unit (see the module docstring)."""

    def __init__(self, in_channels: int, depth: int, inner: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.shortcut: nn.Conv2d | None = None
        self.shortcut_bn: nn.BatchNorm2d | None = None
        if in_channels != depth:
            self.shortcut, self.shortcut_bn = _conv_bn(in_channels, depth, 1, stride)
        self.conv1, self.conv1_bn = _conv_bn(in_channels, inner, 1)
        self.conv2, self.conv2_bn = _conv_bn(inner, inner, 3, stride)
        self.conv3, self.conv3_bn = _conv_bn(inner, depth, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is not None and self.shortcut_bn is not None:
            shortcut = self.shortcut_bn(self.shortcut(x))
        else:
            shortcut = x[..., :: self.stride, :: self.stride]
        residual = F.relu(self.conv1_bn(self.conv1(x)))
        residual = F.relu(self.conv2_bn(self.conv2(residual)))
        residual = self.conv3_bn(self.conv3(residual))
        return F.relu(shortcut + residual)


def same_max_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow's ``max_pool(padding='SAME')``: output ceil(n / stride) and the padding split with
    the smaller half before (none before on even sizes for 3x3/2), padded cells never the maximum."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class SlimResNet50(nn.Module):
    """TF-slim ``resnet_v1_50`` up to ``block3``: (B, 3, H, W) normalised input -> (B, 1024, h, w).

    ``h = ceil(H / 32)`` (each of the five strided layers halves with rounding up). Cell ``i``
    of an axis is centred on input pixel ``32 i + 2`` when ``ceil(n / 2)`` (the max-pool's input)
    is even along that axis and on ``32 i`` when it is odd (``cell_offset``).
    """

    stride = 32
    receptive_field = 291
    out_channels = 1024

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv1_bn = _conv_bn(3, 64, 7, 2)
        blocks = []
        in_channels = 64
        for units, inner in zip(UNITS, BASE_DEPTHS):
            layers = []
            for unit in range(units):
                stride = 2 if unit == units - 1 else 1
                layers.append(Bottleneck(in_channels, 4 * inner, inner, stride))
                in_channels = 4 * inner
            blocks.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1_bn(self.conv1(x)))
        x = same_max_pool(x)
        return self.block3(self.block2(self.block1(x)))

    @staticmethod
    def cell_offset(size: int) -> float:
        """Input pixel of cell 0's receptive-field centre along an axis of ``size`` pixels."""
        return 2.0 if (-(-size // 2)) % 2 == 0 else 0.0


# --- official names ---------------------------------------------------------------------------


def official_names(prefix: str = "backbone.", attention: str = "attention.") -> dict[str, str]:
    """torch ``state_dict`` key -> official TF variable name, for the backbone and the attention
    network (not the BatchNorm step counters, which TensorFlow has no variable for)."""
    names: dict[str, str] = {}

    def conv_bn(torch_name: str, tf_scope: str, torch_prefix: str) -> None:
        names[f"{torch_prefix}{torch_name}.weight"] = f"{tf_scope}/weights"
        for tf_leaf, torch_leaf in _BN_NAMES.items():
            names[f"{torch_prefix}{torch_name}_bn.{torch_leaf}"] = f"{tf_scope}/BatchNorm/{tf_leaf}"

    conv_bn("conv1", f"{_RESNET}/conv1", prefix)
    in_channels = 64
    for block, (units, inner) in enumerate(zip(UNITS, BASE_DEPTHS), start=1):
        for unit in range(units):
            scope = f"{_RESNET}/block{block}/unit_{unit + 1}/bottleneck_v1"
            torch_prefix = f"{prefix}block{block}.{unit}."
            if in_channels != 4 * inner:
                conv_bn("shortcut", f"{scope}/shortcut", torch_prefix)
            for layer in ("conv1", "conv2", "conv3"):
                conv_bn(layer, f"{scope}/{layer}", torch_prefix)
            in_channels = 4 * inner
    conv_bn("conv1", f"{_ATTENTION}/conv1", attention)
    names[f"{attention}conv2.weight"] = f"{_ATTENTION}/conv2/weights"
    names[f"{attention}conv2.bias"] = f"{_ATTENTION}/conv2/biases"
    return names


def _canonical(name: str) -> str | None:
    """An official variable name without graph prefixes and ``:0``; None for variables the
    extractor does not use (classifier, block4, step counter, optimiser and moving-average slots)."""
    name = name.split(":", 1)[0]
    for root in (_RESNET + "/", "attention_block/"):
        at = name.find(root)
        if at >= 0:
            name = name[at:]
            break
    else:
        return None
    if name.startswith(f"{_RESNET}/block4/") or name.startswith("attention_block/logits"):
        return None
    if "/Momentum" in name or "/ExponentialMovingAverage" in name or name.endswith("/Adam") or "/Adam_" in name:
        return None
    return name


def convert_variables(variables: Mapping[str, Any], pca: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Official variables (name -> array, TF layouts) -> the ``state_dict`` of ``DELFNet(backbone="resnet50")``.

    ``pca`` holds ``mean`` (D,), ``projection`` (D, D, rows are components, as
    ``pca_proj_mat.datum``) and optionally ``variances`` (D,); without it the checkpoint has no
    PCA (``pca_dim=0`` then gives the raw 1024-D descriptors). ``cvdeep.Error`` lists missing or
    unexpected variables and wrong shapes.
    """
    found: dict[str, np.ndarray] = {}
    unexpected = []
    wanted = official_names()
    known = set(wanted.values())
    for name, value in variables.items():
        canonical = _canonical(str(name))
        if canonical is None:
            continue
        if canonical not in known:
            unexpected.append(canonical)
        found[canonical] = np.asarray(value)
    missing = sorted(known - set(found))
    if missing or unexpected:
        raise Error("not the official DELF (resnet_v1_50/block3 + attention) variables: "
                    + (f"missing {len(missing)}, e.g. {missing[:3]}" if missing else "")
                    + ("; " if missing and unexpected else "")
                    + (f"unexpected {len(unexpected)}, e.g. {sorted(unexpected)[:3]}" if unexpected else ""))
    state: dict[str, torch.Tensor] = {}
    for key, name in wanted.items():
        array = found[name].astype(np.float32)
        if key.endswith(".weight") and array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        state[key] = torch.from_numpy(np.ascontiguousarray(array))
        if key.endswith("_bn.running_var"):
            state[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    state.update(pca_buffers(pca, SlimResNet50.out_channels))
    state["attention_scale"] = torch.tensor(1.0)
    return state


def pca_buffers(pca: Mapping[str, Any] | None, dim: int) -> dict[str, torch.Tensor]:
    """The PCA buffers of a ``DELFNet`` of ``dim``-D features from ``mean``/``projection``/``variances``
    arrays (identity, zero mean, unit variances and ``pca_fitted`` False when ``pca`` is None)."""
    if pca is None:
        return {"pca_mean": torch.zeros(dim), "pca_matrix": torch.eye(dim), "pca_variances": torch.ones(dim),
                "pca_fitted": torch.tensor(False)}
    mean = np.asarray(pca["mean"], np.float32).reshape(-1)
    projection = np.asarray(pca["projection"], np.float32)
    variances = np.asarray(pca["variances"], np.float32).reshape(-1) if pca.get("variances") is not None \
        else np.ones(dim, np.float32)
    if mean.shape != (dim,) or projection.shape != (dim, dim) or variances.shape != (dim,):
        raise Error(f"PCA parameters of shapes mean {mean.shape}, projection {projection.shape}, variances "
                    f"{variances.shape}; expected ({dim},), ({dim}, {dim}), ({dim},)")
    return {"pca_mean": torch.from_numpy(mean), "pca_matrix": torch.from_numpy(np.ascontiguousarray(projection)),
            "pca_variances": torch.from_numpy(variances), "pca_fitted": torch.tensor(True)}


# --- DatumProto ---------------------------------------------------------------------------------


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data):
            raise Error("truncated DatumProto (a varint runs past the end)")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message: varints as ints, length-delimited as bytes."""
    fields = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value = data[position : position + length]
            if len(value) != length:
                raise Error("truncated DatumProto (a field runs past the end)")
            position += length
        elif wire == 5:
            value = data[position : position + 4]
            position += 4
        elif wire == 1:
            value = data[position : position + 8]
            position += 8
        else:
            raise Error(f"not a DatumProto: wire type {wire}")
        fields.append((number, wire, value))
    return fields


def parse_datum(data: bytes) -> np.ndarray:
    """A serialised ``DatumProto`` (shape: field 1 of packed int64 ``dim`` field 1; values: field 2, a
    ``FloatList`` of packed float ``value`` field 1) -> float32 array of that shape."""
    shape: list[int] = []
    values: list[np.ndarray] = []
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            for sub_number, sub_wire, sub_value in _fields(value):
                if sub_number != 1:
                    continue
                if sub_wire == 2:  # packed
                    position = 0
                    while position < len(sub_value):
                        dim, position = _varint(sub_value, position)
                        shape.append(dim)
                else:
                    shape.append(int(sub_value))
        elif number == 2 and wire == 2:
            for sub_number, sub_wire, sub_value in _fields(value):
                if sub_number != 1:
                    continue
                if sub_wire == 2:
                    values.append(np.frombuffer(sub_value, dtype="<f4"))
                else:
                    values.append(np.frombuffer(sub_value, dtype="<f4", count=1))
    flat = np.concatenate(values) if values else np.zeros(0, np.float32)
    if int(np.prod(shape)) != flat.size:
        raise Error(f"DatumProto of shape {shape} holds {flat.size} values")
    return flat.astype(np.float32).reshape(shape)


def read_datum(path: str | os.PathLike) -> np.ndarray:
    """A ``.datum`` file (DELF's PCA mean, projection matrix or variances) as a float32 array."""
    return parse_datum(Path(path).read_bytes())


# --- the hub's reader ---------------------------------------------------------------------------


def _tensorflow_variables(prefix: str) -> dict[str, np.ndarray]:
    try:
        tf = importlib.import_module("tensorflow")
    except ImportError:
        raise Error("reading the official DELF release (a TensorFlow SavedModel) needs TensorFlow: pip install "
                    "tensorflow, or dump its variables to a .npz (name -> array) with any TensorFlow install and "
                    "pass that file as weights=") from None
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _read_release(path: Path) -> dict[str, torch.Tensor]:
    """The official ``delf_*.tar.gz``: ``*/model/variables/variables.*`` and ``*/pca/*.datum``."""
    with tarfile.open(path) as archive, tempfile.TemporaryDirectory(prefix="cvdeep-delf-") as tmp:
        members = {member.name: member for member in archive.getmembers() if member.isfile()}
        index = [name for name in members if name.endswith("variables/variables.index")]
        if not index:
            raise Error(f"{path}: no SavedModel variables (*/variables/variables.index) in the archive")
        folder = index[0][: -len("variables.index")]
        for name, member in members.items():
            if name.startswith(folder) or name.endswith(".datum"):
                target = Path(tmp) / Path(name).name
                source = archive.extractfile(member)
                if source is not None:
                    target.write_bytes(source.read())
        pca: dict[str, Any] = {}
        for key, stem in (("mean", "mean"), ("projection", "pca_proj_mat"), ("variances", "pca_vars")):
            datum = Path(tmp) / f"{stem}.datum"
            if datum.is_file():
                pca[key] = read_datum(datum)
        variables = _tensorflow_variables(str(Path(tmp) / "variables"))
    return convert_variables(variables, pca if "mean" in pca and "projection" in pca else None)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Any DELF weight file as a ``DELFNet`` ``state_dict`` (see the module docstring for the forms)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:2] == b"\x1f\x8b":  # gzip: the official release
        return _read_release(path)
    if head == b"PK\x03\x04" and _is_npz(path):
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        pca = {key.split("/", 1)[1]: arrays.pop(key) for key in list(arrays) if key in _PCA_KEYS}
        return convert_variables(arrays, pca if "mean" in pca and "projection" in pca else None)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Error(f"{path}: neither a torch checkpoint, a .npz of official DELF variables nor the official "
                    f"release .tar.gz ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict):
        raise Error(f"{path}: holds a {type(checkpoint).__name__}, not a state_dict")
    return checkpoint


def _is_npz(path: Path) -> bool:
    """A zip of ``.npy`` members (numpy's ``savez``) rather than a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return bool(names) and all(name.endswith(".npy") for name in names)

