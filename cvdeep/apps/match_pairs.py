"""Image pairs and their matches in hloc's files: ``cvdeep pairs`` and ``cvdeep match --pairs``.

``pairs.txt`` (hloc's format, read by its ``parse_retrieval``): one pair per line, the two
image names (as in the features file) separated by a space. ``cvdeep pairs`` writes it for a
folder or list of images: ``exhaustive`` (every unordered pair), ``sequential`` (each image with
the ``window`` next ones in name order, for videos and ordered captures) or ``retrieval`` (each
image with its ``num`` best ranked images of a ``cvdeep retrieve`` index, by descriptor votes).

``matches.h5`` (hloc's layout, read by its ``get_matches``/``find_pair``): one group per pair,
named ``pair_name(name0, name1)`` (hloc's ``names_to_pair``: each name with ``/`` made ``-``,
joined by ``/``), holding ``matches0`` (N0,) int32, for each keypoint of image 0 the index of
its match in image 1 or -1, and ``matching_scores0`` (N0,) float32 (0 where unmatched): the
LightGlue confidence, or 1 / (1 + descriptor distance) for the brute-force matchers. hloc
itself writes int16 and float16; its readers take any integer and float type. The file's
attributes ``features`` (the features file's), ``matcher`` and ``ratio`` record the settings.
Matching runs on an ``Engine`` (``cvdeep.engines``) and the file is written by
``cvdeep.apps.h5files``: resumable, no half-written group, a failed pair reported.
"""
from __future__ import annotations

import argparse
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..engines import Engine
from ..errors import Error
from ..matching.pairs import LOWE_RATIO, MATCHERS, ImageFeatures, PairMatcher
from ..models import lightglue_pairings
from .common import create_features
from .h5files import Record, Summary, import_h5py, report, run_into_h5

PAIR_MODES = ("exhaustive", "sequential", "retrieval")
MATCH_DATASETS = ("matches0", "matching_scores0")


def pair_name(name0: str, name1: str) -> str:
    """The group of a pair in an hloc matches file (hloc's ``names_to_pair``)."""
    return "/".join((name0.replace("/", "-"), name1.replace("/", "-")))


def exhaustive_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Every unordered pair of ``names``, each once."""
    return list(itertools.combinations(names, 2))


def sequential_pairs(names: list[str], window: int) -> list[tuple[str, str]]:
    """Each image with the ``window`` images after it in ``names``' order."""
    if window < 1:
        raise Error(f"window: got {window}; expected an integer >= 1")
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(len(names), i + 1 + window))]


def retrieval_pairs(index_dir: str | os.PathLike, num: int, knn: int = 10) -> list[tuple[str, str]]:
    """Each image of a ``cvdeep retrieve`` index with its ``num`` best voted other images (no verification);
    a pair found from both sides is listed once."""
    from ..retrieval import Described, open_index

    if num < 1:
        raise Error(f"num: got {num}; expected an integer >= 1")
    database, _ = open_index(index_dir)
    seen: set[frozenset[str]] = set()
    pairs = []
    for index, name in enumerate(database.names):
        width, height = database.sizes[index]
        own = Described(database.points[index], database.image_descriptors(index), (width, height))
        ranking = database.query(own, knn=knn, verify=0, exclude=index).candidates
        for candidate in ranking[:num]:
            if frozenset((name, candidate.image)) not in seen:
                seen.add(frozenset((name, candidate.image)))
                pairs.append((name, candidate.image))
    return pairs


def write_pairs(pairs: list[tuple[str, str]], path: str | os.PathLike) -> None:
    """Write ``pairs`` in hloc's pairs.txt format; names may not contain white space."""
    for pair in pairs:
        if any(len(name.split()) != 1 for name in pair):
            raise Error(f"image name {pair!r} holds white space, which pairs.txt cannot carry; rename the image")
    Path(path).write_text("".join(f"{name0} {name1}\n" for name0, name1 in pairs))


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The pairs of an hloc pairs.txt, a pair given both ways kept once (as hloc matches it)."""
    pairs, seen = [], set()
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise Error(f"{path}: cannot read the pairs file ({error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise Error(f"{path}, line {number}: {line!r}; expected two image names separated by a space")
        if frozenset(fields) not in seen:
            seen.add(frozenset(fields))
            pairs.append((fields[0], fields[1]))
    return pairs


@dataclass
class PairMatchRunner:
    """A ``cvdeep.engines.Runner``: the matches of one pair of images of an hloc features file as a ``Record``."""

    features_file: str
    features: str
    nfeatures: int | None
    matcher: str
    ratio: float = LOWE_RATIO
    _state: Any = field(default=None, repr=False)  # (open features file, PairMatcher) once set up

    def setup(self) -> None:
        if self._state is None:
            h5py = import_h5py("cvdeep match")
            feature = create_features(self.features, self.nfeatures)
            self._state = (h5py.File(self.features_file, "r"),
                           PairMatcher(self.matcher, feature, self.ratio, name=self.features))

    def _image(self, name: str) -> ImageFeatures:
        group = self._state[0][name]
        points = np.asarray(group["keypoints"][()], np.float32).reshape(-1, 2)
        width, height = (int(v) for v in group["image_size"][()])
        return ImageFeatures(tuple(cv2.KeyPoint(float(x), float(y), 1.0) for x, y in points),
                             np.ascontiguousarray(group["descriptors"][()].T), points, (width, height))

    def __call__(self, pair: tuple[str, str]) -> Record:
        self.setup()
        first, second = self._image(pair[0]), self._image(pair[1])
        matches, scores = self._state[1].match_with_scores(first, second)
        matches0 = np.full(len(first), -1, np.int32)
        scores0 = np.zeros(len(first), np.float32)
        matches0[matches[:, 0]], scores0[matches[:, 0]] = matches[:, 1], scores
        return Record({"matches0": matches0, "matching_scores0": scores0})

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_state": None}  # each worker opens the file and builds its matcher


def default_matcher(features: str) -> str:
    """LightGlue when it has weights for ``features``, else Lowe's ratio test."""
    getter = getattr(create_features(features), "getModel", None)
    return "lightglue" if callable(getter) and getter() in lightglue_pairings() else "ratio"


