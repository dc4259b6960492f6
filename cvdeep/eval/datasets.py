"""Image sequences with ground-truth homographies: the HPatches and Oxford layouts, and
synthetic sequences warped from unlabeled photos.

Every dataset holds sequences of six images of a planar scene; a 3x3 homography maps the
pixels of image 1 to those of image N (N = 2..6), so every sequence gives five pairs.
Nothing here depends on a feature method: the runner and the tests read the same objects.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import Error
from ..image import read_image
from ..train.homography import HomographyConfig, sample_homography, scaled_homography, warp_image
from ..train.patch_pairs import image_files
from ..train.photometric import augment

#: The kinds of change a sequence shows; summaries are grouped by these.
SEQUENCE_KINDS = ("viewpoint", "rotation-zoom", "blur", "light", "JPEG", "synthetic", "other")

#: Oxford Affine (Mikolajczyk et al. 2005): the change each of the eight sequences shows.
OXFORD_KINDS = {
    "bark": "rotation-zoom", "boat": "rotation-zoom",
    "graf": "viewpoint", "wall": "viewpoint",
    "bikes": "blur", "trees": "blur",
    "leuven": "light",
    "ubc": "JPEG",
}

#: The eight HPatches sequences whose images exceed 1600x1200; D2-Net's protocol (and the
#: papers that follow it) leaves them out, keeping 52 illumination + 56 viewpoint sequences.
HPATCHES_HIGH_RESOLUTION = ("i_contruction", "i_crownnight", "i_dc", "i_pencils", "i_whitebuilding",
                            "v_artisans", "v_astronautis", "v_talent")

_HPATCHES_KINDS = {"i": "light", "v": "viewpoint"}
_IMAGES_PER_SEQUENCE = 6


@dataclass(frozen=True)
class Sequence:
    """One reference image, five target images and the homographies reference -> target."""

    name: str
    dataset: str  # "hpatches" or "oxford"
    kind: str  # one of SEQUENCE_KINDS
    image_paths: tuple[Path, ...]  # image 1 first (a synthetic sequence: its photo, six times)
    homographies: tuple[np.ndarray, ...]  # homographies[k] maps image 1 to image k + 2
    render: Callable[[int], np.ndarray] | None = field(default=None, compare=False, repr=False)
    """Synthetic sequences: image ``index`` -> BGR uint8, made on demand instead of read."""

    def __len__(self) -> int:
        return len(self.homographies)

    def read_image(self, index: int) -> np.ndarray:
        """Image ``index`` (0 = reference) as BGR uint8, grey files replicated to three channels."""
        if self.render is not None:
            return self.render(index)
        return read_image(self.image_paths[index])


def read_homography(path: str | os.PathLike) -> np.ndarray:
    """A whitespace-separated 3x3 matrix (HPatches ``H_1_N``, Oxford ``H1toNp``; ``1.0E-4`` style is fine)."""
    text = Path(path).read_text()
    try:
        values = [float(token) for token in text.split()]
    except ValueError:
        raise Error(f"homography file {str(path)!r} holds non-numeric text; expected 9 numbers") from None
    if len(values) != 9:
        raise Error(f"homography file {str(path)!r} holds {len(values)} numbers; expected 9 (a 3x3 matrix)")
    homography = np.array(values, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(homography).all() or abs(np.linalg.det(homography)) < 1e-12:
        raise Error(f"homography file {str(path)!r} is not an invertible finite 3x3 matrix")
    return homography


def _select(sequences: list[Sequence], names: list[str] | None, root: Path, layout: str) -> list[Sequence]:
    if not sequences:
        raise Error(f"no {layout} sequence found under {str(root)!r}; see cvdeep.eval.datasets for the layout")
    if names is None:
        return sequences
    found = {seq.name for seq in sequences}
    missing = [name for name in names if name not in found]
    if missing:
        raise Error(f"sequences {missing} not found under {str(root)!r}; available: {', '.join(sorted(found))}")
    return [seq for seq in sequences if seq.name in names]


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise Error(f"dataset root {str(root)!r} is not a directory")
    return path


def load_hpatches(root: str | os.PathLike, names: list[str] | None = None,
                  exclude: tuple[str, ...] = HPATCHES_HIGH_RESOLUTION) -> list[Sequence]:
    """Every ``i_*``/``v_*`` folder below ``root`` (searched recursively) holding
    ``1.ppm..6.ppm`` and ``H_1_2..H_1_6``, sorted by name.

    ``i_`` sequences change illumination ("light"), ``v_`` ones viewpoint. ``exclude``
    defaults to the eight high-resolution sequences that D2-Net's protocol drops.
    """
    base = _check_root(root)
    sequences = []
    for marker in sorted(base.rglob("H_1_2")):
        folder = marker.parent
        if not re.fullmatch(r"[iv]_.+", folder.name) or folder.name in exclude:
            continue
        images = tuple(folder / f"{k}.ppm" for k in range(1, _IMAGES_PER_SEQUENCE + 1))
        homography_files = [folder / f"H_1_{k}" for k in range(2, _IMAGES_PER_SEQUENCE + 1)]
        incomplete = [p.name for p in (*images, *homography_files) if not p.is_file()]
        if incomplete:
            raise Error(f"HPatches sequence {str(folder)!r} lacks {', '.join(incomplete)}")
        sequences.append(Sequence(folder.name, "hpatches", _HPATCHES_KINDS[folder.name[0]], images,
                                  tuple(read_homography(p) for p in homography_files)))
    sequences.sort(key=lambda seq: seq.name)
    return _select(sequences, names, base, "HPatches")


def load_oxford(root: str | os.PathLike, names: list[str] | None = None) -> list[Sequence]:
    """Every folder directly below ``root`` holding ``img1..img6`` (``.ppm`` or ``.pgm``) and
    ``H1to2p..H1to6p``, sorted by name; the kind comes from ``OXFORD_KINDS`` ("other" if unknown)."""
    base = _check_root(root)
    sequences = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        images = []
        for k in range(1, _IMAGES_PER_SEQUENCE + 1):
            candidates = [folder / f"img{k}.{ext}" for ext in ("ppm", "pgm") if (folder / f"img{k}.{ext}").is_file()]
            images.append(candidates[0] if candidates else None)
        if images[0] is None:
            continue
        homography_files = [folder / f"H1to{k}p" for k in range(2, _IMAGES_PER_SEQUENCE + 1)]
        incomplete = [f"img{k + 1}" for k, p in enumerate(images) if p is None]
        incomplete += [p.name for p in homography_files if not p.is_file()]
        if incomplete:
            raise Error(f"Oxford sequence {str(folder)!r} lacks {', '.join(incomplete)}")
        found = tuple(p for p in images if p is not None)  # all six, checked above
        sequences.append(Sequence(folder.name, "oxford", OXFORD_KINDS.get(folder.name, "other"), found,
                                  tuple(read_homography(p) for p in homography_files)))
    return _select(sequences, names, base, "Oxford")


def load_shared(data_root: str | os.PathLike, names: list[str] | None = None) -> list[Sequence]:
    """The evaluation subset in the project's ``shared/data``: the HPatches viewpoint
    sequences under ``hpatches_subset`` (three, in different parent folders) and the eight
    Oxford sequences under ``oxford_affine/images``."""
    base = _check_root(data_root)
    sequences = load_hpatches(base / "hpatches_subset") + load_oxford(base / "oxford_affine" / "images")
    return _select(sequences, names, base, "shared")


WARPED_PHOTOS = 50
"""Photos a warped dataset takes from its folder (evenly spaced in sorted order)."""
WARPED_MAX_SIDE = 640
"""Longest side (pixels) of a warped sequence's images: larger photos are shrunk first."""


