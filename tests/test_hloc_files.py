"""cvdeep's pairs, features and matches files read by hloc's own reader functions (tests/hloc_readers.py)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import cvdeep
from cvdeep.apps.extract import extract_to_h5
from cvdeep.apps.match_pairs import exhaustive_pairs, match_to_h5, pair_name, retrieval_pairs, sequential_pairs
from cvdeep.cli import main
from cvdeep.matching.pairs import ImageFeatures, PairMatcher
from cvdeep.models import get_model
from cvdeep.retrieval import IndexSettings, build_index
from cvdeep.weights import is_local
from test_cli import make_image_folder, one_error_line

hloc = pytest.importorskip("hloc_readers", reason="hloc's readers need h5py")
NAMES = ["a.png", "b.jpg", "sub/c.png"]


@pytest.fixture
def features_file(tmp_path: Path, data_dir: Path) -> Path:
    folder = make_image_folder(tmp_path, data_dir)
    out = tmp_path / "features.h5"
    extract_to_h5(folder, out, "sift", nfeatures=200, max_size=200, progress=False)
    return out


def test_pairs_files_parse_with_hloc(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_image_folder(tmp_path, data_dir)
    out = tmp_path / "pairs.txt"
    assert main(["pairs", str(folder), "--out", str(out), "--quiet"]) == 0
    assert "3 pairs (exhaustive)" in capsys.readouterr().out
    assert hloc.parse_retrieval(out) == {"a.png": ["b.jpg", "sub/c.png"], "b.jpg": ["sub/c.png"]}
    assert main(["pairs", str(folder), "--mode", "sequential", "--window", "1", "--out", str(out), "--quiet"]) == 0
    assert hloc.parse_retrieval(out) == {"a.png": ["b.jpg"], "b.jpg": ["sub/c.png"]}
    assert sequential_pairs(list("abcd"), 2) == [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert len(exhaustive_pairs([str(i) for i in range(10)])) == 45

    index = tmp_path / "index"
    build_index(folder, index, IndexSettings("sift", 200, 200), progress=False)
    found = retrieval_pairs(index, num=1)
    assert {frozenset(pair) for pair in found} <= {frozenset(pair) for pair in exhaustive_pairs(NAMES)}
    assert {name for pair in found for name in pair} == set(NAMES) and len(found) == len(set(map(frozenset, found)))

    assert main(["pairs", "--mode", "retrieval", "--out", str(out)]) == 1
    one_error_line(capsys.readouterr(), "--index")
    with pytest.raises(cvdeep.Error, match="window"):
        sequential_pairs(NAMES, 0)


def test_features_read_by_hloc_in_opencv_pixel_centres(features_file: Path, data_dir: Path, tmp_path: Path) -> None:
    assert sorted(hloc.list_h5_names(features_file)) == NAMES
    keypoints, uncertainty = hloc.get_keypoints(features_file, "sub/c.png", return_uncertainty=True)
    assert keypoints.dtype == np.float32 and keypoints.ndim == 2 and keypoints.shape[1] == 2
    assert uncertainty == pytest.approx(320 / 200)  # one processed pixel in original pixels, as hloc's
    # pixel-centre origin (OpenCV's, and hloc's h5 files'): the keypoints are SIFT's own cv2.KeyPoint.pt
    folder = make_image_folder(tmp_path / "full", data_dir)
    out = tmp_path / "full.h5"
    extract_to_h5(folder, out, "sift", nfeatures=100, progress=False)
    image = cv2.imread(str(folder / "a.png"))
    expected = cv2.KeyPoint_convert(cv2.SIFT_create(100).detect(image, None))
    np.testing.assert_allclose(np.sort(hloc.get_keypoints(out, "a.png"), 0), np.sort(expected, 0), atol=1e-4)


def _from_file(store: object, name: str) -> ImageFeatures:
    group = store[name]  # type: ignore[index]
    points = group["keypoints"][()]
    keypoints = tuple(cv2.KeyPoint(float(x), float(y), 1.0) for x, y in points)
    return ImageFeatures(keypoints, group["descriptors"][()].T.copy(), points, tuple(group["image_size"][()]))


def test_matches_read_by_hloc_on_both_engines(features_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("ray")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.png b.jpg\nsub/c.png a.png\nb.jpg sub/c.png\nb.jpg a.png\n")  # the last one repeats the first
    local, on_ray = tmp_path / "local.h5", tmp_path / "ray.h5"
    assert match_to_h5(pairs, features_file, local, "ratio", progress=False) == (3, 0, {})
    assert main(["match", "--pairs", str(pairs), "--features-file", str(features_file), "--matcher", "ratio",
                 "--engine", "ray", "--workers", "2", "--out", str(on_ray), "--quiet"]) == 0
    assert "3 pairs matched, 0 already there" in capsys.readouterr().out
    matcher = PairMatcher("ratio", cv2.SIFT_create())
    with h5py.File(features_file, "r") as store, h5py.File(local, "r") as one, h5py.File(on_ray, "r") as two:
        assert sorted(hloc.list_h5_names(local)) == sorted(["a.png/b.jpg", "sub-c.png/a.png", "b.jpg/sub-c.png"])
        assert pair_name("sub/c.png", "a.png") == hloc.names_to_pair("sub/c.png", "a.png") == "sub-c.png/a.png"
        assert one.attrs["matcher"] == "ratio" and one.attrs["features"] == "sift"
        for name0, name1 in (("a.png", "b.jpg"), ("sub/c.png", "a.png"), ("b.jpg", "sub/c.png")):
            group = one[pair_name(name0, name1)]
            assert group["matches0"].dtype == np.int32 and group["matching_scores0"].dtype == np.float32
            assert group["matches0"].shape == (len(store[name0]["keypoints"]),)
            for dataset in ("matches0", "matching_scores0"):
                np.testing.assert_array_equal(group[dataset][()], two[pair_name(name0, name1)][dataset][()])
            matches, scores = hloc.get_matches(local, name0, name1)
            expected = matcher(_from_file(store, name0), _from_file(store, name1))
            assert len(matches) > 10
            assert sorted(map(tuple, matches.tolist())) == sorted(map(tuple, expected.tolist()))
            assert ((scores > 0) & (scores <= 1)).all()
            reversed_matches, _ = hloc.get_matches(local, name1, name0)  # hloc's find_pair, the other way round
            np.testing.assert_array_equal(reversed_matches, matches[:, ::-1])
    assert match_to_h5(pairs, features_file, local, "ratio", progress=False) == (0, 3, {})

    pairs.write_text("a.png missing.png\n")
    assert main(["match", "--pairs", str(pairs), "--features-file", str(features_file), "--out", str(local)]) == 1
    one_error_line(capsys.readouterr(), "missing.png", "does not hold")
    pairs.write_text("a.png b.jpg\n")
    assert main(["match", "--pairs", str(pairs), "--features-file", str(features_file), "--matcher", "lightglue",
                 "--out", str(tmp_path / "glue.h5")]) == 1
    one_error_line(capsys.readouterr(), "LightGlue has weights for")
    assert main(["match", "a.png"]) == 1
    one_error_line(capsys.readouterr(), "needs two images")
    pairs.write_text("a.png b.jpg sub/c.png\n")
    with pytest.raises(cvdeep.Error, match="line 1"):
        match_to_h5(pairs, features_file, local, "ratio", progress=False)


def test_lightglue_matches_by_default_for_aliked(tmp_path: Path, data_dir: Path) -> None:
    h5py = pytest.importorskip("h5py")
    for model in ("aliked-n16", "lightglue-aliked"):
        if not is_local(get_model(model)[1].weights):
            pytest.skip(f"{model} weights are not here (cvdeep weights fetch {model})")
    folder = make_image_folder(tmp_path, data_dir)
    features, matches, pairs = tmp_path / "aliked.h5", tmp_path / "matches.h5", tmp_path / "pairs.txt"
    extract_to_h5(folder, features, "aliked", nfeatures=256, progress=False)
    pairs.write_text("a.png b.jpg\n")
    assert match_to_h5(pairs, features, matches, progress=False) == (1, 0, {})
    with h5py.File(matches, "r") as store:
        assert store.attrs["matcher"] == "lightglue"
    found, scores = hloc.get_matches(matches, "a.png", "b.jpg")
    assert len(found) > 30 and ((scores > 0) & (scores <= 1)).all()