def match_to_h5(
    pairs_file: str | os.PathLike,
    features_file: str | os.PathLike,
    output: str | os.PathLike,
    matcher: str | None = None,
    ratio: float = LOWE_RATIO,
    progress: bool = True,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
) -> Summary:
    """Match every pair of ``pairs_file`` with the features of ``features_file`` (written by ``cvdeep extract``)
    into ``output``; returns (matched, skipped, failed). ``matcher`` None: ``default_matcher``. ``engine``,
    ``workers`` and ``address`` as for ``extract_to_h5``."""
    h5py = import_h5py("cvdeep match")
    where = Engine(engine, workers, address)
    pairs = read_pairs(pairs_file)
    try:
        with h5py.File(features_file, "r") as store:
            features, nfeatures = str(store.attrs["features"]), int(store.attrs["nfeatures"]) or None
            missing = sorted({name for pair in pairs for name in pair if name not in store})
    except (OSError, KeyError):
        raise Error(f"{features_file}: not a features file of `cvdeep extract` (HDF5 with a 'features' "
                    "attribute)") from None
    if missing:
        raise Error(f"{pairs_file} names {len(missing)} images that {features_file} does not hold, e.g. "
                    f"{', '.join(missing[:3])}; extract them first or fix the pairs")
    if matcher is not None and matcher not in MATCHERS:
        raise Error(f"unknown matcher {matcher!r}; accepted: {', '.join(MATCHERS)}")
    matcher = matcher or default_matcher(features)
    runner = PairMatchRunner(str(features_file), features, nfeatures, matcher, ratio)
    runner.setup()  # a matcher the features cannot take fails before any work
    settings = {"features": features, "matcher": matcher, "ratio": ratio if matcher == "ratio" else 0.0}
    tasks = [(pair_name(*pair), pair) for pair in pairs]
    return run_into_h5(output, tasks, runner, MATCH_DATASETS, settings, where, f"matching ({matcher})", progress,
                       "cvdeep match")


def run_match(args: argparse.Namespace) -> int:
    """``cvdeep match --pairs``: refuse the two-image options, match, report."""
    given = [option for option, value in (("image arguments", args.image1), ("--features", args.features),
                                          ("--nfeatures", args.nfeatures), ("--max-size", args.max_size))
             if value is not None]
    if args.rotations != 1:
        given.append("--rotations")
    if given:
        raise Error(f"cvdeep match --pairs takes the features from --features-file; drop {', '.join(given)}")
    if args.features_file is None or args.out is None:
        raise Error("cvdeep match --pairs needs --features-file FEATURES.h5 (from `cvdeep extract`) and --out "
                    "MATCHES.h5")
    summary = match_to_h5(args.pairs, args.features_file, args.out, args.matcher, args.ratio, not args.quiet,
                          args.workers, args.engine, args.address)
    report(summary, args.out, "pairs", "matched")
    return 0


def add_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cvdeep pairs``."""
    parser.add_argument("source", nargs="?", default=None,
                        help="a directory of images or a text list, named as `cvdeep extract` names them "
                             "(not with --mode retrieval)")
    parser.add_argument("--out", required=True, help="pairs file to write (hloc's pairs.txt format)")
    parser.add_argument("--mode", default="exhaustive", choices=PAIR_MODES,
                        help="exhaustive: every pair; sequential: each image with the --window next ones; "
                             "retrieval: each image with its --num best in a `cvdeep retrieve` --index")
    parser.add_argument("--window", type=int, default=5, help="images after each one for --mode sequential")
    parser.add_argument("--index", default=None, help="a `cvdeep retrieve index` directory for --mode retrieval")
    parser.add_argument("--num", type=int, default=5, help="pairs per image for --mode retrieval")


def run_pairs(args: argparse.Namespace) -> int:
    """``cvdeep pairs``: list the pairs and write them."""
    from .extract import list_images

    if args.mode == "retrieval":
        if args.index is None or args.source is not None:
            raise Error("--mode retrieval takes the images of --index DIR (`cvdeep retrieve index`), not a source")
        pairs = retrieval_pairs(args.index, args.num)
    else:
        if args.source is None:
            raise Error(f"--mode {args.mode} needs a directory of images or a text list of them")
        names = [name for name, _ in list_images(args.source)]
        pairs = exhaustive_pairs(names) if args.mode == "exhaustive" else sequential_pairs(names, args.window)
    write_pairs(pairs, args.out)
    print(f"wrote {args.out}: {len(pairs)} pairs ({args.mode})")
    return 0