WARPED_HOMOGRAPHY = HomographyConfig(patch_ratio=0.8, perspective=0.25, scale_range=(0.6, 1.6), max_angle_deg=45.0,
                            allow_artifacts=True)
"""The strength-1 warp of a synthetic sequence: perspective 0.25, rotation up to 45 deg, region
scale 0.6..1.6 (zoom 0.63x..1.67x), patch ratio 0.8, borders allowed (they show black)."""


def load_warped(root: str | os.PathLike, names: list[str] | None = None, photos: int = WARPED_PHOTOS,
                seed: int = 0, max_side: int = WARPED_MAX_SIDE, min_side: int = 0) -> list[Sequence]:
    """Synthetic sequences from the unlabeled photos below ``root``: for fine-tuning on one's own
    images and for choices that must not be made on real evaluation pairs.

    ``photos`` photos, evenly spaced among the sorted image files whose longest side is at least
    ``min_side`` pixels (0: all), each shrunk to a longest side of ``max_side`` (larger ones only);
    image 1 is the photo, image k + 2 (k = 0..4) its warp by a random
    homography at strength (k + 1) / 5 of ``WARPED_HOMOGRAPHY`` (``cvdeep.train.homography``:
    perspective, rotation and log-zoom grow linearly) with independent photometric changes
    (``cvdeep.train.photometric`` defaults). Everything is drawn from ``(seed, photo index, k)``, so
    the sequences are the same on every machine. Named by the photo's file stem (its relative path,
    '/' -> '_'); kind "synthetic".

    Synthetic warps are easier than real pairs and keep the photos' scale: a choice that depends on
    image size (TR's ``upsampled``) looked better on <= 640 px photos and was worse on real
    765-1024 px pairs, as it was on a warped set of large photos at ``max_side=1000``
    (docs/RESULTS.md, TR), so use photos at the size the features will meet.
    """
    base = _check_root(root)
    if not isinstance(photos, int) or photos < 1:
        raise Error(f"photos: got {photos!r}; expected a positive integer")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 16:
        raise Error(f"max_side: got {max_side!r}; expected an integer >= 16 (pixels)")
    if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 0:
        raise Error(f"min_side: got {min_side!r}; expected an integer >= 0 (pixels)")
    files = image_files(base)
    if min_side:
        files = [path for path in files if max(read_image(path).shape[:2]) >= min_side]
        if not files:
            raise Error(f"min_side: no photo below {str(base)!r} has a side of {min_side} px or more")
    chosen = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(photos, len(files)))})
    sequences = []
    for index in chosen:
        path = files[index]
        name = str(path.relative_to(base).with_suffix("")).replace(os.sep, "_")
        height, width = _shrunk_photo(path, max_side).shape[:2]
        homographies = tuple(
            sample_homography(np.random.default_rng([seed, index, k]), height, width,
                              scaled_homography(WARPED_HOMOGRAPHY, (k + 1) / 5))
            for k in range(_IMAGES_PER_SEQUENCE - 1))

        def render(image_index: int, path: Path = path, index: int = index,
                   homographies: tuple[np.ndarray, ...] = homographies) -> np.ndarray:
            photo = _shrunk_photo(path, max_side)
            if image_index == 0:
                return photo.copy()
            k = image_index - 1
            size = (photo.shape[1], photo.shape[0])
            return augment(warp_image(photo, homographies[k], size), np.random.default_rng([seed, index, k, 1]))

        sequences.append(Sequence(name, "warped", "synthetic", (path,) * _IMAGES_PER_SEQUENCE, homographies, render))
    return _select(sequences, names, base, "warped")


