"""Retrieval (``cvdeep.retrieval``, ``cvdeep retrieve index|query``) on a few real images with SIFT."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvdeep
from cvdeep.cli import main
from cvdeep.retrieval import (
    Database,
    Described,
    IndexSettings,
    build_index,
    create_feature,
    describe,
    open_index,
)

SEQUENCES = ("graf", "boat", "bikes", "leuven", "wall", "trees", "ubc")
SIDE = 320  # images are shrunk so their long side is this, to keep SIFT fast


def _small(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    scale = SIDE / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def oxford(data_dir: Path) -> Path:
    return data_dir / "oxford_affine" / "images"


@pytest.fixture(scope="module")
def collection(oxford: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Image 1 of seven Oxford sequences, in two sub-folders."""
    folder = tmp_path_factory.mktemp("collection")
    for index, name in enumerate(SEQUENCES):
        target = folder / ("a" if index % 2 else "b") / f"{name}.png"
        target.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(target), _small(next((oxford / name).glob("img1.*"))))
    return folder


def test_index_and_query_find_the_same_scene(collection, oxford, tmp_path, capsys):
    index = tmp_path / "index"
    assert main(["retrieve", "index", str(collection), "--index", str(index), "--features", "sift", "--nfeatures",
                 "500", "--quiet"]) == 0
    assert "7 images described, 0 already there" in capsys.readouterr().out
    assert main(["retrieve", "index", str(collection), "--index", str(index), "--features", "sift", "--nfeatures",
                 "500", "--quiet"]) == 0
    assert "0 images described, 7 already there" in capsys.readouterr().out
    assert main(["retrieve", "index", str(collection), "--index", str(index), "--features", "orb", "--quiet"]) == 1
    assert "other settings (features='sift', nfeatures=500)" in capsys.readouterr().err

    for name, other in (("graf", 2), ("boat", 3), ("bikes", 4)):
        query = tmp_path / f"{name}{other}.png"
        cv2.imwrite(str(query), _small(next((oxford / name).glob(f"img{other}.*"))))
        out_json, sheet = tmp_path / f"{name}.json", tmp_path / f"{name}.png"
        assert main(["retrieve", "query", str(query), "--index", str(index), "--top", "3", "--json", str(out_json),
                     "--sheet", str(sheet)]) == 0
        results = json.loads(out_json.read_text())["results"]
        assert Path(results[0]["image"]).stem == name, results[:3]
        assert results[0]["verified"] and not any(r["verified"] for r in results[1:]), results
        assert results[0]["inliers"] > 3 * max(r["inliers"] for r in results[1:]), results[:3]
        assert [r["rank"] for r in results] == list(range(1, 8))
        drawn = cv2.imread(str(sheet))
        assert drawn is not None and drawn.shape == (200 + 24, 5 * 200, 3), "query and 3 results in one row of 5"
        assert drawn[0, 200].tolist() == [60, 200, 60], "the verified first result is framed green"
    printed = capsys.readouterr().out
    assert "  1  " in printed and "inliers" in printed


