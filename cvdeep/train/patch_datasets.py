"""Readers of the standard patch datasets, and their conversion to ``PatchPairs``.

Users who have these datasets can train cvdeep's patch descriptors on them instead of (or
besides) the synthetic pairs of ``cvdeep.train.patch_pairs``.

**UBC PhotoTour / Brown** (Brown, Hua and Winder, "Discriminative Learning of Local Image
Descriptors", TPAMI 2011; subsets ``liberty``, ``notredame``, ``yosemite``). One folder per
subset holding:

- ``patches*.bmp``: 1024 x 1024 gray images, each a 16 x 16 grid of 64 x 64 patches in
  row-major order (left to right, then top to bottom); files in sorted name order continue
  the numbering, and the last one is only partly filled;
- ``info.txt``: one line per patch, in patch order: the id of the 3D point the patch shows,
  then a field not used here. Its line count is the number of patches;
- ``m50_<n>_<n>_0.txt``: the standard test pairs, one per line: patch 1, its 3D point, an
  unused field, patch 2, its 3D point, two unused fields; a pair matches when the two 3D
  point ids are equal.

**HPatches patches** (Balntas, Lenc, Vedaldi and Mikolajczyk, "HPatches: A benchmark and
evaluation of handcrafted and learned local descriptors", CVPR 2017). A folder
``hpatches-release`` with one sub-folder per sequence (``i_*`` illumination, ``v_*``
viewpoint), each holding ``ref.png``, ``e1..e5.png``, ``h1..h5.png`` and ``t1..t5.png``: gray
images 65 px wide with the patches stacked vertically (patch ``k`` is rows ``65k .. 65k+64``).
The same index in the sixteen files of a sequence is the same scene point; ``e``, ``h``, ``t``
(easy, hard, tough) add increasing geometric noise to the reference detection.

Sources read for facts (no code copied): torchvision ``torchvision/datasets/phototour.py``
(BSD 3-Clause licence) for the PhotoTour file layout; hpatches/hpatches-benchmark
``python/utils/hpatch.py``, ``python/utils/tasks.py`` and ``README.md`` (licence not stated
in the files read) for the HPatches layout.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import Error
from .patch_pairs import PatchPairs

PHOTOTOUR_PATCH = 64
PHOTOTOUR_GRID = 16
HPATCHES_PATCH = 65
HPATCHES_TYPES = ("ref", "e1", "e2", "e3", "e4", "e5", "h1", "h2", "h3", "h4", "h5", "t1", "t2", "t3", "t4", "t5")
"""The patch files of an HPatches sequence, reference first."""
_DIFFICULTIES = {"easy": "e", "hard": "h", "tough": "t", "e": "e", "h": "h", "t": "t"}


def _folder(root: str | os.PathLike, what: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise Error(f"{what}: {str(root)!r} is not a directory")
    return path


def _read_gray(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        raise Error(f"cannot read image {str(path)!r}; expected an 8-bit image file")
    return image


def _resize(patches: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., S, S) patches resized to (..., size, size) with area interpolation (bilinear when enlarging)."""
    if patches.shape[-1] == size:
        return patches
    flat = patches.reshape(-1, *patches.shape[-2:])
    interpolation = cv2.INTER_AREA if size < patches.shape[-1] else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(p, (size, size), interpolation=interpolation) for p in flat]) if len(flat) else \
        np.zeros((0, size, size), np.uint8)
    return out.reshape(*patches.shape[:-2], size, size)


