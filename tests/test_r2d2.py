"""R2D2 with its real (non-commercial) weights on real HPatches viewpoint pairs."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from classic_helpers import keypoint_xy, shrink_pair
from cvdeep.eval.metrics import inside_image, match_errors, matching_accuracy
from cvdeep.matching.pairs import mutual_nearest_neighbours
from cvdeep.models import build_model, get_model
from cvdeep.weights import NonCommercialWeightsWarning

MODELS = ["r2d2", "r2d2-waf-n16", "r2d2-wasf-n8-big", "faster2d2"]
HPATCHES_VIEWPOINT = [
    "hpatches_subset/vbalnt_tfeat/imgs/v_churchill",
    "hpatches_subset/vbalnt_tfeat/imgs/v_wormhole",
    "hpatches_subset/Ljy0109_LMC/part_of_datasets/hpatches-sequences-release/v_graffiti",
]
SCALE = 0.4  # HPatches images shrunk so the multi-scale pyramid stays cheap on 2 cores
TARGETS = (2, 4)  # image 1 against a moderate and a strong viewpoint change


@pytest.fixture(scope="module")
def small_image(churchill_pair):
    return shrink_pair(*churchill_pair, 0.25)[0]  # 256 x 192: with min_size=128 still five pyramid levels


@pytest.mark.parametrize("model", MODELS)
def test_official_checkpoint_loads_strictly_and_detects(shared, small_image, model):
    spec = get_model(model)[1].weights
    assert spec.noncommercial and "NC" in spec.license
    checkpoint = torch.load(shared / "weights" / spec.filename, map_location="cpu", weights_only=False)
    checkpoint_keys = set(checkpoint["state_dict"])
    network = build_model(model)
    assert {key.removeprefix("module.") for key in checkpoint_keys} == set(network.state_dict())
    detector = cvdeep.R2D2_create(model=model, min_size=128)
    keypoints, descriptors = detector.detectAndCompute(small_image, None)
    height, width = small_image.shape[:2]
    assert 100 <= len(keypoints) <= 5000, len(keypoints)
    assert descriptors.shape == (len(keypoints), 128)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-4)
    xy = keypoint_xy(keypoints)
    assert inside_image(xy, small_image.shape).all()
    assert len({kp.octave for kp in keypoints}) >= 2  # the pyramid contributes
    np.testing.assert_allclose([kp.size for kp in keypoints], [32 * 2 ** (kp.octave / 4) for kp in keypoints],
                               rtol=1e-5)
    responses = [kp.response for kp in keypoints]
    assert responses == sorted(responses, reverse=True) and 0.49 <= responses[-1] and responses[0] <= 1.0
    assert height and width


def test_noncommercial_warning_is_emitted_once(shared):
    from cvdeep import weights as hub

    hub._warned.discard("r2d2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model("r2d2")
        build_model("r2d2")
    assert [w.category for w in caught].count(NonCommercialWeightsWarning) == 1


def mean_matching_accuracy(keypoints1, descriptors1, keypoints2, descriptors2, homography,
                           threshold: float = 3.0) -> float:
    """Fraction of mutual-nearest-neighbour descriptor matches whose reprojection error is <= threshold px."""
    matches = mutual_nearest_neighbours(descriptors1, descriptors2, cv2.NORM_L2)
    errors = match_errors(keypoint_xy(keypoints1), keypoint_xy(keypoints2), matches, homography)
    return float(matching_accuracy(errors, (threshold,))[0])


def test_mma_above_sift_on_hpatches_viewpoint(data_dir):
    r2d2 = cvdeep.R2D2_create()
    sift = cv2.SIFT_create()
    results = {"r2d2": [], "sift": []}
    for folder in HPATCHES_VIEWPOINT:
        sequence = data_dir / folder
        reference = cv2.imread(str(sequence / "1.ppm"))
        reference_features = {}
        for target in TARGETS:
            image = cv2.imread(str(sequence / f"{target}.ppm"))
            homography = np.loadtxt(sequence / f"H_1_{target}")
            small1, small2, small_h = shrink_pair(reference, image, homography, SCALE)
            for name, method in (("r2d2", r2d2), ("sift", sift)):
                if name not in reference_features:
                    reference_features[name] = method.detectAndCompute(small1, None)
                kp1, desc1 = reference_features[name]
                kp2, desc2 = method.detectAndCompute(small2, None)
                results[name].append(mean_matching_accuracy(kp1, desc1, kp2, desc2, small_h))
    mma = {name: float(np.mean(values)) for name, values in results.items()}
    print(f"HPatches viewpoint MMA@3px over {len(results['sift'])} pairs at scale {SCALE}: {mma}; per pair {results}")
    assert mma["r2d2"] > mma["sift"]
