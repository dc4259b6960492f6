"""Image retrieval with local features, as DELF's paper does it: nearest neighbours over all local
descriptors of a collection, one vote per query descriptor and image, geometric verification of
the best candidates.

Two steps (``cvdeep retrieve index|query``):

- **Index** a folder of images (``build_index``): every image is described once with any feature
  ``cvdeep.features.create`` accepts (DELF, ALIKED, ``cv2.SIFT``, ``orb``, ``name[param=value]``),
  its keypoints (in the original image's pixels) and descriptors saved as one ``.npz`` under
  ``<index>/features/``; ``index.json`` records the settings. An interrupted run resumes where it
  stopped (images already described are skipped; other settings are refused), then
  ``database.npz`` concatenates everything for the queries.
- **Query** with an image (``Database.query``): the query is described with the index's feature
  and settings; each of its descriptors finds its ``knn`` nearest descriptors among all the
  index's (``cvdeep.ops.l2_match``, the fused top-k kernel, for L2 descriptors; faiss's exact
  ``IndexFlatL2`` instead when faiss is installed and measured faster on this index; Hamming
  through ``cvdeep.BFMatcher`` for binary ones) and votes once for every image among them. The
  ``verify`` images with the most votes are then matched to the query one by one (mutual nearest
  neighbours, or Lowe's ratio test) and a homography is fitted robustly
  (``cvdeep.matching.geometry.find_homography``). An image is *verified* when its inliers pass
  Brown and Lowe's overlap test (IJCV 2007: more than 8 + 0.3 n, n the tentative matches whose
  query point the homography sends inside the image; the criterion ``cvdeep panorama`` uses):
  a handful of chance inliers among a thousand matches does not count. Verified images come first,
  by inlier count (votes break ties), then all the others by votes. The result is JSON-able; a
  contact sheet (PNG) shows the query and its best results.

DELF's paper ranks by RANSAC inliers of the nearest-neighbour correspondences too (its index
compresses descriptors with product quantisation over a KD-tree for scale; here the search is
exact, for collections that fit in memory).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from . import ops
from .apps.common import OVERLAP_ALPHA, OVERLAP_BETA
from .errors import Error
from .image import limit_size, read_image
from .matching.bf import BFMatcher
from .matching.geometry import ESTIMATORS, find_homography
from .matching.pairs import LOWE_RATIO, Feature, mutual_nearest_neighbours, ratio_test

INDEX_FILE, DATABASE_FILE, FEATURES_DIR = "index.json", "database.npz", "features"
INDEX_VERSION = 1
VERIFIERS = ("mutual", "ratio")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp")


# --- describing images ----------------------------------------------------------------------------


@dataclass
class Described:
    """The local features of one image: keypoints in its original pixels, descriptors, its size."""

    points: np.ndarray  # (N, 2) float32
    descriptors: np.ndarray  # (N, D) float32 or uint8
    size: tuple[int, int]  # (width, height) of the original image
    seconds: float = 0.0  # wall time of the description


def create_feature(name: str, nfeatures: int | None = None) -> Feature:
    """The feature named ``name`` (``cvdeep.features.create``), limited to ``nfeatures`` when given."""
    from .apps.common import create_features

    return create_features(name, nfeatures)


def describe(feature: Feature, image: np.ndarray, max_size: int | None = None) -> Described:
    """Describe a BGR image (shrunk to ``max_size`` first when given); keypoints come back in original pixels."""
    start = time.perf_counter()
    processed, resize = limit_size(image, max_size)
    keypoints, descriptors = feature.detectAndCompute(processed, None)
    seconds = time.perf_counter() - start
    dtype = np.uint8 if feature.descriptorType() == cv2.CV_8U else np.float32
    if descriptors is None or len(keypoints) == 0:
        descriptors = np.zeros((0, feature.descriptorSize()), dtype)
    points = np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)
    scale = np.diag(resize)[:2]  # processed / original pixels per axis
    points = (points + 0.5) / scale - 0.5
    return Described(points.astype(np.float32), np.ascontiguousarray(descriptors, dtype),
                     (image.shape[1], image.shape[0]), seconds)


def list_images(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """(name relative to ``folder``, path) of every image below it (recursively), sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise Error(f"{folder}: not a directory; expected a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise Error(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return [(p.relative_to(root).as_posix(), p) for p in paths]


# --- the index on disk -------------------------------------------------------------------------------


@dataclass
class IndexSettings:
    """What decides an index's descriptors (stored in ``index.json``, checked when resuming and querying)."""

    features: str = "sift"
    nfeatures: int | None = None
    max_size: int | None = None


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _feature_file(index_dir: Path, name: str) -> Path:
    return index_dir / FEATURES_DIR / (hashlib.sha1(name.encode()).hexdigest()[:20] + ".npz")


def _save_described(path: Path, name: str, described: Described) -> None:
    arrays: dict[str, Any] = {"name": np.array(name), "points": described.points, "descriptors": described.descriptors,
              "size": np.array(described.size), "seconds": np.array(described.seconds)}
    _atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _load_described(path: Path) -> tuple[str, Described]:
    with np.load(path, allow_pickle=False) as data:
        return str(data["name"]), Described(data["points"], data["descriptors"], tuple(data["size"].tolist()),
                                            float(data["seconds"]))


def build_index(source: str | os.PathLike, index_dir: str | os.PathLike, settings: IndexSettings | None = None,
                progress: bool = True, device: str | None = None) -> tuple[int, int]:
    """Describe every image below ``source`` into ``index_dir`` (resumable); returns (described, skipped).

    ``device`` is passed to cvdeep features (ignored by OpenCV's). ``cvdeep.Error`` when the index
    holds another feature's descriptors, or the folder has no image.
    """
    from tqdm.auto import tqdm

    settings = settings or IndexSettings()
    images = list_images(source)
    out = Path(index_dir)
    (out / FEATURES_DIR).mkdir(parents=True, exist_ok=True)
    header = {"version": INDEX_VERSION, **asdict(settings)}
    index_file = out / INDEX_FILE
    if index_file.is_file():
        recorded = json.loads(index_file.read_text())
        changed = [key for key in header if recorded.get(key) != header[key]]
        if changed:
            recorded_values = ", ".join(f"{key}={recorded.get(key)!r}" for key in changed)
            raise Error(f"{out} was built with other settings ({recorded_values}); index with the same settings to "
                        "resume, or choose another index folder")
    feature = create_feature(settings.features, settings.nfeatures)
    if device is not None and callable(getattr(feature, "setDevice", None)):
        feature.setDevice(device)  # type: ignore[attr-defined]
    names = [name for name, _ in images]
    header.update({"root": str(Path(source).resolve()), "images": names, "complete": False})
    _atomic_write(index_file, lambda handle: handle.write(json.dumps(header, indent=1).encode()))
    described = skipped = 0
    for name, path in tqdm(images, desc=f"indexing with {settings.features}", unit="image", disable=not progress):
        target = _feature_file(out, name)
        if target.is_file():
            skipped += 1
            continue
        _save_described(target, name, describe(feature, read_image(path), settings.max_size))
        described += 1
    database = Database.from_described(names, [_load_described(_feature_file(out, name))[1] for name in names],
                                       int(feature.defaultNorm()), settings)
    database.save(out / DATABASE_FILE)
    header["complete"] = True
    header["descriptors"] = int(len(database.descriptors))
    _atomic_write(index_file, lambda handle: handle.write(json.dumps(header, indent=1).encode()))
    return described, skipped


# --- searching ----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One database image in a query's ranking."""

    image: str
    votes: int
    inliers: int | None = None  # None: no verification tried
    matches: int | None = None  # tentative matches given to the estimator
    verified: bool = False  # the inliers pass the overlap test
    rank: int = 0


@dataclass
class QueryResult:
    """A query's ranking (best first) and where its time went."""

    candidates: list[Candidate]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"results": [asdict(c) for c in self.candidates], "seconds": self.seconds}


