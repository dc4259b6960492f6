"""cvdeep.eval.datasets on the real sequences in ../shared/data (and layouts built from them)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeep import Error
from cvdeep.eval import metrics
from cvdeep.eval.datasets import (
    HPATCHES_HIGH_RESOLUTION,
    OXFORD_KINDS,
    WARPED_MAX_SIDE,
    load_dataset,
    load_hpatches,
    load_oxford,
    load_shared,
    load_warped,
    read_homography,
)
from cvdeep.eval.runner import _warped_options, add_bench_arguments

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
    with pytest.raises(Error, match="hpatches, oxford, shared, warped"):
        load_dataset("kitti", data_dir)
    with pytest.raises(Error, match="--root"):
        load_dataset("oxford", None)


@pytest.fixture(scope="module")
def warped(shared: Path):
    return load_warped(shared / "train_images", photos=3, seed=5)


def test_warped_sequences_are_photos_and_their_deterministic_warps(warped, shared: Path) -> None:
    assert len(warped) == 3 and all(s.kind == "synthetic" and s.dataset == "warped" and len(s) == 5 for s in warped)
    again = load_warped(shared / "train_images", [warped[1].name], photos=3, seed=5)[0]
    assert all(np.array_equal(a, b) for a, b in zip(warped[1].homographies, again.homographies))
    assert np.array_equal(warped[1].read_image(4), again.read_image(4))
    other_seed = load_warped(shared / "train_images", [warped[1].name], photos=3, seed=6)[0]
    assert not np.allclose(other_seed.homographies[0], warped[1].homographies[0])
    for seq in warped:
        photo = seq.read_image(0)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and max(photo.shape[:2]) <= WARPED_MAX_SIDE
        assert seq.read_image(5).shape == photo.shape
    small = load_warped(shared / "train_images", [warped[0].name], photos=3, seed=5, max_side=200)[0]
    assert max(small.read_image(3).shape[:2]) == 200


def test_warped_ground_truth_maps_the_photo_onto_each_warp(warped) -> None:
    """SIFT matches of image 1 and image k agree with H_1_k to a few pixels (an inverted or
    misscaled homography would leave almost none within 3 px; a strength-1 warp keeps 25-90 %)."""
    sift = cv2.SIFT_create(1000)
    matcher = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    for seq in warped:
        keypoints, descriptors = sift.detectAndCompute(seq.read_image(0), None)
        for k in (1, 5):
            target_keypoints, target_descriptors = sift.detectAndCompute(seq.read_image(k), None)
            matches = matcher.match(descriptors, target_descriptors)
            source = np.array([keypoints[m.queryIdx].pt for m in matches])
            target = np.array([target_keypoints[m.trainIdx].pt for m in matches])
            errors = np.linalg.norm(metrics.warp_points(source, seq.homographies[k - 1]) - target, axis=1)
            assert np.mean(errors < 3.0) > 0.15, (seq.name, k)


def test_warp_strength_grows_along_a_sequence(warped) -> None:
    """Image 6 moves the photo's corners further than image 2 (strength 1 against 0.2)."""
    def displacement(seq, k: int) -> float:
        height, width = seq.read_image(0).shape[:2]
        corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], np.float64)
        return float(np.linalg.norm(metrics.warp_points(corners, seq.homographies[k]) - corners, axis=1).mean())

    assert np.mean([displacement(s, 4) for s in warped]) > 2 * np.mean([displacement(s, 0) for s in warped])


def test_warped_bad_input_is_reported(tmp_path: Path, shared: Path) -> None:
    with pytest.raises(Error, match="positive integer"):
        load_warped(shared / "train_images", photos=0)
    with pytest.raises(Error, match="max_side"):
        load_warped(shared / "train_images", max_side=8)
    with pytest.raises(Error, match="no image file"):
        load_warped(tmp_path)
    with pytest.raises(Error, match="nosuch"):
        load_warped(shared / "train_images", ["nosuch"], photos=2)
    with pytest.raises(Error, match="min_side"):
        load_warped(shared / "train_images", min_side=-1)


def test_warped_min_side_keeps_only_large_photos(tmp_path: Path) -> None:
    """``min_side`` chooses among the photos at least that large; the CLI's --warped-* options
    reach ``load_warped``; none large enough is an error."""
    rng = np.random.default_rng(0)
    for name, shape in (("a", (300, 400)), ("b", (600, 900)), ("c", (200, 250)), ("d", (820, 500))):
        cv2.imwrite(str(tmp_path / f"{name}.png"), rng.integers(0, 255, shape + (3,), dtype=np.uint8))
    assert [s.name for s in load_warped(tmp_path, photos=10, min_side=500)] == ["b", "d"]
    sequences = load_dataset("warped", tmp_path, warped={"photos": 1, "min_side": 500, "max_side": 300})
    assert [s.name for s in sequences] == ["b"] and max(sequences[0].read_image(0).shape[:2]) == 300
    with pytest.raises(Error, match="min_side"):
        load_warped(tmp_path, min_side=1000)
    parser = add_bench_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--dataset", "warped", "--root", str(tmp_path), "--warped-min-side", "500",
                              "--warped-photos", "1"])
    assert _warped_options(args) == {"photos": 1, "min_side": 500}
    assert _warped_options(parser.parse_args(["--warped-min-side", "500"])) == {}  # not the warped dataset