def read_phototour(root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """All patches of a PhotoTour subset folder: uint8 (N, 64, 64) and their int64 3D point ids (N,).

    N is the number of lines of ``info.txt``. ``cvdeep.Error`` when the folder lacks
    ``info.txt`` or ``patches*.bmp``, a bitmap is not 1024 x 1024, or the bitmaps hold fewer
    than N patches.
    """
    folder = _folder(root, "read_phototour")
    info = folder / "info.txt"
    if not info.is_file():
        raise Error(f"read_phototour: {str(folder)!r} has no info.txt; expected a PhotoTour subset folder "
                    "(patches*.bmp, info.txt, m50_*.txt)")
    point_ids = []
    for number, line in enumerate(info.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            point_ids.append(int(line.split()[0]))
        except ValueError:
            raise Error(f"read_phototour: line {number} of {str(info)!r} does not start with an integer 3D point id") \
                from None
    count = len(point_ids)
    bitmaps = sorted(p for p in folder.iterdir() if re.fullmatch(r"patches.*\.bmp", p.name, re.IGNORECASE))
    per_file = PHOTOTOUR_GRID * PHOTOTOUR_GRID
    if len(bitmaps) * per_file < count:
        raise Error(f"read_phototour: {str(folder)!r} has {len(bitmaps)} patches*.bmp files holding at most "
                    f"{len(bitmaps) * per_file} patches; info.txt lists {count}")
    side = PHOTOTOUR_GRID * PHOTOTOUR_PATCH
    patches = np.empty((count, PHOTOTOUR_PATCH, PHOTOTOUR_PATCH), np.uint8)
    for number, path in enumerate(bitmaps):
        first = number * per_file
        if first >= count:
            break
        image = _read_gray(path)
        if image.shape != (side, side):
            raise Error(f"read_phototour: {str(path)!r} is {image.shape[1]}x{image.shape[0]}; expected {side}x{side}")
        grid = image.reshape(PHOTOTOUR_GRID, PHOTOTOUR_PATCH, PHOTOTOUR_GRID, PHOTOTOUR_PATCH).transpose(0, 2, 1, 3)
        take = min(per_file, count - first)
        patches[first:first + take] = grid.reshape(per_file, PHOTOTOUR_PATCH, PHOTOTOUR_PATCH)[:take]
    return patches, np.asarray(point_ids, dtype=np.int64)


def read_phototour_pairs(root: str | os.PathLike, m50_file: str | os.PathLike = "m50_100000_100000_0.txt"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The test pairs of a PhotoTour ``m50_*.txt`` file (a name inside ``root`` or a path):
    int64 (M, 2) patch indices and bool (M,) labels (True when both patches show the same 3D point)."""
    path = Path(m50_file)
    if not path.is_absolute() and not path.is_file():
        path = _folder(root, "read_phototour_pairs") / path
    if not path.is_file():
        raise Error(f"read_phototour_pairs: {str(path)!r} does not exist; expected an m50_<n>_<n>_0.txt file")
    pairs, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            patch1, point1, patch2, point2 = int(fields[0]), int(fields[1]), int(fields[3]), int(fields[4])
        except (IndexError, ValueError):
            raise Error(f"read_phototour_pairs: line {number} of {str(path)!r} is {line!r}; expected 7 integers "
                        "(patch1 point1 _ patch2 point2 _ _)") from None
        pairs.append((patch1, patch2))
        labels.append(point1 == point2)
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2), np.asarray(labels, dtype=bool)


def phototour_patch_pairs(patches: np.ndarray, point_ids: np.ndarray, patch_size: int = 32,
                          views: int = 2) -> PatchPairs:
    """``PatchPairs`` from PhotoTour patches (N, S, S) and point ids (N,): each 3D point with
    k >= ``views`` patches gives ``k // views`` rows of ``views`` distinct patches (in file
    order; the remainder is left out), all sharing the point's id. Patches are resized to
    ``patch_size`` (area interpolation). ``image_id`` is 0."""
    patches = np.asarray(patches)
    point_ids = np.asarray(point_ids, dtype=np.int64).reshape(-1)
    if patches.dtype != np.uint8 or patches.ndim != 3 or len(patches) != len(point_ids):
        raise Error(f"phototour_patch_pairs: got patches {patches.shape} {patches.dtype} and {len(point_ids)} ids; "
                    "expected uint8 (N, S, S) and (N,) ids, as read_phototour returns")
    if not isinstance(views, int) or views < 2:
        raise Error(f"phototour_patch_pairs: views got {views!r}; expected an integer >= 2")
    order = np.argsort(point_ids, kind="stable")
    _, starts, counts = np.unique(point_ids[order], return_index=True, return_counts=True)
    rows = []
    for start, count in zip(starts, counts):
        for group in range(count // views):
            rows.append(order[start + group * views:start + (group + 1) * views])
    index = np.asarray(rows, dtype=np.int64).reshape(-1, views)
    index = index[np.argsort(index[:, 0], kind="stable")]  # rows in file order
    resized = _resize(patches, patch_size)
    return PatchPairs(resized[index], point_ids[index[:, 0]], np.zeros(len(index), np.int64),
                      config={"source": "phototour", "views": views, "patch_size": patch_size})


def read_hpatches_patches(root: str | os.PathLike,
                          sequences: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Patches of an ``hpatches-release`` folder: ``{sequence: {type: uint8 (N, 65, 65)}}`` for
    every sequence folder (sorted by name) or the named ``sequences``, types ``HPATCHES_TYPES``.

    ``cvdeep.Error`` when a requested sequence is missing, a sequence lacks one of the 16
    files, a file's height is not a multiple of 65 or its width not 65, or the files of a
    sequence hold different numbers of patches.
    """
    folder = _folder(root, "read_hpatches_patches")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "ref.png").is_file())
    if sequences is None:
        names = found
        if not names:
            raise Error(f"read_hpatches_patches: no sequence folder with ref.png below {str(folder)!r}; expected "
                        "hpatches-release/<sequence>/{ref,e1..e5,h1..h5,t1..t5}.png")
    else:
        missing = [name for name in sequences if name not in found]
        if missing:
            raise Error(f"read_hpatches_patches: sequences {missing} not found below {str(folder)!r}; available: "
                        f"{', '.join(found) if found else 'none'}")
        names = list(sequences)
    result: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        stacks: dict[str, np.ndarray] = {}
        for kind in HPATCHES_TYPES:
            path = folder / name / f"{kind}.png"
            if not path.is_file():
                raise Error(f"read_hpatches_patches: {str(path)!r} is missing; an HPatches sequence holds "
                            f"{', '.join(k + '.png' for k in HPATCHES_TYPES)}")
            image = _read_gray(path)
            if image.shape[1] != HPATCHES_PATCH or image.shape[0] % HPATCHES_PATCH:
                raise Error(f"read_hpatches_patches: {str(path)!r} is {image.shape[1]}x{image.shape[0]}; expected "
                            f"{HPATCHES_PATCH} px wide and a multiple of {HPATCHES_PATCH} px high")
            stacks[kind] = image.reshape(-1, HPATCHES_PATCH, HPATCHES_PATCH)
        counts = {len(v) for v in stacks.values()}
        if len(counts) != 1:
            raise Error(f"read_hpatches_patches: the files of sequence {name!r} hold different numbers of patches "
                        f"({sorted(counts)}); expected the same count in all 16")
        result[name] = stacks
    return result


