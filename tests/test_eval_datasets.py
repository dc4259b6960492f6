"""cvdeep.eval.datasets on the real sequences in ../shared/data (and layouts built from them)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cvdeep import Error
from cvdeep.eval import metrics
from cvdeep.eval.datasets import (
    HPATCHES_HIGH_RESOLUTION,
    OXFORD_KINDS,
    load_dataset,
    load_hpatches,
    load_oxford,
    load_shared,
    read_homography,
)

HPATCHES_SHARED = ("v_churchill", "v_graffiti", "v_wormhole")


@pytest.fixture(scope="module")
def shared_sequences(data_dir: Path):
    return load_shared(data_dir)


def test_shared_subset_holds_three_hpatches_and_eight_oxford_sequences(shared_sequences) -> None:
    by_dataset = {d: sorted(s.name for s in shared_sequences if s.dataset == d) for d in ("hpatches", "oxford")}
    assert by_dataset["hpatches"] == list(HPATCHES_SHARED)
    assert by_dataset["oxford"] == sorted(OXFORD_KINDS)
    assert all(len(s) == 5 and len(s.image_paths) == 6 for s in shared_sequences)


def test_every_sequence_is_tagged_with_its_kind(shared_sequences) -> None:
    kinds = {s.name: s.kind for s in shared_sequences}
    assert {kinds[n] for n in HPATCHES_SHARED} == {"viewpoint"}
    assert kinds["bark"] == kinds["boat"] == "rotation-zoom"
    assert kinds["graf"] == kinds["wall"] == "viewpoint"
    assert kinds["bikes"] == kinds["trees"] == "blur"
    assert (kinds["leuven"], kinds["ubc"]) == ("light", "JPEG")


def test_images_read_as_bgr_including_grey_pgm(shared_sequences) -> None:
    boat = next(s for s in shared_sequences if s.name == "boat")
    assert boat.image_paths[0].suffix == ".pgm"
    image = boat.read_image(0)
    assert image.dtype == np.uint8 and image.shape == (680, 850, 3)


def test_homographies_parse_including_exponent_notation(data_dir: Path) -> None:
    bark = read_homography(data_dir / "oxford_affine" / "images" / "bark" / "H1to2p")
    assert bark[2, 0] == pytest.approx(4.083733373964227e-6) and bark[2, 2] == 1.0
    ubc = load_oxford(data_dir / "oxford_affine" / "images", ["ubc"])[0]
    assert all(np.array_equal(h, np.eye(3)) for h in ubc.homographies)


def test_ground_truth_maps_image_one_into_image_n(shared_sequences) -> None:
    """The homographies are reference -> target: corners of image 1 of a zoom sequence
    shrink towards the centre of image 2 (the zoom is out), never the other way round."""
    boat = next(s for s in shared_sequences if s.name == "boat")
    corners = np.array([[0, 0], [849, 0], [0, 679], [849, 679]], np.float64)
    warped = metrics.warp_points(corners, boat.homographies[4])
    assert np.ptp(warped[:, 0]) < 0.6 * np.ptp(corners[:, 0])


def _hpatches_layout(root: Path, source: Path, names: list[str]) -> None:
    for name in names:
        folder = root / "release" / name
        folder.mkdir(parents=True)
        for entry in source.iterdir():
            os.symlink(entry, folder / entry.name)


def test_hpatches_layout_split_and_high_resolution_exclusion(tmp_path: Path, data_dir: Path) -> None:
    source = data_dir / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill"
    _hpatches_layout(tmp_path, source, ["i_fake", "v_fake", HPATCHES_HIGH_RESOLUTION[0], "notaseq"])
    sequences = load_hpatches(tmp_path)
    assert [(s.name, s.kind) for s in sequences] == [("i_fake", "light"), ("v_fake", "viewpoint")]
    assert len(load_dataset("hpatches", tmp_path, all_hpatches=True)) == 3
    assert [s.name for s in load_hpatches(tmp_path, ["v_fake"])] == ["v_fake"]


def test_incomplete_sequence_is_an_error_naming_the_missing_files(tmp_path: Path, data_dir: Path) -> None:
    source = data_dir / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill"
    _hpatches_layout(tmp_path, source, ["v_broken"])
    (tmp_path / "release" / "v_broken" / "4.ppm").unlink()
    with pytest.raises(Error, match="4.ppm"):
        load_hpatches(tmp_path)


def test_bad_input_is_reported(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "H_bad").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(Error, match="6 numbers"):
        read_homography(tmp_path / "H_bad")
    with pytest.raises(Error, match="not a directory"):
        load_oxford(tmp_path / "missing")
    with pytest.raises(Error, match="no Oxford sequence"):
        load_oxford(tmp_path)
    with pytest.raises(Error, match="nosuch"):
        load_shared(data_dir, ["nosuch"])
    with pytest.raises(Error, match="hpatches, oxford, shared"):
        load_dataset("kitti", data_dir)
    with pytest.raises(Error, match="--root"):
        load_dataset("oxford", None)
