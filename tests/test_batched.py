"""Batched inference over lists of images (Feature2D.setBatchSize): the same results as one by one."""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvdeep
from cvdeep.batching import chunks


@pytest.fixture(scope="module")
def images(data_dir: Path) -> list[np.ndarray]:
    """Five real crops: three of 320 x 240, two of other sizes (one gray)."""
    folder = data_dir / "lightglue_assets" / "assets"
    a, b, c = (cv2.imread(str(folder / name)) for name in ("DSC_0410.JPG", "DSC_0411.JPG", "sacre_coeur1.jpg"))
    return [a[200:440, 300:620], b[250:490, 400:720], cv2.cvtColor(c[100:357, 200:501], cv2.COLOR_BGR2GRAY),
            c[300:540, 500:820], a[0:200, 0:290]]


def one_by_one(detector: cvdeep.Feature2D, images: list[np.ndarray], masks: list) -> list[tuple]:
    return [detector.detectAndCompute(image, mask) for image, mask in zip(images, masks)]


def _by_position(keypoints: list, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, responses and descriptors in (x, y) order: a batch may run other oneDNN kernels than
    one image, and scores 1e-9 apart can swap two keypoints' places in the strongest-first order."""
    xy = cv2.KeyPoint_convert(keypoints)
    order = np.lexsort((xy[:, 1], xy[:, 0]))
    return xy[order], np.float32([keypoints[i].response for i in order]), descriptors[order]


def assert_same(batched: tuple[list, list], single: list[tuple], what: str) -> None:
    keypoints, descriptors = batched
    assert len(keypoints) == len(descriptors) == len(single)
    for index, ((kps, desc), got_kps, got_desc) in enumerate(zip(single, keypoints, descriptors)):
        assert len(got_kps) == len(kps) > 0, f"{what} image {index}: {len(got_kps)} keypoints, one by one {len(kps)}"
        xy, response, desc = _by_position(kps, desc)
        got_xy, got_response, got_desc = _by_position(got_kps, got_desc)
        assert np.abs(xy - got_xy).max() <= 1e-4, f"{what} image {index}: keypoints moved"
        assert np.abs(response - got_response).max() <= 1e-5, f"{what} image {index}: scores differ"
        assert np.abs(desc - got_desc).max() <= 1e-5, f"{what} image {index}: descriptors differ"


@pytest.mark.parametrize("name, model", [("XFeat", "xfeat"), ("DISK", "disk"), ("ALIKED", "aliked-n16")])
def test_batches_give_the_one_by_one_results(images, name, model):
    detector = getattr(cvdeep, name)(512, model=model, device="cpu")
    masks = [None] * len(images)
    masks[1] = np.zeros(images[1].shape[:2], np.uint8)
    masks[1][30:200, 50:250] = 1  # a per-image mask inside a batch
    single = one_by_one(detector, images, masks)
    detector.setBatchSize(3)
    assert detector.getBatchSize() == 3
    assert_same(detector.detectAndCompute(images, masks), single, name)
    assert [len(k) for k in detector.detect(images, masks)] == [len(k) for k, _ in single]
    clone = pickle.loads(pickle.dumps(detector))  # the batch size travels with the parameters
    assert clone.getBatchSize() == 3


def test_padding_mixed_sizes_stays_close(images):
    """mixed_sizes='pad' batches different sizes on one canvas: each image keeps only its own keypoints,
    in its own pixels, close to the one-by-one ones (the networks see the padded canvas)."""
    detector = cvdeep.XFeat(512, device="cpu")
    single = one_by_one(detector, images, [None] * len(images))
    detector.setBatchSize(8, mixed_sizes="pad")
    keypoints, descriptors = detector.detectAndCompute(images)
    for image, (kps, _), got, desc in zip(images, single, keypoints, descriptors):
        xy, got_xy = cv2.KeyPoint_convert(kps), cv2.KeyPoint_convert(got)
        assert len(got) == len(desc) and got_xy.max(0)[0] < image.shape[1] and got_xy.max(0)[1] < image.shape[0]
        common = ({tuple(p) for p in np.round(xy).astype(int).tolist()}
                  & {tuple(p) for p in np.round(got_xy).astype(int).tolist()})
        assert len(common) >= 0.8 * len(kps)


def test_grouping_and_errors(images):
    assert chunks([(240, 320), (256, 320), (240, 320), (240, 320)], 2, "group") == [[0, 2], [3], [1]]
    assert chunks([(240, 320), (256, 320), (240, 320)], 2, "pad") == [[0, 1], [2]]
    detector = cvdeep.XFeat(256, device="cpu")
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(cvdeep.Error, match="batch_size"):
            detector.setBatchSize(bad)
    with pytest.raises(cvdeep.Error, match="mixed_sizes"):
        detector.setBatchSize(2, mixed_sizes="crop")
    detector.setBatchSize(2)
    with pytest.raises(cvdeep.Error, match=r"images\[1\]"):
        detector.detectAndCompute([images[0], None])
    with pytest.raises(cvdeep.Error, match="masks"):
        detector.detectAndCompute(images[:2], [None])
    empty_mask = np.zeros(images[0].shape[:2], np.uint8)
    keypoints, descriptors = detector.detectAndCompute([images[0], images[0]], [empty_mask, None])
    assert keypoints[0] == () and descriptors[0] is None and len(keypoints[1]) > 0
