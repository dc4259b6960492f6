"""cvdeep's features and matches into COLMAP, through pycolmap (``pip install 'cvdeep[colmap]'``).

``import_into_colmap`` makes a COLMAP database from the files of ``cvdeep extract`` and
``cvdeep match --pairs``: the images (``pycolmap.import_images``: cameras from the image
files), their keypoints and the raw matches of every pair. The keypoints move by +0.5 px on
the way in: cvdeep's (and hloc's) HDF5 files hold OpenCV's pixel-centre coordinates (the
centre of the top-left pixel is (0, 0)), COLMAP's keypoints put its corner there (the centre
is (0.5, 0.5)); hloc's ``triangulation.import_features`` adds the same 0.5 ("COLMAP origin").
``verify_pairs`` runs COLMAP's two-view geometry verification on the matches, ``reconstruct``
its incremental mapper, and ``colmap_sift_reconstruction`` COLMAP's own SIFT pipeline on the
same images, as a baseline.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Error
from .h5files import import_h5py
from .match_pairs import pair_name, read_pairs

#: cvdeep's keypoints (OpenCV: pixel centres at integers) -> COLMAP's (pixel corners at integers).
COLMAP_SHIFT = 0.5


def import_pycolmap() -> Any:
    """The ``pycolmap`` module, or ``cvdeep.Error`` naming the extra that installs it."""
    try:
        import pycolmap
    except ImportError:
        raise Error("COLMAP export needs pycolmap: pip install 'cvdeep[colmap]'") from None
    return pycolmap


def import_into_colmap(database: str | os.PathLike, image_dir: str | os.PathLike, features_file: str | os.PathLike,
                       pairs_file: str | os.PathLike, matches_file: str | os.PathLike) -> dict[str, int]:
    """A new COLMAP ``database`` holding the images of ``features_file`` (found in ``image_dir``), their
    keypoints and the matches of every pair of ``pairs_file``; returns image name -> COLMAP image id."""
    pycolmap, h5py = import_pycolmap(), import_h5py("COLMAP export")
    if Path(database).exists():
        raise Error(f"{database} exists; COLMAP export writes a new database (remove it or choose another path)")
    pairs = read_pairs(pairs_file)
    with h5py.File(features_file, "r") as features:
        names = sorted({name for pair in pairs for name in pair})
        missing = [name for name in names if name not in features or not (Path(image_dir) / name).is_file()]
        if missing:
            raise Error(f"images {', '.join(missing[:3])} of {pairs_file} are not both in {features_file} and "
                        f"under {image_dir}")
        with pycolmap.Database.open(database):
            pass  # creates the empty database import_images needs
        pycolmap.import_images(database, image_dir, pycolmap.CameraMode.AUTO, image_names=names)
        with pycolmap.Database.open(database) as colmap, h5py.File(matches_file, "r") as matches:
            ids = {image.name: image.image_id for image in colmap.read_all_images()}
            for name in names:
                keypoints = np.asarray(features[name]["keypoints"][()], np.float64) + COLMAP_SHIFT
                colmap.write_keypoints(ids[name], keypoints.astype(np.float32))
            for name0, name1 in pairs:
                if pair_name(name0, name1) not in matches:
                    raise Error(f"{matches_file} has no matches of {name0} and {name1}; run cvdeep match --pairs "
                                f"{pairs_file} first")
                matches0 = matches[pair_name(name0, name1)]["matches0"][()]
                found = np.flatnonzero(matches0 >= 0)
                colmap.write_matches(ids[name0], ids[name1], np.stack([found, matches0[found]], 1).astype(np.uint32))
    return ids


def verify_pairs(database: str | os.PathLike, pairs_file: str | os.PathLike, seed: int = 0) -> int:
    """COLMAP's two-view geometry verification of the pairs' matches (its RANSAC seeded with ``seed``);
    returns the pairs it verified."""
    pycolmap = import_pycolmap()
    pycolmap.set_random_seed(seed)
    pycolmap.verify_matches(database, pairs_file)
    with pycolmap.Database.open(database) as colmap:
        return int(colmap.num_verified_image_pairs())


@dataclass
class ReconstructionSummary:
    """The largest model of an incremental reconstruction."""

    images: int  # images given
    registered: int
    points: int
    reprojection_error: float  # mean, pixels

    def __str__(self) -> str:
        return (f"{self.registered} of {self.images} images registered, {self.points} points, "
                f"mean reprojection error {self.reprojection_error:.3f} px")


def reconstruct(database: str | os.PathLike, image_dir: str | os.PathLike, output: str | os.PathLike,
                seed: int = 0, threads: int = -1) -> ReconstructionSummary:
    """COLMAP's incremental mapper on a verified database; the largest model is summarised (and saved in
    ``output``/<index>). ``seed`` seeds the mapper's random draws and ``threads`` its thread count (``-1``:
    all cores, COLMAP's default). Multi-threaded runs vary from run to run (once 3 of 4 test images and
    23 points where the usual is 4 and about 620); seeded single-threaded runs of the test agreed within
    1 % of the points."""
    pycolmap = import_pycolmap()
    Path(output).mkdir(parents=True, exist_ok=True)
    with pycolmap.Database.open(database) as colmap:
        images = int(colmap.num_images())
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed, options.num_threads = seed, threads
    models = pycolmap.incremental_mapping(database, image_dir, output, options=options)
    if not models:
        return ReconstructionSummary(images, 0, 0, float("nan"))
    best = max(models.values(), key=lambda model: model.num_reg_images())
    return ReconstructionSummary(images, int(best.num_reg_images()), int(best.num_points3D()),
                                 float(best.compute_mean_reprojection_error()))


def colmap_sift_reconstruction(image_dir: str | os.PathLike, names: list[str],
                               work_dir: str | os.PathLike) -> ReconstructionSummary:
    """COLMAP's own pipeline on the same images (its SIFT, exhaustive matching, verification, mapper)."""
    pycolmap = import_pycolmap()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    database = work / "sift.db"
    if database.exists():
        database.unlink()
    pycolmap.extract_features(database, image_dir, image_names=names, camera_mode=pycolmap.CameraMode.AUTO)
    pycolmap.match_exhaustive(database)
    return reconstruct(database, image_dir, work / "sift")
