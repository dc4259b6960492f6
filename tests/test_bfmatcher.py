"""cvdeep.BFMatcher against cv2.BFMatcher on real descriptors (SIFT, ORB of the shared images)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import cvdeep
from cvdeep.matching.bf import _smallest_columns


@pytest.fixture(scope="module")
def sift_pair(graf_pair) -> tuple[np.ndarray, np.ndarray]:
    sift = cv2.SIFT_create(nfeatures=1200)
    gray = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in graf_pair[:2]]
    return tuple(sift.detectAndCompute(g, None)[1] for g in gray)


@pytest.fixture(scope="module")
def orb_pair(churchill_pair) -> tuple[np.ndarray, np.ndarray]:
    orb = cv2.ORB_create(nfeatures=800)
    gray = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in churchill_pair[:2]]
    return tuple(orb.detectAndCompute(g, None)[1] for g in gray)


def _key(m: cv2.DMatch) -> tuple[int, int, int]:
    return m.queryIdx, m.trainIdx, m.imgIdx


def _assert_same(ours, theirs, nested: bool = True) -> None:
    """Same matches in the same order; where they differ, only by an exact distance tie."""
    ours, theirs = (list(ours), list(theirs)) if nested else ([ours], [theirs])
    assert len(ours) == len(theirs)
    ties = 0
    for row_ours, row_theirs in zip(ours, theirs):
        assert all(isinstance(m, cv2.DMatch) for m in row_ours)
        assert [m.queryIdx for m in row_ours] == [m.queryIdx for m in row_theirs]
        np.testing.assert_allclose([m.distance for m in row_ours], [m.distance for m in row_theirs], rtol=1e-6)
        for a, b in zip(row_ours, row_theirs):
            if _key(a) != _key(b):
                assert a.distance == b.distance, (_key(a), _key(b), a.distance, b.distance)
                ties += 1
    assert ties <= max(2, sum(len(r) for r in ours) // 100)


@pytest.mark.parametrize("norm", [cv2.NORM_L2, cv2.NORM_L2SQR, cv2.NORM_L1])
def test_knn_match_float_norms(sift_pair, norm: int) -> None:
    d1, d2 = sift_pair
    ours = cvdeep.BFMatcher(norm).knnMatch(d1, d2, k=2)
    _assert_same(ours, cv2.BFMatcher(norm).knnMatch(d1, d2, k=2))


def test_match_cross_check_and_match_mutual(sift_pair) -> None:
    d1, d2 = sift_pair
    ours = cvdeep.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2)
    theirs = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2)
    _assert_same(ours, theirs, nested=False)
    idx1, idx2 = cvdeep.BFMatcher().match_mutual(d1, d2)
    assert idx1.tolist() == [m.queryIdx for m in ours] and idx2.tolist() == [m.trainIdx for m in ours]
    r1, r2 = cvdeep.BFMatcher().match_mutual(d1, d2, ratio=0.8)
    pairs = set(zip(idx1.tolist(), idx2.tolist()))
    assert 0 < len(r1) < len(idx1) and set(zip(r1.tolist(), r2.tolist())) <= pairs
    knn = cv2.BFMatcher().knnMatch(d1, d2, k=2)
    ratio_ok = {(m.queryIdx, m.trainIdx) for m, n in knn if m.distance < 0.8 * n.distance}
    assert set(zip(r1.tolist(), r2.tolist())) == ratio_ok & pairs


def test_short_lists_masks_and_compact_result(sift_pair) -> None:
    d1, d2 = sift_pair[0][:300], sift_pair[1][:3]
    _assert_same(cvdeep.BFMatcher().knnMatch(d1, d2, k=5), cv2.BFMatcher().knnMatch(d1, d2, k=5))
    d2 = sift_pair[1][:400]
    rng = np.random.default_rng(0)
    mask = (rng.random((len(d1), len(d2))) > 0.3).astype(np.uint8)
    mask[5] = 0
    for compact in (False, True):
        ours = cvdeep.BFMatcher().knnMatch(d1, d2, 3, mask, compact)
        _assert_same(ours, cv2.BFMatcher().knnMatch(d1, d2, 3, mask, compact))
    _assert_same(cvdeep.BFMatcher().match(d1, d2, mask), cv2.BFMatcher().match(d1, d2, mask), nested=False)


def test_radius_match(sift_pair) -> None:
    d1, d2 = sift_pair[0][:400], sift_pair[1]
    for compact in (False, True):
        ours = cvdeep.BFMatcher().radiusMatch(d1, d2, 250.0, compactResult=compact)
        theirs = cv2.BFMatcher().radiusMatch(d1, d2, 250.0, compactResult=compact)
        # OpenCV 5.0 moves empty rows to the end instead of removing them (documented in bf.py).
        _assert_same(ours, [row for row in theirs if row] if compact else theirs)
    assert sum(len(r) for r in ours) > 0


def test_train_collection_with_image_indices(sift_pair) -> None:
    d1, d2 = sift_pair
    parts = [d2[:500], d2[500:700], d2[700:]]
    ours, theirs = cvdeep.BFMatcher_create(cv2.NORM_L2), cv2.BFMatcher_create(cv2.NORM_L2)
    assert ours.empty()
    for matcher in (ours, theirs):
        matcher.add(parts[:2])
        matcher.add(parts[2:])
        matcher.train()
    assert not ours.empty() and len(ours.getTrainDescriptors()) == 3
    assert all(np.array_equal(a, b) for a, b in zip(ours.getTrainDescriptors(), parts))
    _assert_same(ours.knnMatch(d1, k=2), theirs.knnMatch(d1, k=2))
    _assert_same(ours.match(d1), theirs.match(d1), nested=False)
    assert {m.imgIdx for m in ours.match(d1)} == {0, 1, 2}
    masks = [np.ones((len(d1), len(p)), np.uint8) for p in parts]
    masks[1][:] = 0
    _assert_same(ours.knnMatch(d1, 2, masks), theirs.knnMatch(d1, 2, masks))
    _assert_same(ours.radiusMatch(d1, 200.0, masks), theirs.radiusMatch(d1, 200.0, masks))
    ours.clear()
    assert ours.empty() and ours.getTrainDescriptors() == () and ours.match(d1) == ()


def test_hamming_on_orb(orb_pair) -> None:
    d1, d2 = orb_pair
    for cross in (False, True):
        ours = cvdeep.BFMatcher(cv2.NORM_HAMMING, cross).match(d1, d2)
        _assert_same(ours, cv2.BFMatcher(cv2.NORM_HAMMING, cross).match(d1, d2), nested=False)
    _assert_same(
        cvdeep.BFMatcher(cv2.NORM_HAMMING).knnMatch(d1, d2, k=3), cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(d1, d2, k=3)
    )
    _assert_same(
        cvdeep.BFMatcher(cv2.NORM_HAMMING).radiusMatch(d1, d2, 40),
        cv2.BFMatcher(cv2.NORM_HAMMING).radiusMatch(d1, d2, 40),
    )


@pytest.mark.parametrize("width", [32, 61, 1])  # ORB / BRIEF, AKAZE's MLDB (not a multiple of 8 bytes), one byte
def test_hamming_distances_equal_opencv_exactly(width: int) -> None:
    """Every query-train Hamming distance (k-NN over the whole train set) equals cv2.BFMatcher's and
    the bit count of the XOR, to the last bit, on random rows and on rows at distance 0 and 8 * width."""
    rng = np.random.default_rng(width)
    query = rng.integers(0, 256, size=(70, width), dtype=np.uint8)
    train = np.concatenate([rng.integers(0, 256, size=(50, width), dtype=np.uint8), query[:3], ~query[3:5]])
    expected = np.unpackbits(query[:, None, :] ^ train[None, :, :], axis=2).sum(axis=2)
    ours = cvdeep.BFMatcher(cv2.NORM_HAMMING).knnMatch(query, train, k=len(train))
    theirs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query, train, k=len(train))
    for row, (mine, opencv) in enumerate(zip(ours, theirs)):
        assert [m.distance for m in mine] == [m.distance for m in opencv] == sorted(expected[row].tolist())
        assert all(m.distance == expected[row, m.trainIdx] for m in mine)
    assert ours[2][0].distance == 0 and ours[3][-1].distance == ours[4][-1].distance == 8 * width


def test_k_smallest_selection_equals_a_stable_sort() -> None:
    """The generic path's top-k (partition, then sort only the candidates) picks what a stable sort's
    first k columns hold: ascending, lower column first among ties, non-finite entries last."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 120))
        k = int(rng.integers(0, m + 1))
        dist = rng.integers(0, int(rng.integers(1, 6)), size=(n, m)).astype(np.float32)  # many ties
        dist[rng.random((n, m)) < 0.2] = np.inf
        dist[rng.random((n, m)) < 0.1] = np.nan
        want = np.argsort(np.where(np.isnan(dist), np.inf, dist), axis=1, kind="stable")[:, :k]
        got = _smallest_columns(dist, k)
        finite = np.isfinite(np.take_along_axis(dist, want, axis=1))
        assert got.shape == (n, k)
        np.testing.assert_array_equal(got[finite], want[finite])
        assert not np.isfinite(np.take_along_axis(dist, got, axis=1)[~finite]).any()


