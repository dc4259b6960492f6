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
is refused.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Error
from ..image import limit_size, read_image
from ..keypoints import keypoint_responses
from ..matching.pairs import detect_features
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


def extract_to_h5(
    source: str | os.PathLike,
    output: str | os.PathLike,
    features: str = "sift",
    nfeatures: int | None = None,
    max_size: int | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Extract features of every image of ``source`` into ``output``; returns (extracted, skipped)."""
    try:
        import h5py
    except ImportError:
        raise Error("cvdeep extract writes HDF5 and needs h5py: pip install 'cvdeep[h5]'") from None
    from tqdm.auto import tqdm

    images = list_images(source)
    detector = create_features(features, nfeatures)
    extracted = skipped = 0
    with h5py.File(output, "a") as store:
        settings = {"features": features, "nfeatures": nfeatures or 0, "max_size": max_size or 0}
        for key, value in settings.items():
            recorded = store.attrs.get(key)
            if recorded is not None and recorded != value:
                raise Error(f"{output} was written with {key}={recorded!r}, not {value!r}; "
                            "resume with the same settings or write another file")
        store.attrs.update(settings)
        for name, path in tqdm(images, desc=f"extracting {features}", unit="image", disable=not progress):
            if name in store and _complete(store[name]):
                skipped += 1
                continue
            image, resize = limit_size(read_image(path), max_size)
            found = detect_features(detector, image)
            scale = np.diag(resize)[:2]  # processed / original pixels, per axis
            keypoints = (found.points + 0.5) / scale - 0.5
            scores = keypoint_responses(found.keypoints)
            width, height = (np.array(found.size) / scale).round().astype(int)
            if name in store:
                del store[name]
            group = store.create_group(name)
            group.create_dataset("keypoints", data=keypoints.astype(np.float32))
            group["keypoints"].attrs["uncertainty"] = float(1.0 / scale.mean())
            group.create_dataset("descriptors", data=np.ascontiguousarray(found.descriptors.T))
            group.create_dataset("scores", data=scores)
            group.create_dataset("image_size", data=np.array([width, height]))
            store.flush()
            extracted += 1
    return extracted, skipped
