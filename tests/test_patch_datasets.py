"""cvdeep.train.patch_datasets on small PhotoTour and HPatches folders built here in those layouts."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import cvdeep
from cvdeep.train import patch_datasets as pd


def _patch(index: int, size: int) -> np.ndarray:
    """A patch that says which one it is: a gradient plus an index code in the first row."""
    rng = np.random.default_rng(index)
    patch = rng.integers(0, 256, (size, size), dtype=np.uint8)
    patch[0, 0], patch[0, 1] = index % 256, index // 256
    return patch


def _phototour(folder: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """A PhotoTour subset folder with ``count`` patches: 3D point k // 3 (the last point may have fewer)."""
    folder.mkdir(parents=True)
    patches = np.stack([_patch(k, 64) for k in range(count)])
    point_ids = np.arange(count) // 3 + 1000
    per_file = 256
    for number in range(-(-count // per_file)):
        sheet = np.zeros((1024, 1024), np.uint8)
        for slot in range(per_file):
            k = number * per_file + slot
            if k >= count:
                break
            row, col = divmod(slot, 16)
            sheet[row * 64:(row + 1) * 64, col * 64:(col + 1) * 64] = patches[k]
        assert cv2.imwrite(str(folder / f"patches{number:04d}.bmp"), sheet)
    (folder / "info.txt").write_text("".join(f"{pid} 0\n" for pid in point_ids))
    lines = [f"{a} {point_ids[a]} 0 {b} {point_ids[b]} 0 0" for a, b in ((0, 1), (0, 3), (4, 5), (7, 299), (297, 298))]
    (folder / "m50_5_5_0.txt").write_text("\n".join(lines) + "\n")
    return patches, point_ids


@pytest.fixture
def phototour(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    patches, point_ids = _phototour(tmp_path / "liberty", 301)  # two bitmaps, the second barely used
    return tmp_path / "liberty", patches, point_ids


def test_read_phototour_returns_every_patch_in_order(phototour):
    folder, patches, point_ids = phototour
    read, ids = pd.read_phototour(folder)
    assert read.shape == (301, 64, 64) and read.dtype == np.uint8
    np.testing.assert_array_equal(read, patches)
    np.testing.assert_array_equal(ids, point_ids)


def test_read_phototour_pairs_labels_by_point_id(phototour):
    folder, _, _ = phototour
    pairs, labels = pd.read_phototour_pairs(folder, "m50_5_5_0.txt")
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 3], [4, 5], [7, 299], [297, 298]])
    np.testing.assert_array_equal(labels, [True, False, True, False, True])
    same, _ = pd.read_phototour_pairs(folder, folder / "m50_5_5_0.txt")
    np.testing.assert_array_equal(same, pairs)


def test_phototour_errors(phototour, tmp_path):
    folder = phototour[0]
    (folder / "info.txt").write_text("".join(f"{pid} 0\n" for pid in np.arange(600)))
    with pytest.raises(cvdeep.Error, match="at most 512 patches; info.txt lists 600"):
        pd.read_phototour(folder)
    with pytest.raises(cvdeep.Error, match="no info.txt"):
        pd.read_phototour(tmp_path)
    with pytest.raises(cvdeep.Error, match="m50_missing"):
        pd.read_phototour_pairs(folder, "m50_missing.txt")


def test_phototour_patch_pairs_group_views_of_one_point(phototour):
    folder, patches, point_ids = phototour
    pairs = pd.phototour_patch_pairs(*pd.read_phototour(folder), patch_size=32)
    # 100 points with 3 patches -> one pair each (the third is left over); point 1100 has one patch
    assert pairs.patches.shape == (100, 2, 32, 32) and pairs.num_points == 100
    np.testing.assert_array_equal(pairs.point_id, np.arange(100) + 1000)
    expected = cv2.resize(patches[3], (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(pairs.patches[1, 0], expected)
    triples = pd.phototour_patch_pairs(patches, point_ids, patch_size=64, views=3)
    np.testing.assert_array_equal(triples.patches[5], patches[15:18])


def _hpatches(root: Path, counts: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """An hpatches-release folder; patch i of file t of sequence s is _patch(seed)."""
    truth = {}
    for number, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        truth[name] = {}
        for t, kind in enumerate(pd.HPATCHES_TYPES):
            stack = np.stack([_patch(10000 * number + 100 * t + i, 65) for i in range(count)])
            truth[name][kind] = stack
            assert cv2.imwrite(str(root / name / f"{kind}.png"), stack.reshape(count * 65, 65))
    return truth


def test_read_hpatches_patches_splits_the_stacks(tmp_path):
    root = tmp_path / "hpatches-release"
    truth = _hpatches(root, {"i_ajuntament": 4, "v_boat": 7})
    (root / "not_a_sequence").mkdir()
    data = pd.read_hpatches_patches(root)
    assert list(data) == ["i_ajuntament", "v_boat"]
    for name in truth:
        assert set(data[name]) == set(pd.HPATCHES_TYPES)
        for kind in pd.HPATCHES_TYPES:
            np.testing.assert_array_equal(data[name][kind], truth[name][kind])
    only = pd.read_hpatches_patches(root, ["v_boat"])
    assert list(only) == ["v_boat"]


def test_hpatches_errors(tmp_path):
    root = tmp_path / "hpatches-release"
    _hpatches(root, {"v_a": 3, "v_b": 2})
    with pytest.raises(cvdeep.Error, match="v_missing"):
        pd.read_hpatches_patches(root, ["v_missing"])
    cv2.imwrite(str(root / "v_b" / "h3.png"), np.zeros((65 * 3, 65), np.uint8))
    with pytest.raises(cvdeep.Error, match="different numbers of patches"):
        pd.read_hpatches_patches(root, ["v_b"])
    cv2.imwrite(str(root / "v_b" / "h3.png"), np.zeros((100, 65), np.uint8))
    with pytest.raises(cvdeep.Error, match="multiple of 65"):
        pd.read_hpatches_patches(root, ["v_b"])
    (root / "v_a" / "t5.png").unlink()
    with pytest.raises(cvdeep.Error, match="t5.png"):
        pd.read_hpatches_patches(root, ["v_a"])


def test_hpatches_patch_pairs_reference_against_a_difficulty(tmp_path):
    root = tmp_path / "hpatches-release"
    truth = _hpatches(root, {"i_x": 3, "v_y": 5})
    data = pd.read_hpatches_patches(root)
    hard = pd.hpatches_patch_pairs(data, "hard", patch_size=65)
    assert hard.patches.shape == (8, 6, 65, 65)
    np.testing.assert_array_equal(hard.point_id, np.arange(8))
    np.testing.assert_array_equal(hard.image_id, [0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(hard.patches[4, 0], truth["v_y"]["ref"][1])
    np.testing.assert_array_equal(hard.patches[4, 3], truth["v_y"]["h3"][1])
    pair = pd.hpatches_patch_pairs(data, views=("ref", "t2"), patch_size=32)
    assert pair.patches.shape == (8, 2, 32, 32)
    np.testing.assert_array_equal(pair.patches[0, 1], cv2.resize(truth["i_x"]["t2"][0], (32, 32),
                                                                 interpolation=cv2.INTER_AREA))
    with pytest.raises(cvdeep.Error, match="difficulty"):
        pd.hpatches_patch_pairs(data, "medium")
