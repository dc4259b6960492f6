"""The ``cvdeep`` command: match, panorama, extract, retrieve, models, weights (and bench with cvdeep.eval).

Every subcommand is a thin front over ``cvdeep.apps`` (or the weights hub and the
model registry); an input the user can fix ends in one ``cvdeep <command>: error: ...``
line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Callable

from .errors import Error

EXAMPLES = """examples:
  cvdeep match img1.jpg img2.jpg --out matches.png           (default: ALIKED + LightGlue when their weights are here)
  cvdeep match img1.jpg img2.jpg --features sift+hardnet --matcher mutual
  cvdeep panorama a.jpg b.jpg c.jpg --features xfeat --out pano.jpg
  cvdeep extract photos/ --features "xfeat[nms=soft]" --workers 2 --out features.h5
  cvdeep extract photos/ --features aliked --engine ray --address auto --workers 64 --out features.h5
  cvdeep pairs photos/ --mode sequential --window 5 --out pairs.txt
  cvdeep match --pairs pairs.txt --features-file features.h5 --matcher lightglue --engine ray --out matches.h5
  cvdeep retrieve index photos/ --index photos.idx --features delf
  cvdeep retrieve query query.jpg --index photos.idx --json results.json --sheet results.png
  cvdeep models
  cvdeep weights list
  cvdeep export onnx aliked-n16 aliked.onnx --describe