@functools.lru_cache(maxsize=1)
def _shrunk_photo(path: Path, max_side: int) -> np.ndarray:
    """The photo at ``path`` shrunk by ``_shrunk``; the last one is kept, as a sequence's six
    images are rendered one after another from the same photo (read-only: it is shared)."""
    photo = _shrunk(read_image(path), max_side)
    photo.setflags(write=False)
    return photo


def _shrunk(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` with its longest side at most ``max_side`` (area interpolation)."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def default_shared_data() -> Path | None:
    """``$CVDEEP_SHARED/data``, else ``../shared/data`` from the working directory, if present."""
    for candidate in (os.environ.get("CVDEEP_SHARED"), "../shared"):
        if candidate and (Path(candidate) / "data").is_dir():
            return Path(candidate) / "data"
    return None


#: dataset name -> loader(root, names)
LOADERS = {"hpatches": load_hpatches, "oxford": load_oxford, "shared": load_shared, "warped": load_warped}


def load_dataset(dataset: str, root: str | os.PathLike | None, names: list[str] | None = None,
                 all_hpatches: bool = False, warped: dict[str, int] | None = None) -> list[Sequence]:
    """Sequences of ``dataset`` ("hpatches", "oxford", "shared" or "warped") found under ``root``.

    ``all_hpatches`` keeps the eight high-resolution HPatches sequences D2-Net drops.
    ``warped`` holds ``load_warped``'s options (photos, max_side, min_side, seed) for "warped".
    For "shared", ``root`` may be None: ``default_shared_data()`` is used.
    """
    if dataset not in LOADERS:
        raise Error(f"dataset: got {dataset!r}; expected one of {', '.join(LOADERS)}")
    if root is None:
        root = default_shared_data() if dataset == "shared" else None
        if root is None:
            raise Error(f"dataset {dataset!r} needs --root PATH (the folder holding its sequences)")
    if dataset == "hpatches" and all_hpatches:
        return load_hpatches(root, names, exclude=())
    if dataset == "warped" and warped:
        return load_warped(root, names, **warped)
    return LOADERS[dataset](root, names)
