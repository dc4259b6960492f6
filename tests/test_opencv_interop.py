"""What the README says about cv2.Feature2D: why cvdeep objects are not instances, what takes them."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvdeep


def test_a_python_subclass_of_cv2_feature2d_is_not_a_detector_to_opencv(tmp_path: Path) -> None:
    """The reason cvdeep does not subclass cv2.Feature2D: OpenCV never calls the Python method (on 5.0 the
    call crashes the interpreter), so the subclass would pass isinstance checks and then fail inside OpenCV."""
    script = tmp_path / "subclass.py"
    script.write_text(textwrap.dedent("""
        import cv2, numpy as np
        class Detector(cv2.Feature2D):
            def detectAndCompute(self, image, mask, descriptors=None, useProvidedKeypoints=False):
                print("python override called", flush=True)
                return cv2.ORB_create().detectAndCompute(image, mask)
        detector = Detector()
        print("isinstance", isinstance(detector, cv2.Feature2D), flush=True)
        image = (np.random.default_rng(0).random((120, 160)) * 255).astype(np.uint8)
        features = cv2.detail.computeImageFeatures2(detector, image)
        print("keypoints from OpenCV", len(features.getKeypoints()), flush=True)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert "isinstance True" in done.stdout
    assert "python override called" not in done.stdout
    assert done.returncode != 0  # OpenCV 5.0: SIGSEGV; 4.x: TypeError (incorrect type of self)


@pytest.fixture(scope="module")
def xfeat_and_image(shared: Path) -> tuple[cvdeep.Feature2D, np.ndarray]:
    image = cv2.imread(str(shared / "data" / "oxford_affine" / "images" / "graf" / "img1.ppm"))
    return cvdeep.XFeat_create(300), cv2.resize(image, (320, 256), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("call", [
    lambda detector, image: cv2.detail.computeImageFeatures2(detector, image),
    lambda detector, image: cv2.detail.computeImageFeatures(detector, [image]),
    lambda detector, image: cv2.AffineFeature.create(detector),
], ids=["computeImageFeatures2", "computeImageFeatures", "AffineFeature.create"])
def test_opencv_functions_taking_a_detector_refuse_cvdeep_objects(xfeat_and_image, call) -> None:
    detector, image = xfeat_and_image
    assert not isinstance(detector, cv2.Feature2D)
    with pytest.raises((TypeError, cv2.error), match=r"Expected Ptr<cv::Feature2D>"):
        call(detector, image)


def test_opencv_takes_what_a_cvdeep_detector_returns(xfeat_and_image) -> None:
    detector, image = xfeat_and_image
    keypoints, descriptors = detector.detectAndCompute(image, None)
    assert cv2.drawKeypoints(image, keypoints, None).shape == image.shape
    assert cv2.KeyPoint_convert(keypoints).shape == (len(keypoints), 2)
    shifted = np.ascontiguousarray(np.roll(image, 12, axis=1))
    keypoints2, descriptors2 = detector.detectAndCompute(shifted, None)
    assert len(cv2.FlannBasedMatcher().knnMatch(descriptors, descriptors2, k=2)) == len(keypoints)
    features = []
    for index, (kps, desc) in enumerate(((keypoints, descriptors), (keypoints2, descriptors2))):
        feature = cv2.detail.ImageFeatures()
        feature.img_idx, feature.img_size = index, (image.shape[1], image.shape[0])
        feature.keypoints, feature.descriptors = kps, cv2.UMat(desc)
        features.append(feature)
    pair = cv2.detail.BestOf2NearestMatcher(False, 0.3).apply2(features)[1]  # image 0 -> image 1
    assert pair.num_inliers > 50 and pair.H is not None
    assert abs(pair.H[0, 2] - 12) < 1.0  # the 12-pixel shift