def test_uint8_descriptors_under_l2_and_empty_inputs(orb_pair) -> None:
    d1, d2 = orb_pair
    _assert_same(cvdeep.BFMatcher().knnMatch(d1, d2, k=2), cv2.BFMatcher().knnMatch(d1, d2, k=2))
    empty = np.zeros((0, 32), np.uint8)
    assert cvdeep.BFMatcher().match(empty, d2) == cv2.BFMatcher().match(empty, d2) == ()
    assert cvdeep.BFMatcher().knnMatch(d1, empty, k=2) == cv2.BFMatcher().knnMatch(d1, empty, k=2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: cvdeep.BFMatcher(cv2.NORM_HAMMING2),
        lambda: cvdeep.BFMatcher().match(np.zeros((3, 8), np.float64), np.zeros((3, 8), np.float64)),
        lambda: cvdeep.BFMatcher().match(np.zeros((3, 8), np.float32), np.zeros((3, 9), np.float32)),
        lambda: cvdeep.BFMatcher().match(np.zeros((3, 8), np.float32), np.zeros((3, 8), np.uint8)),
        lambda: cvdeep.BFMatcher().match(np.zeros((3, 8, 1), np.float32), np.zeros((3, 8), np.float32)),
        lambda: cvdeep.BFMatcher().match([[1.0]], np.zeros((3, 8), np.float32)),
        lambda: cvdeep.BFMatcher(cv2.NORM_HAMMING).match(np.zeros((3, 8), np.float32), np.zeros((3, 8), np.float32)),
        lambda: cvdeep.BFMatcher().knnMatch(np.ones((3, 8), np.float32), np.ones((3, 8), np.float32), k=0),
        lambda: cvdeep.BFMatcher(crossCheck=True).knnMatch(np.ones((3, 8), np.float32), np.ones((3, 8), np.float32),
                                                           k=2),
        lambda: cvdeep.BFMatcher().radiusMatch(np.ones((3, 8), np.float32), np.ones((3, 8), np.float32), 0),
        lambda: cvdeep.BFMatcher().match(np.ones((3, 8), np.float32), np.ones((4, 8), np.float32),
                                         np.ones((4, 3), np.uint8)),
        lambda: cvdeep.BFMatcher().add(np.ones((3, 8), np.float32)),
        lambda: cvdeep.BFMatcher().match_mutual(np.ones((3, 8), np.float32), np.ones((3, 8), np.float32), ratio=1.5),
    ],
)
def test_bad_input_raises_cvdeep_error(call) -> None:
    with pytest.raises(cvdeep.Error):
        call()


