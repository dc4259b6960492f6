"""Image sequences with ground-truth homographies: the HPatches and Oxford layouts.

Both datasets hold sequences of six images of a planar scene; a 3x3 homography maps the
pixels of image 1 to those of image N (N = 2..6), so every sequence gives five pairs.
Nothing here depends on a feature method: the runner and the tests read the same objects.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Error
from ..image import read_image

#: The kinds of change a sequence shows; summaries are grouped by these.
SEQUENCE_KINDS = ("viewpoint", "rotation-zoom", "blur", "light", "JPEG", "other")

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
    image_paths: tuple[Path, ...]  # image 1 first
    homographies: tuple[np.ndarray, ...]  # homographies[k] maps image 1 to image k + 2

    def __len__(self) -> int:
        return len(self.homographies)

    def read_image(self, index: int) -> np.ndarray:
        """Image ``index`` (0 = reference) as BGR uint8, grey files replicated to three channels."""
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


def default_shared_data() -> Path | None:
    """``$CVDEEP_SHARED/data``, else ``../shared/data`` from the working directory, if present."""
    for candidate in (os.environ.get("CVDEEP_SHARED"), "../shared"):
        if candidate and (Path(candidate) / "data").is_dir():
            return Path(candidate) / "data"
    return None


#: dataset name -> loader(root, names)
LOADERS = {"hpatches": load_hpatches, "oxford": load_oxford, "shared": load_shared}


def load_dataset(dataset: str, root: str | os.PathLike | None, names: list[str] | None = None,
                 all_hpatches: bool = False) -> list[Sequence]:
    """Sequences of ``dataset`` ("hpatches", "oxford" or "shared") found under ``root``.

    ``all_hpatches`` keeps the eight high-resolution HPatches sequences D2-Net drops.
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
    return LOADERS[dataset](root, names)
