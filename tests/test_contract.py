"""The OpenCV Feature2D contract, side by side with cv2.SIFT on real images.

Runs against a real learned model (XFeat, the lightest shipped model); the contract
lives in one base class, so every model inherits what is checked here.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

import cvdeep

MODEL = "XFeat"


@pytest.fixture(scope="module")
def detector():
    return cvdeep.features.create(MODEL, nfeatures=1024)


@pytest.fixture(scope="module")
def sift():
    return cv2.SIFT_create(nfeatures=1024)


@pytest.fixture(scope="module")
def graf(graf_pair):
    img1, img2, _ = graf_pair
    return img1[:384, :512].copy(), img2[:384, :512].copy()


def test_factories_and_introspection(detector):
    factory = getattr(cvdeep, f"{MODEL}_create")
    cls = getattr(cvdeep, MODEL)
    assert isinstance(factory(), cls) and isinstance(cls.create(nfeatures=10), cls)
    assert detector.getDefaultName() == f"Feature2D.{MODEL}"
    assert detector.descriptorType() == cv2.CV_32F
    assert detector.defaultNorm() == cv2.NORM_L2
    assert detector.descriptorSize() > 0
    assert detector.empty() is False
    assert str(detector.device) == "cpu"


def test_detect_and_compute_types_match_sift(detector, sift, graf):
    image = graf[0]
    for det in (sift, detector):
        keypoints = det.detect(image, None)
        assert isinstance(keypoints, tuple) and len(keypoints) > 50
        assert all(isinstance(kp, cv2.KeyPoint) for kp in keypoints)
        keypoints, desc = det.detectAndCompute(image, None)
        assert isinstance(keypoints, tuple)
        assert isinstance(desc, np.ndarray) and desc.dtype == np.float32
        assert desc.shape == (len(keypoints), det.descriptorSize()) and desc.flags.c_contiguous
    keypoints, _ = detector.detectAndCompute(image, None)
    xy = cv2.KeyPoint_convert(keypoints)
    assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= image.shape[1] - 1
    assert xy[:, 1].min() >= 0 and xy[:, 1].max() <= image.shape[0] - 1
    assert all(kp.class_id == -1 and kp.size > 0 and kp.octave == 0 for kp in keypoints)
    assert all(kp.angle == -1 for kp in keypoints)  # XFeat estimates no orientation
    responses = np.array([kp.response for kp in keypoints])
    assert np.all(np.diff(responses) <= 0), "keypoints are sorted by response, strongest first"


def test_nfeatures_and_accessors(detector, graf):
    assert detector.getNFeatures() == 1024
    detector.setNFeatures(100)
    try:
        assert detector.getNFeatures() == 100
        assert len(detector.detect(graf[0])) == 100
    finally:
        detector.setNFeatures(1024)
    params = detector.getParams()
    assert params["nfeatures"] == 1024 and params["device"] == "auto"
    with pytest.raises(cvdeep.Error, match="unknown parameter"):
        detector.setParams(nfeaturez=3)


def test_positional_create_follows_opencv_order():
    """``XFeat_create(2048)`` as ``cv2.SIFT_create(2048)``: nfeatures first, model keyword-only."""
    cls = getattr(cvdeep, MODEL)
    names = cls.family.config.names()
    assert names[0] == "nfeatures"
    made = getattr(cvdeep, f"{MODEL}_create")(2048, 0.1)
    assert made.getParams()["nfeatures"] == 2048 and made.getParams()[names[1]] == 0.1
    with pytest.raises(cvdeep.Error, match="positional"):
        cls(*([0] * (len(names) + 1)))


def test_empty_result_is_exactly_like_sift(detector, sift, graf):
    image = graf[0]
    zero_mask = np.zeros(image.shape[:2], np.uint8)
    assert sift.detectAndCompute(image, zero_mask) == ((), None)
    assert detector.detectAndCompute(image, zero_mask) == ((), None)
    assert sift.detect(image, zero_mask) == () and detector.detect(image, zero_mask) == ()
    assert detector.compute(image, ()) == ((), None)
    assert detector.compute(image, []) == ((), None)


def test_mask_is_honoured(detector, sift, graf):
    image = graf[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[100:300, 150:400] = 255
    for det in (sift, detector):
        xy = cv2.KeyPoint_convert(det.detect(image, mask))
        assert len(xy) > 0
        ij = np.round(xy).astype(int)
        assert mask[ij[:, 1], ij[:, 0]].all()
    # a bool mask is accepted too and means the same
    same = detector.detect(image, mask.astype(bool))
    assert cv2.KeyPoint_convert(same).tolist() == cv2.KeyPoint_convert(detector.detect(image, mask)).tolist()


def test_odd_sizes_never_return_points_in_the_padding(detector, graf):
    image = graf[0][:201, :333]  # not a multiple of any stride
    xy = cv2.KeyPoint_convert(detector.detect(image))
    assert len(xy) > 0 and xy[:, 0].max() <= 332.5 and xy[:, 1].max() <= 200.5


def test_list_forms(detector, sift, graf):
    images = list(graf)
    for det in (sift, detector):
        batches = det.detect(images)
        assert isinstance(batches, (list, tuple)) and len(batches) == 2
        assert all(isinstance(kps, tuple) and len(kps) > 0 for kps in batches)
        kps_out, descs = det.compute(images, list(batches))
        assert len(kps_out) == 2 and len(descs) == 2
        assert all(d.shape == (len(k), det.descriptorSize()) for k, d in zip(kps_out, descs))
    masks = [np.full(images[0].shape[:2], 255, np.uint8)] * 2
    assert [len(k) for k in detector.detect(images, masks)] == [len(k) for k in detector.detect(images)]
    with pytest.raises(cvdeep.Error):
        detector.detect(images, masks[:1])


def test_compute_describes_given_keypoints(detector, sift, graf):
    image = graf[0]
    keypoints, desc = detector.detectAndCompute(image, None)
    again, desc2 = detector.compute(image, keypoints)
    assert again == keypoints or len(again) == len(keypoints)
    cosine = (desc * desc2).sum(1) / (np.linalg.norm(desc, axis=1) * np.linalg.norm(desc2, axis=1))
    assert np.median(cosine) > 0.99
    sift_kps = sift.detect(image)
    described, sdesc = detector.compute(image, sift_kps)
    assert len(described) == len(sift_kps) and sdesc.shape == (len(sift_kps), detector.descriptorSize())
    provided, pdesc = detector.detectAndCompute(image, None, useProvidedKeypoints=True, keypoints=sift_kps)
    assert len(provided) == len(sift_kps) and np.allclose(pdesc, sdesc, atol=1e-5)
    with pytest.raises(cvdeep.Error, match="keypoints="):
        detector.detectAndCompute(image, None, None, True)


def test_colour_layouts_and_views(detector, graf):
    """Every layout of the same pixels gives the same keypoints. (A colour image and its
    cv2 gray version may differ: each model converts colour as its authors do.)"""
    bgr = graf[0]
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    reference = cv2.KeyPoint_convert(detector.detect(bgr))
    assert np.allclose(cv2.KeyPoint_convert(detector.detect(bgra)), reference)
    gray_reference = cv2.KeyPoint_convert(detector.detect(gray))
    for variant in (gray[:, :, None], cv2.merge([gray] * 3)):
        assert np.allclose(cv2.KeyPoint_convert(detector.detect(variant)), gray_reference)
    big = np.zeros((bgr.shape[0] * 2, bgr.shape[1] * 2, 3), np.uint8)
    big[::2, ::2] = bgr
    view = big[::2, ::2]  # non-contiguous view
    assert not view.flags.c_contiguous
    assert np.allclose(cv2.KeyPoint_convert(detector.detect(view)), reference)
    flipped = bgr[:, ::-1]
    assert np.allclose(cv2.KeyPoint_convert(detector.detect(flipped)),
                       cv2.KeyPoint_convert(detector.detect(flipped.copy())))


BAD_IMAGES = {
    "None": None,
    "list": [[1, 2], [3, 4]],
    "float32": np.zeros((64, 64), np.float32),
    "uint16": np.zeros((64, 64), np.uint16),
    "empty": np.zeros((0, 0), np.uint8),
    "zero-width": np.zeros((10, 0, 3), np.uint8),
    "two-channel": np.zeros((64, 64, 2), np.uint8),
    "five-channel": np.zeros((64, 64, 5), np.uint8),
    "4d": np.zeros((1, 64, 64, 3), np.uint8),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_raise_clear_errors(detector, name):
    with pytest.raises(cvdeep.Error) as info:
        detector.detectAndCompute(BAD_IMAGES[name], None)
    message = str(info.value)
    assert "got" in message and "expected" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "mask",
    [np.zeros((10, 10), np.uint8), np.zeros((384, 512), np.float32), np.zeros((384, 512, 3), np.uint8), "mask"],
    ids=["wrong-size", "float", "three-channel", "string"],
)
def test_bad_masks_raise_clear_errors(detector, graf, mask):
    with pytest.raises(cvdeep.Error, match="mask"):
        detector.detect(graf[0], mask)


def test_bad_keypoints_raise_clear_errors(detector, graf):
    with pytest.raises(cvdeep.Error, match="cv2.KeyPoint"):
        detector.compute(graf[0], [(1.0, 2.0)])
    with pytest.raises(cvdeep.Error, match="cv2.KeyPoint"):
        detector.compute(graf[0], 5)


def test_bad_parameters_raise_clear_errors():
    cls = getattr(cvdeep, MODEL)
    with pytest.raises(cvdeep.Error, match="device"):
        cls(device="cuda:0") if not __import__("torch").cuda.is_available() else cls(device="tpu")
    with pytest.raises(cvdeep.Error, match="unknown model"):
        cls(model="no-such-model")
    with pytest.raises(cvdeep.Error, match="nfeatures"):
        cls(nfeatures="many")
    with pytest.raises(cvdeep.Error, match="nfeatures"):
        cls(nfeatures=2.5)


def test_write_and_read_round_trip(detector, tmp_path):
    path = tmp_path / "params.yml"
    detector.setNFeatures(321)
    try:
        detector.write(str(path))
    finally:
        detector.setNFeatures(1024)
    fresh = getattr(cvdeep, f"{MODEL}_create")()
    fresh.read(str(path))
    assert fresh.getNFeatures() == 321
    fs = cv2.FileStorage(str(tmp_path / "nested.yml"), cv2.FILE_STORAGE_WRITE)
    detector.write(fs, "detector")
    fs.release()
    fs = cv2.FileStorage(str(tmp_path / "nested.yml"), cv2.FILE_STORAGE_READ)
    fresh.read(fs.getNode("detector"))
    fs.release()
    assert fresh.getNFeatures() == 1024
    sift_path = tmp_path / "sift.yml"
    cv2.SIFT_create().write(str(sift_path))
    with pytest.raises(cvdeep.Error, match="Feature2D.SIFT"):
        fresh.read(str(sift_path))


def test_the_whole_opencv_pipeline_recovers_the_homography(graf_pair):
    img1, img2, truth = graf_pair
    det = getattr(cvdeep, f"{MODEL}_create")(nfeatures=2048)
    kp1, d1 = det.detectAndCompute(img1, None)
    kp2, d2 = det.detectAndCompute(img2, None)
    good = [m for m, n in cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2) if m.distance < 0.8 * n.distance]
    src = np.float32([kp1[m.queryIdx].pt for m in good])
    dst = np.float32([kp2[m.trainIdx].pt for m in good])
    H, inliers = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 3.0)
    assert H is not None and inliers.sum() > 30
    corners = np.float32([[0, 0], [img1.shape[1], 0], [img1.shape[1], img1.shape[0]], [0, img1.shape[0]]])[:, None]
    error = np.linalg.norm(cv2.perspectiveTransform(corners, H) - cv2.perspectiveTransform(corners, truth), axis=2)
    assert error.mean() < 5.0
    canvas = cv2.drawMatches(img1, kp1, img2, kp2, good[:50], None)
    assert canvas.shape[0] == max(img1.shape[0], img2.shape[0])


def test_thread_safety_matches_serial_results(graf):
    det = getattr(cvdeep, f"{MODEL}_create")(nfeatures=512)
    images = [graf[0], graf[1], graf[0][::-1].copy(), graf[1][:, ::-1].copy()]
    serial = [det.detectAndCompute(img, None) for img in images]
    results: list = [None] * 8

    def work(slot: int) -> None:
        results[slot] = det.detectAndCompute(images[slot % 4], None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for slot, (kps, desc) in enumerate(results):
        ref_kps, ref_desc = serial[slot % 4]
        assert cv2.KeyPoint_convert(kps).tolist() == cv2.KeyPoint_convert(ref_kps).tolist()
        assert np.array_equal(desc, ref_desc)
