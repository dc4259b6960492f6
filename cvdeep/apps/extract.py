"""Batch feature extraction into an HDF5 file laid out like hloc's feature files.

Layout, one group per image, named by its path relative to the input directory
(or as written in the list file), ``/`` making nested groups as in hloc:

- ``keypoints``   (N, 2) float32, x, y in pixels of the original image (OpenCV and hloc
  convention: the centre of the top-left pixel is (0, 0)); attribute ``uncertainty``
- ``descriptors`` (D, N), float32 (uint8 for binary descriptors), transposed as hloc stores them
- ``scores``      (N,) float32, the keypoints' ``response``
- ``image_size``  (2,) int, (width, height) of the original image

The file's attributes ``features``, ``nfeatures`` and ``max_size`` (0: none) record
the settings. The file is written by ``cvdeep.apps.h5files`` (resumable group by group, no
half-written group, resuming with other settings refused, an image that fails is reported
and left out) from the work of an ``Engine`` (``cvdeep.engines``): this process, ``workers``
``spawn``-started processes (``cvdeep extract --workers N``), or Ray actors
(``--engine ray``), each building its own detector.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engines import Engine
from ..errors import Error
from ..image import limit_size, read_image
from ..keypoints import keypoint_responses
from ..matching.pairs import Feature, detect_features
from .common import create_features
from .h5files import Record, Summary, import_h5py, run_into_h5

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


@dataclass
class ImageExtractor:
    """A ``cvdeep.engines.Runner``: the features of one image path as an hloc-layout ``Record``.

    ``keypoints`` are in pixels of the original image although extraction ran at ``max_size``,
    ``descriptors`` (D, N) as hloc stores them, ``scores`` the keypoints' responses, ``image_size``
    (width, height); the keypoints' attribute ``uncertainty`` is the processed pixel's size.
    """

    features: str
    nfeatures: int | None = None
    max_size: int | None = None
    detector: Feature | None = field(default=None, repr=False)

    def setup(self) -> None:
        if self.detector is None:
            self.detector = create_features(self.features, self.nfeatures)

    def __call__(self, path: Path) -> Record:
        self.setup()
        assert self.detector is not None
        image, resize = limit_size(read_image(path), self.max_size)
        found = detect_features(self.detector, image)
        scale = np.diag(resize)[:2]  # processed / original pixels, per axis
        keypoints = (found.points + 0.5) / scale - 0.5
        width, height = (np.array(found.size) / scale).round().astype(int)
        return Record({"keypoints": keypoints.astype(np.float32),
                       "descriptors": np.ascontiguousarray(found.descriptors.T),
                       "scores": keypoint_responses(found.keypoints),
                       "image_size": np.array([width, height])},
                      {"keypoints": {"uncertainty": float(1.0 / scale.mean())}})

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "detector": None}  # workers build their own (OpenCV's do not pickle)


def extract_to_h5(
    source: str | os.PathLike,
    output: str | os.PathLike,
    features: str = "sift",
    nfeatures: int | None = None,
    max_size: int | None = None,
    progress: bool = True,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
) -> Summary:
    """Extract features of every image of ``source`` into ``output``; returns (extracted, skipped, failed).

    ``engine="local"``: ``workers`` > 1 extracts in that many processes started with ``spawn`` (never
    ``fork``: see ``cvdeep.parallel``), each with its share of the CPU threads. ``engine="ray"``: one Ray
    actor per worker, on the cluster at ``address`` (``"auto"``: the running one) or on a local cluster of
    ``workers`` CPUs started and stopped here. Either way this process writes the file.
    """
    import_h5py("cvdeep extract")
    where = Engine(engine, workers, address)
    images = list_images(source)
    extractor = ImageExtractor(features, nfeatures, max_size)
    extractor.setup()  # a bad name or missing weights fail before any work
    settings = {"features": features, "nfeatures": nfeatures or 0, "max_size": max_size or 0}
    return run_into_h5(output, images, extractor, DATASETS, settings, where, f"extracting {features}",
                       progress, "cvdeep extract")
