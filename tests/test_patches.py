"""cvdeep.ops.extract_patches: geometry against OpenCV, the KeyPoint.angle convention, borders, errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.ops import extract_patches


def _as_tensor(gray: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(gray).float()[None, None] / 255.0


def _patches(gray: np.ndarray, keypoints, patch_size: int = 32, scale_factor: float = 3.0, rotate: bool = True):
    xy = torch.tensor([kp.pt for kp in keypoints], dtype=torch.float32).reshape(-1, 2)
    sizes = torch.tensor([kp.size for kp in keypoints], dtype=torch.float32)
    angles = torch.tensor([kp.angle for kp in keypoints], dtype=torch.float32)
    return extract_patches(_as_tensor(gray), xy, sizes, angles, patch_size, scale_factor, rotate=rotate)


@pytest.fixture(scope="module")
def graf_crop(data_dir) -> np.ndarray:
    gray = cv2.imread(str(data_dir / "oxford_affine" / "images" / "graf" / "img1.ppm"), cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(gray[100:460, 200:560])


def test_matches_opencv_warp_affine(graf_crop):
    """Small keypoints (no pyramid level): bilinear samples equal cv2.warpAffine's with the same map."""
    rng = np.random.default_rng(0)
    height, width = graf_crop.shape
    columns = (rng.uniform(40, width - 40, 50), rng.uniform(40, height - 40, 50), rng.uniform(3, 10, 50),
               rng.uniform(0, 360, 50))
    keypoints = [cv2.KeyPoint(float(x), float(y), float(s), float(a)) for x, y, s, a in zip(*columns)]
    ours = _patches(graf_crop, keypoints, patch_size=16, scale_factor=3.0)[:, 0].numpy() * 255.0
    image = graf_crop.astype(np.float32)
    for patch, kp in zip(ours, keypoints):
        step = 3.0 * kp.size / 16
        cos, sin = np.cos(np.deg2rad(kp.angle)) * step, np.sin(np.deg2rad(kp.angle)) * step
        centre = 7.5
        inverse = np.array([[cos, -sin, kp.pt[0] - centre * (cos - sin)],
                            [sin, cos, kp.pt[1] - centre * (sin + cos)]], np.float64)
        expected = cv2.warpAffine(image, inverse, (16, 16), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
        # OpenCV quantises bilinear weights to 1/32 of a pixel.
        assert np.abs(patch - expected).max() < 4.0


def test_unit_step_is_a_plain_crop(graf_crop):
    keypoint = cv2.KeyPoint(100.0, 80.0, 7.0, 0.0)  # side 7 px over 7 patch pixels: one pixel per sample
    patch = _patches(graf_crop, [keypoint], patch_size=7, scale_factor=1.0)[0, 0].numpy() * 255.0
    np.testing.assert_allclose(patch, graf_crop[77:84, 97:104].astype(np.float32), atol=1e-3)


def test_opencv_angle_convention_with_sift_on_a_rotated_image(graf_crop):
    """SIFT on the image turned 30 degrees counter-clockwise: the same points come back with
    angle - 30, and their patches (rotated by KeyPoint.angle) are the same patches."""
    height, width = graf_crop.shape
    turn = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), 30, 1.0)
    rotated = cv2.warpAffine(graf_crop, turn, (width, height), flags=cv2.INTER_CUBIC)
    sift = cv2.SIFT_create(800)
    original, turned = sift.detect(graf_crop), sift.detect(rotated)
    moved = cv2.KeyPoint_convert(original) @ turn[:, :2].T + turn[:, 2]
    target = cv2.KeyPoint_convert(turned)
    pairs = []
    for i, kp in enumerate(original):
        distance = np.linalg.norm(target - moved[i], axis=1)
        j = int(distance.argmin())
        inside = 40 < kp.pt[0] < width - 40 and 40 < kp.pt[1] < height - 40
        if inside and distance[j] < 1.0 and abs(turned[j].size - kp.size) < 0.1 * kp.size:
            change = (turned[j].angle - kp.angle) % 360.0
            if min(abs(change - 330.0), abs(change - 30.0)) < 10.0:
                pairs.append((i, j, change))
    assert len(pairs) > 50
    assert abs(np.median([c for _, _, c in pairs]) - 330.0) < 2.0  # clockwise degrees, y down
    first = _patches(graf_crop, [original[i] for i, _, _ in pairs])
    second = _patches(rotated, [turned[j] for _, j, _ in pairs])
    mirrored = _patches(rotated, [cv2.KeyPoint(*turned[j].pt, turned[j].size, (turned[j].angle + 60) % 360)
                                  for _, j, _ in pairs])
    same = (first - second).abs().mean().item()
    assert same < 0.03
    assert (first - mirrored).abs().mean().item() > 4 * same


