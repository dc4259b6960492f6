"""Key.Net with its real MIT weights: kornia agreement, repeatability against SIFT, detect-only API."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from classic_helpers import keypoint_xy, shrink_pair
from cvdeep.eval.metrics import repeatability
from cvdeep.models import build_model
from cvdeep.nets.keynet import KeyNetConfig
from cvdeep.nets.patch_descriptor import SIFT_SCALE_FACTOR

kornia_feature = pytest.importorskip("kornia.feature")

SCALE = 0.5  # half-size images keep the kornia comparisons fast on 2 cores
BUDGET = 1000  # keypoints per image for both detectors in the repeatability comparison


@pytest.fixture(scope="module")
def keynet_net(shared):
    return build_model("keynet")


@pytest.fixture(scope="module")
def graf_small(graf_pair):
    image1, image2, homography = graf_pair
    return shrink_pair(image1, image2, homography, SCALE)


def _gray_tensor(image: np.ndarray) -> torch.Tensor:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return torch.from_numpy(gray).float().div(255.0)[None, None]


def _kornia_keynet(state_dict) -> torch.nn.Module:
    reference = kornia_feature.KeyNet(pretrained=False)
    reference.load_state_dict(state_dict, strict=True)
    return reference.eval()


def test_checkpoint_loads_strictly_with_official_keys(shared):
    checkpoint = torch.load(shared / "weights" / "keynet" / "keynet_pytorch.pth", map_location="cpu", weights_only=True)
    net = build_model("keynet")
    assert set(net.state_dict()) == set(checkpoint["state_dict"])


def test_response_matches_kornia(keynet_net, graf_small):
    image = _gray_tensor(graf_small[0])
    reference = _kornia_keynet(keynet_net.state_dict())
    with torch.inference_mode():
        ours, theirs = keynet_net(image), reference(image)
    assert ours.shape == theirs.shape == image.shape
    assert float(theirs.max()) > 0
    torch.testing.assert_close(ours, theirs, atol=1e-5 * float(theirs.abs().max()), rtol=1e-4)


def test_multiscale_detections_match_kornia(keynet_net, graf_small):
    """Same maxima, scores and scales as kornia's KeyNetDetector (converted to pixel-centre coordinates)."""
    image = _gray_tensor(graf_small[0])
    count = 1500
    detector = kornia_feature.KeyNetDetector(pretrained=False, num_features=count)
    detector.model.load_state_dict(keynet_net.state_dict(), strict=True)
    with torch.inference_mode():
        lafs, responses = detector.eval()(image)
        ours = keynet_net.extract(image, torch.ones_like(image, dtype=torch.bool), KeyNetConfig(nfeatures=0))
    responses = responses[0]
    real = responses > 0
    centres = lafs[0, real, :, 2].double()
    factors = (lafs[0, real, 0, 0].double() / 22.0)[:, None]  # kornia reports level pixel u at u * factor
    theirs_xy = centres + 0.5 * factors - 0.5
    top = ours["scores"][: int(real.sum())]
    # kornia ranks globally with every level asked for the whole budget: the same set as our unlimited top-N
    torch.testing.assert_close(top, responses[real], atol=1e-5 * float(top[0]), rtol=1e-4)
    ours_xy = ours["keypoints"][: len(top)].double()
    distances = torch.cdist(theirs_xy, ours_xy).min(dim=1).values
    assert float((distances < 0.05).float().mean()) > 0.99
    ours_sizes = ours["sizes"][: len(top)].double()
    # kornia's LAF scale is the patch half-side; cvdeep's patch side is SIFT_SCALE_FACTOR x KeyPoint.size
    half_sides = ours_sizes * SIFT_SCALE_FACTOR / 2
    torch.testing.assert_close(half_sides.sort().values, (22.0 * factors[:, 0]).sort().values, rtol=0.02, atol=0.0)


def _unique(keypoints):
    """One keypoint per location (SIFT repeats a location for each dominant orientation)."""
    return list({(round(kp.pt[0], 2), round(kp.pt[1], 2)): kp for kp in keypoints}.values())


@pytest.mark.parametrize("sequence", ["graf", "wall"])
def test_repeatability_at_least_sift(data_dir, sequence):
    """Full-size images: Key.Net's pyramid (one level up, four down) is set for them."""
    folder = data_dir / "oxford_affine" / "images" / sequence
    image1, image2 = cv2.imread(str(folder / "img1.ppm")), cv2.imread(str(folder / "img2.ppm"))
    homography = np.loadtxt(folder / "H1to2p")
    keynet = cvdeep.KeyNet_create(nfeatures=BUDGET)
    sift = cv2.SIFT_create(nfeatures=BUDGET)
    scores = {}
    for name, detector in (("keynet", keynet), ("sift", sift)):
        kp1, kp2 = detector.detect(image1, None), detector.detect(image2, None)
        assert 0.5 * BUDGET <= len(_unique(kp1)) <= BUDGET + 50, (name, len(kp1))
        xy1, xy2 = keypoint_xy(_unique(kp1)), keypoint_xy(_unique(kp2))
        scores[name] = repeatability(xy1, xy2, homography, image1.shape, image2.shape, threshold=3.0)[0]
    print(f"{sequence} 1->2 repeatability@3px, {BUDGET} keypoints: {scores}")
    assert scores["keynet"] >= scores["sift"]


def test_detect_only(graf_small):
    keynet = cvdeep.KeyNet_create(nfeatures=300)
    keypoints = keynet.detect(graf_small[0])
    assert 150 <= len(keypoints) <= 300
    assert len({kp.octave for kp in keypoints}) >= 3  # detections come from several pyramid levels
    sizes = np.array([kp.size for kp in keypoints])
    # half-side 22 px x level scale for the patch descriptor: size = 44 / SIFT_SCALE_FACTOR px at the input's scale
    expected = 44.0 / SIFT_SCALE_FACTOR * np.sqrt(2) ** np.array([kp.octave for kp in keypoints])
    np.testing.assert_allclose(sizes, expected, rtol=1e-5)
    responses = [kp.response for kp in keypoints]
    assert responses == sorted(responses, reverse=True)
    with pytest.raises(cvdeep.Error, match="patch descriptor"):
        keynet.compute(graf_small[0], keypoints)
    with pytest.raises(cvdeep.Error, match="patch descriptor"):
        keynet.detectAndCompute(graf_small[0], None)


def test_mask_is_respected(graf_small):
    image = graf_small[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[:, : image.shape[1] // 2] = 255
    keypoints = cvdeep.KeyNet_create(nfeatures=500).detect(image, mask)
    assert keypoints and all(kp.pt[0] < image.shape[1] // 2 for kp in keypoints)