"""


def _run_match(args: argparse.Namespace) -> int:
    from .apps import homography, match_pairs

    if args.pairs is not None:
        return match_pairs.run_match(args)
    if args.image2 is None:
        raise Error("cvdeep match needs two images (IMAGE1 IMAGE2), or --pairs PAIRS.txt --features-file "
                    "FEATURES.h5 --out MATCHES.h5 for many pairs")
    for option, value, default in (("--features-file", args.features_file, None), ("--engine", args.engine, "local"),
                                   ("--workers", args.workers, 1), ("--address", args.address, None)):
        if value != default:
            raise Error(f"{option} is for cvdeep match --pairs; two images match in this process")
    return homography.run(args)


def _run_pairs(args: argparse.Namespace) -> int:
    from .apps import match_pairs

    return match_pairs.run_pairs(args)


def _run_panorama(args: argparse.Namespace) -> int:
    from .apps import panorama

    return panorama.run(args)


def _run_extract(args: argparse.Namespace) -> int:
    from .apps.common import default_pipeline
    from .apps.extract import extract_to_h5
    from .apps.h5files import report
    from .feature_names import check_feature_name

    if args.features is None:
        chosen = default_pipeline(args.nfeatures)
        features, reason = chosen.features, f"default features ({chosen.reason})"
    else:
        features, reason = check_feature_name(args.features), "as asked"
    print(f"features: {features}   [{reason}]", flush=True)
    summary = extract_to_h5(args.source, args.out, features, args.nfeatures, args.max_size, not args.quiet,
                            args.workers, args.engine, args.address)
    report(summary, args.out, "images", "extracted")
    return 0


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1, got {text!r}")
    return count


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Resolve weights from local places only (the hub's own CVDEEP_OFFLINE switch)."""
    saved = os.environ.get("CVDEEP_OFFLINE")
    os.environ["CVDEEP_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["CVDEEP_OFFLINE"]
        else:
            os.environ["CVDEEP_OFFLINE"] = saved


def _local_weights(spec: object) -> str | None:
    """Path of the verified local copy of a weight file, or None."""
    from . import weights

    with _offline():
        try:
            return str(weights.resolve(spec))  # type: ignore[arg-type]
        except Error:
            return None


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _run_models(args: argparse.Namespace) -> int:
    """Every model from its declaration (no network is built): family, kind, licence, weights present."""
    from .models import get_model, list_models

    rows = []
    for name in list_models(args.family):
        family, variant = get_model(name)
        spec = variant.weights
        if spec is None:
            license_, present = "-", "none needed"
        else:
            license_ = spec.license
            if spec.noncommercial and "non-commercial" not in license_.lower():
                license_ += " (non-commercial)"
            present = "yes" if _local_weights(spec) else "no"
        rows.append((name, family.public_name, family.kind, license_, present))
    if not rows:
        print("no models registered" + (f" in family {args.family!r}" if args.family else ""))
        return 0
    _print_table(("model", "class", "kind", "weights license", "weights here"), rows)
    return 0


def _run_weights(args: argparse.Namespace) -> int:
    from . import weights
    from .models import get_model, get_weight_spec, list_models, weight_specs

    if args.action == "list":
        rows = [(s.name, s.license, "yes" if _local_weights(s) else "no", s.filename, s.source)
                for s in weight_specs().values()]
        print(f"cache: {weights.cache_dir() / 'weights'}")
        if rows:
            _print_table(("name", "license", "here", "file", "source"), rows)
        return 0
    if not args.names:
        raise Error(f"cvdeep weights {args.action} needs at least one weights or model name "
                    "(see `cvdeep weights list`)")
    for name in args.names:
        if name in list_models() and get_model(name)[1].weights is None:
            print(f"{name}: needs no weights file")
            continue
        spec = get_weight_spec(name)
        if args.action == "fetch":
            print(f"{name}: {weights.resolve(spec)}")
        else:
            with _offline():
                print(weights.resolve(spec))
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from .export import cli as export_cli

    return export_cli.run(args)


def _run_retrieve(args: argparse.Namespace) -> int:
    from . import retrieval

    return retrieval.run(args)


def _run_train(args: argparse.Namespace) -> int:
    from .train import cli as train_cli
    from .train.loop import TrainingStopped

    try:
        return train_cli.run(args)
    except TrainingStopped as stopped:
        print(f"cvdeep train: {stopped}", file=sys.stderr)
        return 130  # as for Ctrl-C: the command did not finish, and a script can tell


def _bench_module() -> ModuleType | None:
    """cvdeep.eval when this installation has it (it provides `cvdeep bench`)."""
    if importlib.util.find_spec("cvdeep.eval") is None:
        return None
    return importlib.import_module("cvdeep.eval")


def _run_bench(args: argparse.Namespace) -> int:
    from .eval import run_bench

    run_bench(args)  # prints its table and writes its files; returns the results
    return 0


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--engine, --workers, --address: where a batch command runs (``cvdeep.engines``)."""
    from .engines import ENGINES

    parser.add_argument("--engine", default="local", choices=ENGINES,
                        help="local: this machine's processes; ray: Ray actors, one model each "
                             "(pip install 'cvdeep[ray]'). Default: local")
    parser.add_argument("--workers", type=_workers, default=1,
                        help="processes (local, started with spawn) or Ray actors of one CPU each; without "
                             "--address, the local Ray cluster started for the run has this many CPUs (default 1)")
    parser.add_argument("--address", default=None,
                        help="with --engine ray: the Ray cluster to join ('auto': the one `ray start` runs here); "
                             "default: start a local cluster and stop it at the end")


def build_parser() -> argparse.ArgumentParser:
    from .apps import homography, panorama
    from .apps.common import add_feature_arguments

    parser = argparse.ArgumentParser(
        prog="cvdeep", description="Learned local features as OpenCV drop-ins: matching, stitching, extraction.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(run=run)
        return sub

    match = command("match", _run_match, "estimate the homography between two images and draw it, or match the "
                                         "pairs of a pairs file into an hloc-style matches file (--pairs)")
    homography.add_arguments(match)
    for action in match._actions:
        if action.dest in ("image1", "image2"):
            action.nargs, action.default = "?", None  # absent with --pairs
    match.add_argument("--pairs", default=None,
                       help="match every pair of this hloc pairs.txt (`cvdeep pairs`) with the features of "
                            "--features-file into --out (hloc's matches.h5 layout)")
    match.add_argument("--features-file", default=None, help="with --pairs: the features (`cvdeep extract`)")
    add_engine_arguments(match)
    panorama.add_arguments(command("panorama", _run_panorama, "stitch overlapping photos into a panorama"))

    from .apps import match_pairs

    match_pairs.add_pairs_arguments(command("pairs", _run_pairs, "list image pairs to match (exhaustive, "
                                                                 "sequential or by retrieval) in hloc's pairs.txt"))

    extract = command("extract", _run_extract, "extract features of many images into an hloc-style HDF5 file")
    extract.add_argument("source", help="a directory of images (searched recursively) "
                                        "or a text file with one image path per line")
    extract.add_argument("--out", required=True, help="HDF5 file to write or to resume (e.g. features.h5)")
    add_feature_arguments(extract)
    add_engine_arguments(extract)

    models = command("models", _run_models,
                     "list the registered models: descriptor size, weights license, weights present")
    models.add_argument("--family", default=None, help="only the models of this family (e.g. aliked)")

    hub = command("weights", _run_weights, "list, fetch or locate pretrained weights")
    hub.add_argument("action", choices=("list", "fetch", "path"),
                     help="list: every known file; fetch: download into the cache; path: print the local path")
    hub.add_argument("names", nargs="*", help="weights or model names (see `cvdeep weights list`, `cvdeep models`)")

    from .export import cli as export_cli

    export_cli.add_arguments(command("export", _run_export, "write a model as an ONNX file (runs without torch)"))

    from . import retrieval

    retrieval.add_arguments(command("retrieve", _run_retrieve, "index a folder of images and query it with an image"))

    from .train import cli as train_cli

    train_cli.add_arguments(command("train", _run_train, "train a model (descriptors, detectors) on unlabeled photos"))

    evaluation = _bench_module()
    if evaluation is not None:
        bench = command("bench", _run_bench, "evaluate features on HPatches / Oxford ground truth")
        evaluation.add_bench_arguments(bench)
    _add_quiet(parser)
    return parser


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` on every command (each leaf of the command tree) that has none of its own."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _add_quiet(sub)
            return
    if parser is not None and not any("--quiet" in action.option_strings for action in parser._actions):
        parser.add_argument("--quiet", action="store_true", help="no progress bar, no log messages (for scripts)")


def run_reporting_errors(program: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``, turning a ``cvdeep.Error`` into one ``program: error: ...`` line and status 1."""
    try:
        return int(run(args) or 0)
    except Error as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cvdeep`` console script; returns the exit status.

    While a command runs, the ``cvdeep`` logger's INFO messages go to stderr and long steps show a
    progress bar; ``--quiet`` leaves warnings and errors only.
    """
    from .progress import command_output

    args = build_parser().parse_args(argv)
    with command_output(bool(getattr(args, "quiet", False))):
        return run_reporting_errors(f"cvdeep {args.command}", args.run, args)


if __name__ == "__main__":
    sys.exit(main())
