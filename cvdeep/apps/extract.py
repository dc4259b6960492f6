"""Batch feature extraction into an HDF5 file laid out like hloc's feature files.

Layout, one group per image, named by its path relative to the input directory
(or as written in the list file), ``/`` making nested groups as in hloc:

- ``keypoints``   (N, 2) float32, x, y in pixels of the original image (OpenCV and hloc
  convention: the centre of the top-left pixel is (0, 0)); attribute ``uncertainty``
- ``descriptors`` (D, N), float32 (uint8 for binary descriptors), transposed as hloc stores them
- ``scores``      (N,) float32, the keypoints' ``response``
- ``image_size``  (2,) int, (width, height) of the original image

The file's attributes ``features``, ``nfeatures`` and ``max_size`` (0: none) record
the settings. Extraction is resumable: images whose group is complete are skipped, a
group left half-written by an interruption is redone, and resuming with other settings
is refused. ``workers`` > 1 (``cvdeep extract --workers N``) extracts in ``spawn``-started
processes, each building its own detector; this process alone writes the file, in input order.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Error
from ..image import limit_size, read_image
from ..keypoints import keypoint_responses
from ..matching.pairs import Feature, detect_features
from ..parallel import set_threads, spawn_pool, threads_per_worker
from ..progress import bar as progress_bar
from .common import create_features

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp"}
DATASETS = ("keypoints", "descriptors", "scores", "image_size")


def list_images(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """(name in the file, path) of every image of a directory (recursively) or of a list file."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise Error(f"{source}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return [(p.relative_to(source).as_posix(), p) for p in paths]
    if source.is_file():
        if source.suffix.lower() in IMAGE_SUFFIXES:
            return [(source.name, source)]
        try:
            lines = source.read_text().splitlines()
        except UnicodeDecodeError:
            raise Error(f"{source}: neither an image nor a text list of image paths") from None
        entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not entries:
            raise Error(f"{source}: the image list is empty")
        return [(entry, (source.parent / entry) if not Path(entry).is_absolute() else Path(entry)) for entry in entries]
    raise Error(f"{source}: no such file or directory; "
                "expected a directory of images or a text file listing image paths")


def _complete(group: Any) -> bool:
    return all(name in group for name in DATASETS)


Extracted = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]
"""keypoints (original pixels), descriptors (D, N), scores, image size (width, height), uncertainty."""


def _extract_one(detector: Feature, path: Path, max_size: int | None) -> Extracted:
    image, resize = limit_size(read_image(path), max_size)
    found = detect_features(detector, image)
    scale = np.diag(resize)[:2]  # processed / original pixels, per axis
    keypoints = (found.points + 0.5) / scale - 0.5
    width, height = (np.array(found.size) / scale).round().astype(int)
    return (keypoints.astype(np.float32), np.ascontiguousarray(found.descriptors.T),
            keypoint_responses(found.keypoints), np.array([width, height]), float(1.0 / scale.mean()))


_worker: dict[str, Any] = {}  # an extraction process's settings and, after its first image, its detector


def _start_worker(features: str, nfeatures: int | None, threads: int) -> None:
    """Initialiser of an extraction process: its share of the CPU threads. The detector is built by the
    first task, so that an error reaches the parent as that task's exception (an initialiser that fails
    makes ``multiprocessing.Pool`` start replacement processes forever)."""
    set_threads(threads)
    _worker.update(features=features, nfeatures=nfeatures)


def _worker_extract(task: tuple[Path, int | None]) -> Extracted:
    if "detector" not in _worker:
        _worker["detector"] = create_features(_worker["features"], _worker["nfeatures"])
    return _extract_one(_worker["detector"], *task)


def extract_to_h5(
    source: str | os.PathLike,
    output: str | os.PathLike,
    features: str = "sift",
    nfeatures: int | None = None,
    max_size: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> tuple[int, int]:
    """Extract features of every image of ``source`` into ``output``; returns (extracted, skipped).

    ``workers`` > 1 extracts in that many processes started with ``spawn`` (never ``fork``: see
    ``cvdeep.parallel``), each with its share of the CPU threads; this process writes the file.
    """
    try:
        import h5py
    except ImportError:
        raise Error("cvdeep extract writes HDF5 and needs h5py: pip install 'cvdeep[h5]'") from None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise Error(f"workers: got {workers!r}; expected an integer >= 1")

    images = list_images(source)
    detector = create_features(features, nfeatures)  # a bad name or missing weights fail before any work
    extracted = skipped = 0
    with h5py.File(output, "a") as store:
        settings = {"features": features, "nfeatures": nfeatures or 0, "max_size": max_size or 0}
        for key, value in settings.items():
            recorded = store.attrs.get(key)
            if recorded is not None and recorded != value:
                raise Error(f"{output} was written with {key}={recorded!r}, not {value!r}; "
                            "resume with the same settings or write another file")
        store.attrs.update(settings)
        todo = [(name, path) for name, path in images if not (name in store and _complete(store[name]))]
        skipped = len(images) - len(todo)
        bar = progress_bar(len(images), f"extracting {features}", unit="image", leave=True, enabled=progress)
        bar.update(skipped)
        results: Iterable[Extracted]
        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            if workers > 1 and len(todo) > 1:
                count = min(workers, len(todo))
                pool = stack.enter_context(spawn_pool(count, _start_worker, (features, nfeatures,
                                                                             threads_per_worker(count))))
                results = pool.imap(_worker_extract, [(path, max_size) for _, path in todo])
            else:
                results = (_extract_one(detector, path, max_size) for _, path in todo)
            for (name, _), (keypoints, descriptors, scores, size, uncertainty) in zip(todo, results):
                if name in store:
                    del store[name]
                group = store.create_group(name)
                group.create_dataset("keypoints", data=keypoints)
                group["keypoints"].attrs["uncertainty"] = uncertainty
                group.create_dataset("descriptors", data=descriptors)
                group.create_dataset("scores", data=scores)
                group.create_dataset("image_size", data=size)
                store.flush()
                extracted += 1
                bar.update(1)
    return extracted, skipped