def test_angle_minus_one_and_rotate_false_mean_upright(graf_crop):
    upright = _patches(graf_crop, [cv2.KeyPoint(150, 150, 8, 0)])
    assert torch.equal(_patches(graf_crop, [cv2.KeyPoint(150, 150, 8, -1)]), upright)
    assert torch.equal(_patches(graf_crop, [cv2.KeyPoint(150, 150, 8, 77)], rotate=False), upright)
    assert not torch.equal(_patches(graf_crop, [cv2.KeyPoint(150, 150, 8, 77)]), upright)


def test_large_keypoints_read_an_area_pyramid():
    """A 1-pixel checkerboard under an 8x shrink must come out mid-grey, not aliased to 0 or 1."""
    board = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    patch = _patches(board, [cv2.KeyPoint(128.0, 128.0, 256.0 / 3.0, 0.0)], patch_size=32)
    assert abs(patch.mean().item() - 0.5) < 0.02
    assert patch.std().item() < 0.05


def test_border_repeats_edge_pixels():
    gray = np.zeros((50, 60), np.uint8)
    gray[:, 0] = 200  # a bright left column
    patch = _patches(gray, [cv2.KeyPoint(0.0, 25.0, 10.0, 0.0)], patch_size=10, scale_factor=1.0)[0, 0] * 255
    assert torch.isfinite(patch).all()
    assert torch.allclose(patch[:, :5], torch.full((10, 5), 200.0), atol=1e-3)  # left of x=0: the edge column


def test_thousands_of_keypoints_and_colour_channels(graf_crop):
    rng = np.random.default_rng(1)
    count = 5000
    xy = torch.from_numpy(rng.uniform(0, 359, (count, 2)).astype(np.float32))
    sizes = torch.from_numpy(rng.uniform(1.5, 120, count).astype(np.float32))
    angles = torch.from_numpy(rng.uniform(0, 360, count).astype(np.float32))
    colour = torch.rand(3, 360, 360)
    patches = extract_patches(colour, xy, sizes, angles, 32, 6.0)
    assert patches.shape == (count, 3, 32, 32)
    assert torch.isfinite(patches).all() and patches.min() >= 0 and patches.max() <= 1
    # Channels are sampled independently: each equals the single-channel result.
    green = extract_patches(colour[1:2], xy, sizes, angles, 32, 6.0)
    assert torch.allclose(patches[:, 1:2], green)


def test_empty_keypoints():
    out = extract_patches(torch.rand(1, 1, 20, 20), torch.zeros(0, 2), torch.zeros(0), None, 32, 3.0)
    assert out.shape == (0, 1, 32, 32)


@pytest.mark.parametrize(
    "change", ["zero_size", "nan_size", "bad_xy", "bad_angles", "int_image", "bad_patch", "bad_scale"]
)
def test_bad_input_raises_cvdeep_error(change):
    image, xy, sizes, angles = torch.rand(1, 1, 20, 20), torch.ones(3, 2), torch.ones(3), torch.zeros(3)
    patch_size, scale = 32, 3.0
    if change == "zero_size":
        sizes = torch.tensor([1.0, 0.0, 1.0])
    elif change == "nan_size":
        sizes = torch.tensor([1.0, float("nan"), 1.0])
    elif change == "bad_xy":
        xy = torch.ones(3, 3)
    elif change == "bad_angles":
        angles = torch.zeros(4)
    elif change == "int_image":
        image = torch.ones(1, 1, 20, 20, dtype=torch.uint8)
    elif change == "bad_patch":
        patch_size = 0
    else:
        scale = float("inf")
    with pytest.raises(cvdeep.Error):
        extract_patches(image, xy, sizes, angles, patch_size, scale)