def hpatches_patch_pairs(data: dict[str, dict[str, np.ndarray]], difficulty: str = "easy", patch_size: int = 32,
                         views: tuple[str, ...] | None = None) -> PatchPairs:
    """``PatchPairs`` from ``read_hpatches_patches`` output: one row per patch index of each
    sequence, with views ``ref`` then the five of ``difficulty`` ("easy"/"e", "hard"/"h",
    "tough"/"t"), i.e. V = 6, or the explicit ``views`` (e.g. ``("ref", "h3")``). Patches are
    resized to ``patch_size`` (area interpolation). ``image_id`` is the sequence's index in
    ``data``; ``point_id`` is unique per (sequence, index)."""
    if views is None:
        if difficulty not in _DIFFICULTIES:
            raise Error(f"hpatches_patch_pairs: difficulty got {difficulty!r}; expected one of "
                        f"{', '.join(_DIFFICULTIES)}")
        letter = _DIFFICULTIES[difficulty]
        views = ("ref", *(f"{letter}{k}" for k in range(1, 6)))
    views = tuple(views)
    unknown = [v for v in views if v not in HPATCHES_TYPES]
    if len(views) < 2 or unknown:
        raise Error(f"hpatches_patch_pairs: views got {views!r}; expected at least two of {', '.join(HPATCHES_TYPES)}")
    if not data:
        raise Error("hpatches_patch_pairs: got no sequences; expected read_hpatches_patches output")
    blocks, images, points = [], [], []
    offset = 0
    for number, (name, stacks) in enumerate(data.items()):
        missing = [v for v in views if v not in stacks]
        if missing:
            raise Error(f"hpatches_patch_pairs: sequence {name!r} lacks {missing}")
        stacked = np.stack([np.asarray(stacks[v], dtype=np.uint8) for v in views], axis=1)  # (N, V, S, S)
        blocks.append(_resize(stacked, patch_size))
        images.append(np.full(len(stacked), number, np.int64))
        points.append(offset + np.arange(len(stacked), dtype=np.int64))
        offset += len(stacked)
    config: dict[str, Any] = {"source": "hpatches", "views": list(views), "patch_size": patch_size,
                              "sequences": list(data)}
    return PatchPairs(np.concatenate(blocks), np.concatenate(points), np.concatenate(images), config=config)