# --- None and empty descriptors as cv2 takes them; the train collection; pickling ------------------

_RNG = np.random.default_rng(7)
_D = _RNG.random((20, 32), dtype=np.float32)  # one image's descriptors
_E = np.zeros((0, 32), np.float32)  # an image without keypoints, as an array


def _structure(result):
    """A matcher's result as plain data: (query, train, image) per match, nested as returned."""
    if isinstance(result, cv2.DMatch):
        return _key(result)
    return tuple(_structure(item) for item in result)


# (method, positional arguments, keyword arguments): every call form with None or empty descriptors
_EXPLICIT_TRAIN = [
    (method, (query, train, *extra), kwargs)
    for query, train in [(None, _D), (_E, _D), (None, None), (_E, _E), (None, _E), (_D, _E)]
    for method, extra, kwargs in [("match", (), {}), ("knnMatch", (), {"k": 2}),
                                  ("knnMatch", (), {"k": 2, "compactResult": True}), ("radiusMatch", (1.0,), {})]
]


@pytest.mark.parametrize("method, args, kwargs", _EXPLICIT_TRAIN)
def test_none_and_empty_descriptors_give_what_cv2_gives(method: str, args: tuple, kwargs: dict) -> None:
    theirs = getattr(cv2.BFMatcher(), method)(*args, **kwargs)
    ours = getattr(cvdeep.BFMatcher(), method)(*args, **kwargs)
    assert _structure(ours) == _structure(theirs)


@pytest.mark.parametrize("train", [[_D], [], [_E], [_E, _D]], ids=["one image", "none", "one empty", "empty+one"])
@pytest.mark.parametrize("query", [None, _E, _D], ids=["None", "empty", "rows"])
@pytest.mark.parametrize("method, extra, kwargs", [("match", (), {}), ("knnMatch", (), {"k": 2}),
                                                   ("radiusMatch", (1.0,), {})])
