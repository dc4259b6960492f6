"""ONNX export of cvdeep models: run them without torch (onnxruntime, OpenCV's DNN, OpenCV 5's classes).

    import cvdeep.export
    cvdeep.export.to_onnx("aliked-n16", "aliked.onnx")                 # cv2.ALIKED_create("aliked.onnx")
    cvdeep.export.to_onnx("disk", "disk.onnx", nfeatures=4096)          # cv2.DISK_create("disk.onnx")
    cvdeep.export.to_onnx("lightglue-aliked", "lightglue.onnx")         # cv2.LightGlueMatcher_create(...)
    cvdeep.export.to_onnx("xfeat", "xfeat.describe.onnx", graph="describe")

or ``cvdeep export onnx MODEL OUT.onnx``. The files' inputs, outputs and metadata are described
in docs/ONNX.md; ``cvdeep.ONNXFeature2D`` and ``cvdeep.ONNXLightGlue`` run them through
onnxruntime behind the usual OpenCV interfaces, without torch.

The TorchScript-based exporter of ``torch.onnx`` (``dynamo=False``) is used: the graphs have a
data-dependent number of keypoints (``TopK`` with a computed ``k``, ``NonZero``), which it
traces directly.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import Error
from ..image import parse_size
from ..models import build_model, get_model, preferred_model
from . import graphs

OPSETS = range(13, 21)
"""ONNX opsets the export accepts (the TorchScript exporter's range that the graphs were tested on)."""
PRECISIONS = ("fp32", "fp16")
GRAPHS = ("detect", "describe")
FAMILIES = (*graphs.DETECTOR_GRAPHS, "lightglue")
_TRACE_SIZE = (240, 320)  # (height, width) of the example image traced for dynamic-size files
_TRACE_POINTS = 64


def _check_choice(name: str, value: Any, accepted: Any) -> None:
    if value not in accepted:
        raise Error(f"to_onnx: {name} got {value!r}; expected one of {', '.join(map(repr, accepted))}")


def _input_size(value: Any) -> tuple[int, int] | None:
    """``(width, height)`` (cv2.Size order), both positive; None keeps the size dynamic."""
    if value is None:
        return None
    size = parse_size(value)
    if size is None:
        raise Error(f"to_onnx: input_size got {value!r}; expected None (any size) or (width, height), "
                    "two positive integers")
    return size


def _resolve(model: Any, weights: str | os.PathLike | None, params: dict[str, Any]
             ) -> tuple[Any, str, Any, Any]:
    """(family, registry name, network on CPU in eval mode, config or filter threshold)."""
    family, name, network, config = _resolve_any(model, weights, params)
    if family.kind == "matcher":
        if not isinstance(config, float) or not 0.0 <= config <= 1.0:
            raise Error(f"to_onnx: filter_threshold got {config!r}; expected a number in [0, 1]")
    return family, name, network, config


def _exportable(family: Any) -> None:
    if family.name not in FAMILIES:
        raise Error(f"to_onnx: {family.public_name} has no ONNX export; exportable families: {', '.join(FAMILIES)}")


def _threshold(params: dict[str, Any], default: float) -> float:
    value = params.pop("filter_threshold", default)
    if params:
        raise Error(f"to_onnx: LightGlue takes only filter_threshold, got {', '.join(params)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Error(f"to_onnx: filter_threshold got {value!r}; expected a number in [0, 1]")
    return float(value)


def _resolve_any(model: Any, weights: str | os.PathLike | None, params: dict[str, Any]
                 ) -> tuple[Any, str, Any, Any]:
    """(family, model name, network in eval mode on the CPU, config or LightGlue filter threshold)."""
    from ..feature2d import Feature2D
    from ..matching.lightglue import LightGlue

    network: Any  # a detector network or LightGlue: their own attributes are read below
    if isinstance(model, Feature2D):
        family, name = model.family, model.getParams()["model"]
        _exportable(family)
        network = copy.deepcopy(model._load()).cpu().eval()
        config = model.config.replace(f"to_onnx({family.public_name})", **params)
        return family, name, network, config
    if isinstance(model, LightGlue):
        family, _ = get_model(model.model)
        network = copy.deepcopy(model._load()).cpu().eval()  # built now if it came unpickled
        return family, model.model, network, _threshold(params, model.getFilterThreshold())
    if not isinstance(model, str):
        raise Error(f"to_onnx: model got an object of type {type(model).__name__}; expected a registry name "
                    f"(e.g. 'aliked-n16', 'lightglue-aliked'), a cvdeep Feature2D or a cvdeep.LightGlue")
    from ..models import get_family

    try:
        family, _ = get_model(model)
        name = model
    except Error:
        family = get_family(model)  # a family name: its preferred model
        name = preferred_model(family)
    _exportable(family)
    network = build_model(name, weights, "cpu")
    if family.kind == "matcher":
        return family, name, network, _threshold(params, float(network.filter_threshold))
    config = family.config().replace(f"to_onnx({family.public_name})", **params)
    return family, name, network, config


def to_onnx(
    model: Any,
    path: str | os.PathLike,
    *,
    graph: str = "detect",
    opset: int = 17,
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    mask_input: bool = False,
    weights: str | os.PathLike | None = None,
    **params: Any,
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` and return the path.

    ``model``: a registry name (``"aliked-n16"``, ``"disk"``, ``"xfeat"``, ``"superpoint-open"``,
    ``"lightglue-aliked"``, ``"lightglue-disk"``, ``"lighterglue-xfeat"``), a family name (its
    preferred model), a cvdeep ``Feature2D`` (its network and parameters) or a ``cvdeep.LightGlue``.
    ``params``: detection parameters baked into the file (``nfeatures``, ``detection_threshold``,
    ``nms_radius``, ``border``; defaults as the Python class) or, for LightGlue, ``filter_threshold``.

    ``graph``: ``"detect"`` (image -> keypoints, scores, descriptors; the layout OpenCV 5's class for
    the family reads) or ``"describe"`` (image + keypoints (N, 2) pixels -> descriptors, what
    ``compute`` needs). ``input_size``: None (any image size) or ``(width, height)`` fixed.
    ``mask_input``: add a ``mask`` input (1, 1, H, W) uint8 applied before non-maximum suppression
    and ``nfeatures`` (OpenCV's classes cannot feed it). ``precision``: ``"fp32"`` or ``"fp16"``
    (the convolutional network in float16; detection and sampling stay float32). ``opset``: 13 to 20.
    """
    try:
        import onnx
    except ImportError:
        raise Error("to_onnx needs the onnx package: pip install onnx") from None
    _check_choice("graph", graph, GRAPHS)
    _check_choice("precision", precision, PRECISIONS)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise Error(f"to_onnx: opset got {opset!r}; expected an integer from {OPSETS.start} to {OPSETS.stop - 1}")
    size = _input_size(input_size)
    family, name, network, config = _resolve(model, weights, dict(params))
    network.requires_grad_(False)
    half = precision == "fp16"
    metadata: dict[str, Any] = {
        "cvdeep.family": family.name, "cvdeep.class": family.public_name, "cvdeep.model": name,
        "cvdeep.graph": graph, "cvdeep.precision": precision, "cvdeep.opset": opset,
        "cvdeep.input_size": "dynamic" if size is None else f"{size[0]}x{size[1]}",
    }
    module: nn.Module
    args: tuple[torch.Tensor, ...]
    if family.kind == "matcher":
        if graph != "detect" or size is not None or mask_input:
            raise Error("to_onnx: a LightGlue file takes neither graph='describe', input_size nor mask_input")
        module = graphs.LightGlueGraph(network, config, half)
        if half:
            network.half()
            network.log_assignment.float()
        args, input_names, output_names, dynamic = _lightglue_io(network.input_dim)
        metadata.update({"cvdeep.kind": "matcher", "cvdeep.layout": "opencv-lightglue",
                         "cvdeep.descriptor_size": network.input_dim, "cvdeep.filter_threshold": config,
                         "cvdeep.keypoints": "lightglue-normalised: (u - w/2) / (max(w, h) / 2)"})
    else:
        graph_class, layout = graphs.DETECTOR_GRAPHS[family.name]
        detector = graph_class(network, config, layout, half, family.input.channels)
        if half:
            network.half()
        channels = family.input.channels
        height, width = _TRACE_SIZE if size is None else (size[1], size[0])
        generator = torch.Generator().manual_seed(0)
        image = torch.rand((1, channels, height, width), generator=generator)
        image_axes: dict[str, str] | None = {} if size is None else None
        if graph == "detect":
            module = detector
            args = (image,)
            input_names = ["image"]
            output_names = list(graphs.OUTPUT_LAYOUTS[layout])
            count_axis = 1 if layout == "opencv-disk" else 0
            dynamic = {name_: {count_axis: "keypoints"} for name_ in output_names}
            if mask_input:
                args = (image, torch.ones((1, 1, height, width), dtype=torch.uint8))
                input_names.append("mask")
        else:
            if mask_input:
                raise Error("to_onnx: mask_input applies to graph='detect' only")
            module = graphs.DescribeGraph(detector)
            points = torch.rand((_TRACE_POINTS, 2), generator=generator) * torch.tensor([width - 1.0, height - 1.0])
            args = (image, points)
            input_names, output_names = ["image", "keypoints"], ["descriptors"]
            dynamic = {"keypoints": {0: "keypoints"}, "descriptors": {0: "keypoints"}}
            layout = "describe"
        if image_axes is not None:
            for name_ in ("image", "mask"):
                if name_ in input_names:
                    dynamic[name_] = {2: "height", 3: "width"}
        metadata.update({
            "cvdeep.kind": "detector" if graph == "detect" else "describer", "cvdeep.layout": layout,
            "cvdeep.channels": channels, "cvdeep.gray": family.input.gray,
            "cvdeep.descriptor_size": int(network.descriptor_size),
            "cvdeep.keypoint_size": float(network.keypoint_size),
            "cvdeep.mask_input": bool(mask_input), "cvdeep.config": graphs.describe_config(config),
        })
    module.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and tracer warnings about sizes it records
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic, do_constant_folding=True)
    proto = onnx.load(str(path))
    proto.producer_name = "cvdeep"
    proto.doc_string = f"{family.public_name} ({name}) exported by cvdeep; see cvdeep docs/ONNX.md"
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _lightglue_io(dim: int) -> tuple[tuple[torch.Tensor, ...], list[str], list[str], dict[str, dict[int, str]]]:
    """Example inputs, names and dynamic axes of a LightGlue graph."""
    generator = torch.Generator().manual_seed(0)
    kpts = [torch.rand((1, _TRACE_POINTS, 2), generator=generator) * 2 - 1 for _ in range(2)]
    desc = [torch.nn.functional.normalize(torch.randn((1, _TRACE_POINTS, dim), generator=generator), dim=-1)
            for _ in range(2)]
    dynamic = {"kpts0": {1: "N"}, "kpts1": {1: "M"}, "desc0": {1: "N"}, "desc1": {1: "M"},
               "matches0": {0: "K"}, "mscores0": {0: "K"}}
    return (*kpts, *desc), ["kpts0", "kpts1", "desc0", "desc1"], ["matches0", "mscores0"], dynamic


__all__ = ["FAMILIES", "GRAPHS", "OPSETS", "PRECISIONS", "to_onnx"]