def _shuffled_tiles(image: np.ndarray, tiles: int, seed: int) -> np.ndarray:
    """The image cut into tiles x tiles pieces put back in a random order: the same local features,
    no common geometry."""
    height, width = (image.shape[0] // tiles) * tiles, (image.shape[1] // tiles) * tiles
    th, tw = height // tiles, width // tiles
    pieces = [image[r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r in range(tiles) for c in range(tiles)]
    order = np.random.default_rng(seed).permutation(len(pieces))
    rows = [np.hstack([pieces[i] for i in order[r * tiles : (r + 1) * tiles]]) for r in range(tiles)]
    return np.vstack(rows)


def test_verification_demotes_a_planted_false_positive(oxford):
    sift = create_feature("sift", 600)
    query = _small(oxford / "boat" / "img1.pgm")
    images = {"boat2": _small(oxford / "boat" / "img2.pgm"), "planted": _shuffled_tiles(query, 6, 0),
              "graf": _small(oxford / "graf" / "img1.ppm"), "wall": _small(oxford / "wall" / "img1.ppm")}
    database = Database.from_described(list(images), [describe(sift, image) for image in images.values()],
                                       cv2.NORM_L2)
    described = describe(sift, query)
    by_votes = database.query(described, verify=0)
    assert [c.image for c in by_votes.candidates[:2]] == ["planted", "boat2"], by_votes.candidates
    assert all(c.inliers is None for c in by_votes.candidates)
    verified = database.query(described, verify=4)
    first, second = verified.candidates[:2]
    assert (first.image, second.image) == ("boat2", "planted"), verified.candidates
    assert first.inliers > 2 * second.inliers and second.votes > first.votes
    assert first.verified and not second.verified, "a few chance inliers do not pass the overlap test"
    assert [c.verified for c in verified.candidates] == [True, False, False, False]
    assert set(verified.seconds) == {"search", "verification"}


def test_votes_count_each_image_once_per_query_descriptor():
    # image 0 holds two copies of descriptor e0, image 1 one copy of e0 and one of e1
    e = np.eye(4, dtype=np.float32)
    database = Database(["a", "b"], [np.zeros((2, 2))] * 2, [e[[0, 0]], e[[0, 1]]], [(10, 10)] * 2, cv2.NORM_L2)
    assert database.votes(e[[0]], k=3).tolist() == [1, 1]
    assert database.votes(e[[0]], k=2).tolist() == [1, 0]  # the three e0 rows tie; lower rows first: 0, 1 (image a)
    assert database.votes(e[[1]], k=1).tolist() == [0, 1]
    assert database.votes(e[[0, 1]], k=1, exclude=0).tolist() == [0, 2]
    assert database.neighbours(e[[0]], k=5).tolist() == [[0, 1, 2, 3, -1]]


def test_binary_descriptors_search_by_hamming_distance():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (6, 32), dtype=np.uint8)
    database = Database(["x", "y", "z"], [np.zeros((2, 2))] * 3, [codes[0:2], codes[2:4], codes[4:6]],
                        [(8, 8)] * 3, cv2.NORM_HAMMING)
    noisy = codes[[3, 4]].copy()
    noisy[:, 0] ^= 1
    assert database.neighbours(noisy, k=1).ravel().tolist() == [3, 4]
    assert database.votes(noisy, k=1).tolist() == [0, 1, 1]


def test_saved_database_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    described = [Described(rng.random((n, 2), np.float32), rng.random((n, 8), np.float32), (30, 20)) for n in (3, 0, 5)]
    database = Database.from_described(["p", "q", "r"], described, cv2.NORM_L2, IndexSettings("aliked", 100, 640))
    database.save(tmp_path / "db.npz")
    loaded = Database.load(tmp_path / "db.npz")
    assert loaded.names == ["p", "q", "r"] and loaded.settings == IndexSettings("aliked", 100, 640)
    np.testing.assert_array_equal(loaded.descriptors, database.descriptors)
    np.testing.assert_array_equal(loaded.points[2], described[2].points)
    assert loaded.offsets.tolist() == [0, 3, 3, 8] and loaded.sizes[1] == (30, 20)


def test_faiss_gives_the_exact_neighbours_when_installed():
    pytest.importorskip("faiss")
    from cvdeep.retrieval import _faiss_knn

    rng = np.random.default_rng(2)
    base, query = rng.random((500, 16), np.float32), rng.random((40, 16), np.float32)
    exact = np.argsort(((query[:, None] - base[None]) ** 2).sum(axis=2), axis=1)[:, :5]
    np.testing.assert_array_equal(_faiss_knn(query, base, 5), exact)


def test_unfinished_or_missing_indexes_are_reported(collection, tmp_path):
    with pytest.raises(cvdeep.Error, match="not an index"):
        open_index(tmp_path / "nothing")
    build_index(collection, tmp_path / "index", IndexSettings("sift", 50, 160), progress=False)
    (tmp_path / "index" / "database.npz").unlink()
    with pytest.raises(cvdeep.Error, match="incomplete"):
        open_index(tmp_path / "index")
    with pytest.raises(cvdeep.Error, match="no images found"):
        build_index(tmp_path / "index" / "features", tmp_path / "other", progress=False)