def faiss_available() -> bool:
    """Whether faiss can be imported here (it is optional)."""
    return importlib.util.find_spec("faiss") is not None


class Database:
    """Every image's features in memory, concatenated for the nearest-neighbour search."""

    def __init__(self, names: Sequence[str], points: Sequence[np.ndarray], descriptors: Sequence[np.ndarray],
                 sizes: Sequence[tuple[int, int]], norm: int, settings: IndexSettings | None = None) -> None:
        if not (len(names) == len(points) == len(descriptors) == len(sizes)):
            raise Error("Database: names, points, descriptors and sizes must have one entry per image")
        self.names = list(names)
        self.points = [np.asarray(p, np.float32).reshape(-1, 2) for p in points]
        self.sizes = [tuple(int(v) for v in s) for s in sizes]
        self.norm = int(norm)
        self.settings = settings or IndexSettings()
        counts = np.array([len(d) for d in descriptors], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        width = max((d.shape[1] for d in descriptors if d.ndim == 2), default=0)
        dtype = np.uint8 if self.binary else np.float32
        self.descriptors = (np.concatenate([np.asarray(d, dtype).reshape(-1, width) for d in descriptors])
                            if len(descriptors) else np.zeros((0, width), dtype))
        self.owner = np.repeat(np.arange(len(self.names)), counts)
        self.backend = "torch"
        self._measured = False

    @property
    def binary(self) -> bool:
        return self.norm in (cv2.NORM_HAMMING, cv2.NORM_HAMMING2)

    @classmethod
    def from_described(cls, names: Sequence[str], described: Sequence[Described], norm: int,
                       settings: IndexSettings | None = None) -> Database:
        return cls(names, [d.points for d in described], [d.descriptors for d in described],
                   [d.size for d in described], norm, settings)

    def image_descriptors(self, index: int) -> np.ndarray:
        return self.descriptors[self.offsets[index] : self.offsets[index + 1]]

    def save(self, path: str | os.PathLike) -> None:
        """One ``.npz`` with everything (written atomically)."""
        points = np.concatenate(self.points) if self.points else np.zeros((0, 2), np.float32)
        arrays: dict[str, Any] = {"names": np.array(self.names), "points": points, "descriptors": self.descriptors,
                                  "offsets": self.offsets, "sizes": np.array(self.sizes, np.int64).reshape(-1, 2),
                                  "norm": np.array(self.norm), "settings": np.array(json.dumps(asdict(self.settings)))}
        _atomic_write(Path(path), lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Database:
        with np.load(path, allow_pickle=False) as data:
            offsets = data["offsets"]
            points, descriptors = data["points"], data["descriptors"]
            spans = list(zip(offsets[:-1], offsets[1:]))
            return cls([str(n) for n in data["names"]], [points[a:b] for a, b in spans],
                       [descriptors[a:b] for a, b in spans], [tuple(s) for s in data["sizes"].tolist()],
                       int(data["norm"]), IndexSettings(**json.loads(str(data["settings"]))))

    # --- nearest neighbours ---------------------------------------------------------------------

    def neighbours(self, query: np.ndarray, k: int, exclude: int | None = None) -> np.ndarray:
        """(N, k) database rows nearest to each query descriptor (-1 where fewer exist), leaving out the
        rows of image ``exclude``."""
        rows = np.arange(len(self.descriptors))
        base = self.descriptors
        if exclude is not None:
            keep = self.owner != exclude
            rows, base = rows[keep], base[keep]
        if len(query) == 0 or len(base) == 0:
            return np.full((len(query), k), -1, np.int64)
        if self.binary or self.norm not in (cv2.NORM_L2, cv2.NORM_L2SQR):
            found = self._knn_matcher(query, base, k)
        else:
            found = self._knn_l2(np.ascontiguousarray(query, np.float32), base, k)
        return np.where(found >= 0, rows[np.clip(found, 0, None)], -1)

    def _knn_matcher(self, query: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
        lists = BFMatcher(self.norm).knnMatch(np.ascontiguousarray(query, base.dtype), base, k=k)
        found = np.full((len(query), k), -1, np.int64)
        for row, matches in enumerate(lists):
            for column, match in enumerate(matches):
                found[row, column] = match.trainIdx
        return found

    def _knn_l2(self, query: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
        if not self._measured:
            self._measured = True
            self.backend = self._faster_backend(query, base, k)
        if self.backend == "faiss":
            return _faiss_knn(query, base, k)
        indices, _ = ops.l2_match(torch.from_numpy(query), torch.from_numpy(base), k=k)
        return indices.numpy()

    @staticmethod
    def _faster_backend(query: np.ndarray, base: np.ndarray, k: int) -> str:
        """``"faiss"`` when faiss is installed and answers a probe of this search faster than ``ops.l2_match``."""
        if not faiss_available():
            return "torch"
        probe = query[:256]
        timings = {}
        for name, search in (("torch", lambda: ops.l2_match(torch.from_numpy(probe), torch.from_numpy(base), k=k)),
                             ("faiss", lambda: _faiss_knn(probe, base, k))):
            search()  # warm-up
            start = time.perf_counter()
            search()
            timings[name] = time.perf_counter() - start
        return min(timings, key=lambda name: timings[name])

    def votes(self, query: np.ndarray, k: int = 10, exclude: int | None = None) -> np.ndarray:
        """(images,) number of query descriptors that have a descriptor of each image among their ``k`` nearest."""
        found = self.neighbours(query, k, exclude)
        owners = np.sort(np.where(found >= 0, self.owner[np.clip(found, 0, None)], -1), axis=1)
        first = np.ones(owners.shape, bool)  # the first occurrence of each image in a row
        first[:, 1:] = owners[:, 1:] != owners[:, :-1]
        return np.bincount(owners[first & (owners >= 0)], minlength=len(self.names)).astype(np.int64)

    # --- the query --------------------------------------------------------------------------------

    def query(self, described: Described, knn: int = 10, verify: int = 20, matcher: str = "mutual",
              ratio: float = LOWE_RATIO, estimator: str = "magsac", threshold: float = 8.0,
              exclude: int | None = None) -> QueryResult:
        """Rank the database images for a described query (module docstring): votes from the ``knn``
        nearest neighbours of every query descriptor, then the ``verify`` best voted images verified by a
        homography (0: none); the verified ones first, by inliers. ``exclude`` leaves one database image out (a query
        taken from the database)."""
        if matcher not in VERIFIERS:
            raise Error(f"matcher: got {matcher!r}; accepted: {', '.join(VERIFIERS)}")
        if knn < 1 or verify < 0:
            raise Error(f"knn must be >= 1 and verify >= 0; got knn={knn}, verify={verify}")
        if described.descriptors.shape[1:] != self.descriptors.shape[1:] and len(described.descriptors):
            raise Error(f"the query has {described.descriptors.shape[1]}-D descriptors, the index "
                        f"{self.descriptors.shape[1]}-D; describe it with the index's feature and settings")
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        votes = self.votes(described.descriptors, knn, exclude)
        seconds["search"] = time.perf_counter() - start
        order = [int(i) for i in np.argsort(-votes, kind="stable") if exclude is None or i != exclude]
        candidates = [Candidate(self.names[i], int(votes[i])) for i in order]
        start = time.perf_counter()
        for candidate, image in zip(candidates[:verify], order[:verify]):
            candidate.inliers, candidate.matches, candidate.verified = self.verify(described, image, matcher, ratio,
                                                                                   estimator, threshold)
        seconds["verification"] = time.perf_counter() - start
        verified = sorted((c for c in candidates if c.verified), key=lambda c: (-(c.inliers or 0), -c.votes))
        ranked = verified + [c for c in candidates if not c.verified]
        for rank, candidate in enumerate(ranked, start=1):
            candidate.rank = rank
        return QueryResult(ranked, seconds)

    def verify(self, described: Described, image: int, matcher: str = "mutual", ratio: float = LOWE_RATIO,
               estimator: str = "magsac", threshold: float = 8.0) -> tuple[int, int, bool]:
        """(homography inliers, tentative matches, whether the overlap test passes) between the query and
        database image ``image``."""
        theirs = self.image_descriptors(image)
        if matcher == "ratio":
            pairs = ratio_test(described.descriptors, theirs, self.norm, ratio)
        else:
            pairs = mutual_nearest_neighbours(described.descriptors, theirs, self.norm)
        if len(pairs) < 4:
            return 0, len(pairs), False
        source = described.points[pairs[:, 0]].astype(np.float64)
        homography, inliers = find_homography(source, self.points[image][pairs[:, 1]], estimator, threshold)
        if homography is None:
            return 0, len(pairs), False
        projected = cv2.perspectiveTransform(source.reshape(-1, 1, 2), homography).reshape(-1, 2)
        width, height = self.sizes[image]
        inside = ((projected[:, 0] >= -0.5) & (projected[:, 0] < width - 0.5)
                  & (projected[:, 1] >= -0.5) & (projected[:, 1] < height - 0.5))
        count = int(inliers.sum())
        return count, len(pairs), count > OVERLAP_ALPHA + OVERLAP_BETA * int(inside.sum())


def _faiss_knn(query: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, np.float32))
    _, found = index.search(np.ascontiguousarray(query, np.float32), k)
    return np.asarray(found, np.int64)


def open_index(index_dir: str | os.PathLike) -> tuple[Database, dict[str, Any]]:
    """The database of a finished index and its ``index.json``; ``cvdeep.Error`` when there is none yet."""
    folder = Path(index_dir)
    header_file, database_file = folder / INDEX_FILE, folder / DATABASE_FILE
    if not header_file.is_file():
        raise Error(f"{folder}: not an index (no {INDEX_FILE}); build one with `cvdeep retrieve index FOLDER --index "
                    f"{folder}`")
    header = json.loads(header_file.read_text())
    if not header.get("complete") or not database_file.is_file():
        raise Error(f"{folder}: the index is incomplete (interrupted?); run `cvdeep retrieve index` again to finish it")
    return Database.load(database_file), header


def query_image(index_dir: str | os.PathLike, image: str | os.PathLike, knn: int = 10, verify: int = 20,
                matcher: str = "mutual", estimator: str = "magsac", threshold: float = 8.0,
                device: str | None = None) -> tuple[QueryResult, dict[str, Any]]:
    """Describe ``image`` with the index's feature and rank the index's images (``Database.query``);
    returns the result and the index's header."""
    database, header = open_index(index_dir)
    feature = create_feature(database.settings.features, database.settings.nfeatures)
    if device is not None and callable(getattr(feature, "setDevice", None)):
        feature.setDevice(device)  # type: ignore[attr-defined]
    described = describe(feature, read_image(image), database.settings.max_size)
    result = database.query(described, knn, verify, matcher, LOWE_RATIO, estimator, threshold)
    result.seconds["describe"] = described.seconds
    return result, header


# --- the contact sheet ------------------------------------------------------------------------------


def _thumbnail(image: np.ndarray | None, side: int, label: str, colour: tuple[int, int, int]) -> np.ndarray:
    tile = np.full((side + 24, side, 3), 255, np.uint8)
    if image is not None:
        scale = side / max(image.shape[:2])
        small = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        y0, x0 = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
        tile[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    cv2.rectangle(tile, (0, 0), (side - 1, side - 1), colour, 3)
    text = label if len(label) <= side // 7 else "..." + label[-(side // 7 - 3) :]
    cv2.putText(tile, text, (4, side + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def contact_sheet(query: np.ndarray, result: QueryResult, root: str | os.PathLike | None, top: int = 8,
                  side: int = 200, columns: int = 5) -> np.ndarray:
    """A BGR image: the query, then the ``top`` results (framed green when verified, gray otherwise),
    labelled by rank, name, votes and inliers."""
    tiles = [_thumbnail(query, side, "query", (200, 120, 0))]
    for candidate in result.candidates[:top]:
        path = Path(root) / candidate.image if root is not None else None
        image = cv2.imread(str(path)) if path is not None and path.is_file() else None
        inliers = "-" if candidate.inliers is None else str(candidate.inliers)
        label = f"{candidate.rank}. {candidate.image} v{candidate.votes} i{inliers}"
        tiles.append(_thumbnail(image, side, label, (60, 200, 60) if candidate.verified else (160, 160, 160)))
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)


# --- command line -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``cvdeep retrieve index FOLDER --index DIR`` and ``cvdeep retrieve query IMAGE --index DIR``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    index = actions.add_parser("index", help="describe every image of a folder into an index (resumable)")
    index.add_argument("folder", help="folder of images (searched recursively)")
    index.add_argument("--index", required=True, help="index folder to write or to resume")
    index.add_argument("--features", default="sift", help="any name cvdeep.features.create accepts: delf, sift, "
                       "aliked, disk, orb, 'delf[scales=0.5;1]', ... (default sift)")
    index.add_argument("--nfeatures", type=int, default=None, help="keypoints per image (default: the feature's own)")
    index.add_argument("--max-size", type=int, default=None, help="shrink images to this longest side first")
    index.add_argument("--device", default=None, help="device of cvdeep features ('cpu', 'cuda'; default auto)")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    query = actions.add_parser("query", help="rank the indexed images for a query image")
    query.add_argument("image", help="the query image")
    query.add_argument("--index", required=True, help="index folder built by `cvdeep retrieve index`")
    query.add_argument("--top", type=int, default=10, help="results to print and draw (default 10)")
    query.add_argument("--knn", type=int, default=10, help="nearest neighbours of every query descriptor (default 10)")
    query.add_argument("--verify", type=int, default=20,
                       help="best voted images verified by a homography (default 20; 0: none)")
    query.add_argument("--matcher", default="mutual", choices=VERIFIERS, help="matches for the verification")
    query.add_argument("--estimator", default="magsac", choices=sorted(ESTIMATORS))
    query.add_argument("--threshold", type=float, default=8.0, help="inlier threshold in pixels (default 8)")
    query.add_argument("--json", default=None, help="write the ranking as JSON to this file")
    query.add_argument("--sheet", default=None, help="write a contact sheet (PNG) of the best results")
    query.add_argument("--device", default=None, help="device of cvdeep features")


def run(args: argparse.Namespace) -> int:
    """The ``cvdeep retrieve`` command."""
    if args.action == "index":
        settings = IndexSettings(args.features, args.nfeatures, args.max_size)
        described, skipped = build_index(args.folder, args.index, settings, not args.quiet, args.device)
        print(f"indexed {args.folder} into {args.index}: {described} images described, {skipped} already there")
        return 0
    if args.top < 1:
        raise Error(f"--top must be at least 1; got {args.top}")
    result, header = query_image(args.index, args.image, args.knn, args.verify, args.matcher, args.estimator,
                                 args.threshold, args.device)
    for candidate in result.candidates[: args.top]:
        inliers = "-" if candidate.inliers is None else candidate.inliers
        mark = "  verified" if candidate.verified else ""
        print(f"{candidate.rank:3d}  {candidate.image}  votes {candidate.votes}  inliers {inliers}{mark}")
    if args.json:
        payload = {"query": str(args.image), "index": str(args.index), "features": header.get("features"),
                   **result.to_json()}
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
    if args.sheet:
        sheet = contact_sheet(read_image(args.image), result, header.get("root"), top=args.top)
        if not cv2.imwrite(str(args.sheet), sheet):
            raise Error(f"cannot write the contact sheet to {args.sheet!r} (use a .png path in an existing folder)")
    return 0
