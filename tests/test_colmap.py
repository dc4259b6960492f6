"""cvdeep's files into a COLMAP database (pycolmap): the +0.5 px origin shift, verification, one real reconstruction."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import cvdeep
from cvdeep.apps.colmap import COLMAP_SHIFT, import_into_colmap, reconstruct, verify_pairs
from cvdeep.apps.extract import extract_to_h5
from cvdeep.apps.match_pairs import exhaustive_pairs, match_to_h5, write_pairs

pycolmap = pytest.importorskip("pycolmap")
h5py = pytest.importorskip("h5py")


def test_sift_features_reconstruct_in_colmap(tmp_path: Path, data_dir: Path) -> None:
    """Four real viewpoint images of HPatches' v_churchill: cvdeep SIFT + ratio test -> COLMAP mapper."""
    images = tmp_path / "images"
    images.mkdir()
    source = data_dir / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill"
    names = [f"{i}.ppm" for i in range(1, 5)]
    for name in names:
        shutil.copy(source / name, images / name)
    features, pairs, matches, database = (tmp_path / f for f in ("f.h5", "pairs.txt", "m.h5", "colmap.db"))
    extract_to_h5(images, features, "sift", nfeatures=1500, progress=False)
    write_pairs(exhaustive_pairs(names), pairs)
    match_to_h5(pairs, features, matches, "ratio", progress=False)

    ids = import_into_colmap(database, images, features, pairs, matches)
    assert sorted(ids) == names
    with pycolmap.Database.open(database) as colmap, h5py.File(features, "r") as store:
        for name in names:  # COLMAP's origin is the top-left pixel's corner: cvdeep's (OpenCV's) points + 0.5
            np.testing.assert_allclose(colmap.read_keypoints(ids[name])[:, :2],
                                       store[name]["keypoints"][()] + COLMAP_SHIFT, atol=1e-4)
        assert colmap.num_matched_image_pairs() == 6
    assert verify_pairs(database, pairs) >= 5
    summary = reconstruct(database, images, tmp_path / "sfm", threads=1)  # seeded, one thread: steadier
    assert summary.registered >= 4 and summary.points > 500 and summary.reprojection_error < 1.5, summary

    with pytest.raises(cvdeep.Error, match="exists"):
        import_into_colmap(database, images, features, pairs, matches)
    pairs.write_text("1.ppm 9.ppm\n")
    with pytest.raises(cvdeep.Error, match="9.ppm"):
        import_into_colmap(tmp_path / "other.db", images, features, pairs, matches)
