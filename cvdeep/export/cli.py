"""``cvdeep export onnx MODEL OUT.onnx``: the command-line front of ``cvdeep.export.to_onnx``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import Error
from ..progress import ticking


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=("onnx",), help="the file format (onnx)")
    parser.add_argument("model", help="a registry name (aliked-n16, disk, xfeat, superpoint-open, lightglue-aliked, "
                        "lightglue-disk, lighterglue-xfeat) or a family name")
    parser.add_argument("out", help="the file to write, e.g. aliked.onnx")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 13 to 20 (default 17)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="fp16: the convolutional network in float16 (default fp32)")
    parser.add_argument("--input-size", metavar="WxH", default=None,
                        help="a fixed input size, e.g. 640x480 (default: any size)")
    parser.add_argument("--mask-input", action="store_true",
                        help="add a 'mask' input applied before NMS (OpenCV's classes cannot feed it)")
    parser.add_argument("--describe", action="store_true",
                        help="also write OUT.describe.onnx (image + keypoints -> descriptors), which compute() needs")
    parser.add_argument("--weights", default=None, help="a local checkpoint instead of the model's registered file")
    parser.add_argument("--set", dest="params", action="append", default=[], metavar="NAME=VALUE",
                        help="a baked-in parameter, e.g. --set nfeatures=2048 --set detection_threshold=0.1 "
                        "(LightGlue: filter_threshold)")


def _value(text: str) -> object:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def run(args: argparse.Namespace) -> int:
    from . import to_onnx

    params = {}
    for item in args.params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Error(f"--set got {item!r}; expected NAME=VALUE, e.g. nfeatures=2048")
        params[name.strip()] = _value(value.strip())
    size = None
    if args.input_size is not None:
        width, sep, height = args.input_size.lower().partition("x")
        if not sep or not width.isdigit() or not height.isdigit():
            raise Error(f"--input-size got {args.input_size!r}; expected WIDTHxHEIGHT, e.g. 640x480")
        size = (int(width), int(height))
    common = dict(opset=args.opset, precision=args.precision, weights=args.weights, **params)
    with ticking(f"exporting {args.model} to {args.out}"):
        out = to_onnx(args.model, args.out, input_size=size, mask_input=args.mask_input, **common)
    print(f"wrote {out}")
    if args.describe:
        described_path = Path(args.out).with_suffix(".describe.onnx")
        with ticking(f"exporting {args.model}'s describe graph to {described_path}"):
            described = to_onnx(args.model, described_path, graph="describe", input_size=size, **common)
        print(f"wrote {described}")
    return 0