def test_train_collection_with_none_and_empty_descriptors(train, query, method, extra, kwargs) -> None:
    theirs, ours = cv2.BFMatcher(), cvdeep.BFMatcher()
    shift = 0
    if len(train) == 2 and query is _D:
        # cv2 misnumbers matches after an empty first image (imgIdx 0, even trainIdx past the end):
        # the reference is cv2 on image 1 alone, numbered as image 1
        theirs.add(train[1:])
        shift = 1
    else:
        theirs.add(train)
    ours.add(train)
    expected = _structure(getattr(theirs, method)(query, *extra, **kwargs))
    assert _structure(getattr(ours, method)(query, *extra, **kwargs)) == _shift_images(expected, shift)


def _shift_images(structure, shift: int):
    if len(structure) == 3 and all(isinstance(v, int) for v in structure):
        return structure[0], structure[1], structure[2] + shift
    return tuple(_shift_images(item, shift) for item in structure)


def test_none_train_descriptors_are_an_empty_set_where_cv2_asserts() -> None:
    """detectAndCompute gives ``((), None)`` for an image without keypoints; cv2.BFMatcher asserts on such a
    train side (descriptor type mismatch), cvdeep.BFMatcher answers as cv2 does for an empty train array."""
    for method, extra, kwargs in [("match", (), {}), ("knnMatch", (), {"k": 2}), ("radiusMatch", (1.0,), {})]:
        with pytest.raises(cv2.error):
            getattr(cv2.BFMatcher(), method)(_D, None, *extra, **kwargs)
        expected = getattr(cv2.BFMatcher(), method)(_D, _E, *extra, **kwargs)
        assert _structure(getattr(cvdeep.BFMatcher(), method)(_D, None, *extra, **kwargs)) == _structure(expected)
    assert cvdeep.BFMatcher().knnMatch(_D, None, 2) == ((),) * len(_D)  # positional k, as cv2 takes it
    assert cvdeep.BFMatcher(crossCheck=True).match(None, _D) == cvdeep.BFMatcher(crossCheck=True).match(_D, None) == ()
    idx1, idx2 = cvdeep.BFMatcher().match_mutual(None, _D)
    assert idx1.shape == idx2.shape == (0,)


def test_a_train_collection_has_one_width_and_one_dtype() -> None:
    wide, narrow = _RNG.random((200, 128), dtype=np.float32), _RNG.random((200, 64), dtype=np.float32)
    opencv = cv2.BFMatcher()
    opencv.add([wide, narrow])  # OpenCV takes the mixture and asserts only at the first match
    with pytest.raises(cv2.error):
        opencv.match(wide)
    matcher = cvdeep.BFMatcher()
    with pytest.raises(cvdeep.Error, match=r"one width and one dtype.*float32 \(200, 128\).*float32 \(200, 64\)"):
        matcher.add([wide, narrow])
    assert matcher.empty()  # nothing of a refused call is kept
    matcher.add([wide])
    with pytest.raises(cvdeep.Error, match=r"\(200, 64\)"):
        matcher.add([narrow])
    with pytest.raises(cvdeep.Error, match="uint8"):
        matcher.add([np.zeros((5, 128), np.uint8)])
    matcher.add([None, np.zeros((0, 0), np.float32)])  # images without descriptors carry no width
    matcher.add(None)
    matcher.train()
    assert len(matcher.getTrainDescriptors()) == 3
    assert [m.imgIdx for m in matcher.match(wide[:5])] == [0] * 5


def test_bfmatcher_pickles_and_copies_with_its_train_set() -> None:
    import copy
    import pickle

    first, second = _RNG.random((300, 128), dtype=np.float32), _RNG.random((200, 128), dtype=np.float32)
    matcher = cvdeep.BFMatcher(cv2.NORM_L1)
    matcher.add([first, second])
    matcher.train()
    query = _RNG.random((40, 128), dtype=np.float32)
    expected = _structure(matcher.knnMatch(query, k=2))
    data = pickle.dumps(matcher)
    assert len(data) < 1.2 * (first.nbytes + second.nbytes)  # the stacked copy made by train() stays behind
    for other in (pickle.loads(data), copy.deepcopy(matcher)):
        assert (other.normType, other.crossCheck) == (cv2.NORM_L1, False)
        assert all(np.array_equal(a, b) for a, b in zip(other.getTrainDescriptors(), (first, second)))
        assert _structure(other.knnMatch(query, k=2)) == expected
