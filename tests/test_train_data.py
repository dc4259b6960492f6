"""cvdeep.train: random homographies, warps, photometric changes, homography-labelled patch
pairs (generation, batches, caching) and the patch-level evaluation built on them."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.eval import patch_pairs_eval as pe
from cvdeep.train import patch_pairs as pp
from cvdeep.train.homography import (
    HomographyConfig,
    affine_rotation_deg,
    affine_scale,
    homography_from_points,
    local_affine,
    sample_homography,
    sample_warp,
    valid_mask,
    valid_mask_tensor,
    warp_image,
    warp_image_tensor,
    warp_keypoints,
    warp_points,
)
from cvdeep.train.photometric import PhotometricConfig, augment


def _texture(height: int, width: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Blurred noise with strong local structure, uint8."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width)).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), sigma)
    image = (image - image.min()) / (image.max() - image.min()) * 255.0
    return np.rint(image).astype(np.uint8)


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-mean normalised cross-correlation of patch stacks (N, P, P)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-9)


def _similarity(centre: tuple[float, float], angle_deg: float, scale: float) -> np.ndarray:
    """Rotation by angle_deg (clockwise on screen, y down) and scaling about ``centre``."""
    c, s = math.cos(math.radians(angle_deg)) * scale, math.sin(math.radians(angle_deg)) * scale
    cx, cy = centre
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1.0]])


# ---------------------------------------------------------------------------- homographies


@pytest.mark.parametrize("config", [
    HomographyConfig(),
    HomographyConfig(patch_ratio=0.5, perspective=0.2, scale_range=(0.6, 1.5), max_angle_deg=180.0),
])
def test_sampled_homographies_stay_inside_and_respect_ranges(config):
    rng = np.random.default_rng(1)
    height, width = 321, 481
    margin = (1 - config.patch_ratio) / 2
    angles, scales = [], []
    for _ in range(300):
        warp = sample_warp(rng, height, width, config)
        region = warp.region
        assert ((region >= -1e-6).all() and (region[:, 0] <= width - 1 + 1e-6).all()
                and (region[:, 1] <= height - 1 + 1e-6).all())
        corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)
        np.testing.assert_allclose(warp_points(warp.H, region), corners, atol=1e-6)
        # the image corners seen by the warped view come from inside the source
        inverse = warp_points(np.linalg.inv(warp.H), corners)
        assert (inverse >= -1e-6).all() and (inverse[:, 0] <= width - 1 + 1e-6).all()
        assert np.abs(warp.perspective).max() <= min(config.perspective, margin) + 1e-12
        assert config.scale_range[0] - 1e-12 <= warp.scale <= config.scale_range[1] + 1e-12
        assert abs(warp.angle_deg) <= config.max_angle_deg
        angles.append(warp.angle_deg)
        scales.append(warp.scale)
    assert valid_mask(warp.H, (width, height), (width, height)).all()
    assert np.ptp(scales) > 0.1  # the ranges are used, not only their fallbacks
    if config.patch_ratio == 0.5:
        assert np.ptp(angles) > 90


def test_sampled_homographies_with_artifacts_respect_ranges():
    config = HomographyConfig(patch_ratio=0.9, perspective=0.3, scale_range=(0.7, 1.4), max_angle_deg=45.0,
                              allow_artifacts=True, translation_overflow=0.1)
    rng = np.random.default_rng(2)
    draws = [sample_warp(rng, 200, 300, config) for _ in range(300)]
    assert max(np.abs(w.perspective).max() for w in draws) <= 0.3
    assert max(np.abs(w.perspective).max() for w in draws) > 0.15  # not clipped to the margin
    assert all(0.7 <= w.scale <= 1.4 for w in draws) and max(w.scale for w in draws) > 1.3
    assert all(abs(w.angle_deg) <= 45 for w in draws) and max(abs(w.angle_deg) for w in draws) > 40
    assert any(not valid_mask(w.H, (300, 200), (300, 200)).all() for w in draws)  # borders do occur


def test_rotation_only_homography_has_the_expected_jacobian():
    """Region of half the image, rotated by a: the warped content is 2x larger and turned by -a."""
    config = HomographyConfig(patch_ratio=0.5, perspective=0.0, scale_range=(1.0, 1.0), max_angle_deg=60.0,
                              translation=False)
    rng = np.random.default_rng(3)
    for _ in range(20):
        warp = sample_warp(rng, 201, 201, config)
        assert np.abs(warp.H[2, :2]).max() < 1e-12  # affine
        jac = local_affine(warp.H, warp.region.mean(axis=0, keepdims=True))
        np.testing.assert_allclose(affine_scale(jac), [2.0], rtol=1e-9)
        np.testing.assert_allclose(affine_rotation_deg(jac), [-warp.angle_deg], atol=1e-9)
        np.testing.assert_allclose(warp_points(warp.H, [[100.0, 100.0]]), [[100.0, 100.0]], atol=1e-9)


def test_sample_homography_is_deterministic_and_has_its_out_size():
    a = sample_homography(np.random.default_rng(5), 100, 150, out_size=(64, 48))
    b = sample_homography(np.random.default_rng(5), 100, 150, out_size=(64, 48))
    np.testing.assert_array_equal(a, b)
    region = warp_points(np.linalg.inv(a), [[0, 0], [63, 47]])
    assert (region >= 0).all() and region[1, 0] <= 149 and region[1, 1] <= 99


def test_bad_homography_configs_raise_cvdeep_error():
    with pytest.raises(cvdeep.Error, match="perspective"):
        HomographyConfig(perspective=0.5)
    with pytest.raises(cvdeep.Error, match="low bound must be <= 1"):
        HomographyConfig(scale_range=(1.2, 1.5))
    with pytest.raises(ValueError, match="max_angle_deg"):
        HomographyConfig(max_angle_deg=270)
    with pytest.raises(cvdeep.Error, match="numpy.random.Generator"):
        sample_homography(0, 10, 10)  # type: ignore[arg-type]


def test_warp_points_identity_known_matrix_and_horizon():
    xy = np.array([[0.0, 0.0], [10.5, -3.0], [100.0, 7.0]])
    np.testing.assert_array_equal(warp_points(np.eye(3), xy), xy)
    H = np.array([[2.0, 0.0, 3.0], [0.0, 2.0, -1.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(warp_points(H, xy), xy * 2 + [3.0, -1.0])
    projective = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.01, 0, 1.0]])
    np.testing.assert_allclose(warp_points(projective, [[50.0, 20.0]]), [[50.0 / 1.5, 20.0 / 1.5]])
    assert np.isnan(warp_points(projective, [[-200.0, 0.0]])).all()  # w = -1: behind the horizon
    with pytest.raises(cvdeep.Error, match="3x3"):
        warp_points(np.eye(2), xy)


def test_homography_from_points_recovers_a_homography():
    H = np.array([[1.1, 0.2, 5.0], [-0.1, 0.9, 3.0], [1e-3, -5e-4, 1.0]])
    src = np.array([[0.0, 0.0], [300.0, 10.0], [280.0, 200.0], [5.0, 190.0]])
    found = homography_from_points(src, warp_points(H, src))
    np.testing.assert_allclose(found / found[2, 2], H, rtol=1e-9, atol=1e-12)
    assert (np.c_[src, np.ones(4)] @ found[2] > 0).all()  # the source points are in front
    assert np.isnan(warp_points(-H, src)).all()  # used with its sign: -H puts them behind the horizon
    with pytest.raises(cvdeep.Error, match="degenerate"):
        homography_from_points([[0, 0], [1, 1], [2, 2], [3, 3]], src)


def test_local_affine_matches_finite_differences():
    rng = np.random.default_rng(4)
    H = sample_homography(rng, 240, 320, HomographyConfig(patch_ratio=0.7, perspective=0.3, allow_artifacts=True))
    xy = rng.uniform([0, 0], [320, 240], (50, 2))
    step = 1e-4
    dx = (warp_points(H, xy + [step, 0]) - warp_points(H, xy - [step, 0])) / (2 * step)
    dy = (warp_points(H, xy + [0, step]) - warp_points(H, xy - [0, step])) / (2 * step)
    np.testing.assert_allclose(local_affine(H, xy), np.stack((dx, dy), axis=-1), rtol=1e-6, atol=1e-8)


def test_keypoints_through_rotation_and_scaling():
    H = _similarity((50.0, 40.0), 30.0, 1.5)
    xy = np.array([[50.0, 40.0], [60.0, 45.0], [10.0, 70.0]])
    new_xy, sizes, angles = warp_keypoints(H, xy, [4.0, 2.0, 8.0], [10.0, -1.0, 350.0])
    np.testing.assert_allclose(new_xy[0], [50.0, 40.0], atol=1e-9)
    np.testing.assert_allclose(sizes, [6.0, 3.0, 12.0])
    np.testing.assert_allclose(angles, [40.0, -1.0, 20.0], atol=1e-9)
    # a pure scaling keeps angles
    _, sizes, angles = warp_keypoints(np.diag([0.5, 0.5, 1.0]), xy, [4.0, 2.0, 8.0], [10.0, 200.0, 359.5])
    np.testing.assert_allclose(sizes, [2.0, 1.0, 4.0])
    np.testing.assert_allclose(angles, [10.0, 200.0, 359.5], atol=1e-9)


def test_torch_and_opencv_warps_agree_in_the_interior():
    image = _texture(96, 128, seed=1, sigma=2.5)
    rng = np.random.default_rng(6)
    config = HomographyConfig(patch_ratio=0.9, perspective=0.2, scale_range=(0.8, 1.25), max_angle_deg=30,
                              allow_artifacts=True)
    homographies = np.stack([sample_homography(rng, 96, 128, config) for _ in range(2)])
    batch = torch.from_numpy(image).float().div(255)[None, None].repeat(2, 1, 1, 1)
    warped = warp_image_tensor(batch, torch.from_numpy(homographies), (112, 80)) * 255
    masks = valid_mask_tensor(homographies, (128, 96), (112, 80), margin=1.0)
    assert warped.shape == (2, 1, 80, 112) and masks.shape == (2, 1, 80, 112)
    for k in range(2):
        expected = warp_image(image, homographies[k], (112, 80)).astype(np.float32)
        interior = masks[k, 0].numpy()
        assert interior.mean() > 0.3
        assert np.abs(warped[k, 0].numpy() - expected)[interior].max() < 1.0
        # outside the source both are 0 (away from the border pixels both blend)
        outside = ~valid_mask(homographies[k], (128, 96), (112, 80), margin=0.0)
        outside &= cv2.erode(outside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert (expected[outside] == 0).all() and (warped[k, 0].numpy()[outside] == 0).all()


def test_valid_mask_of_identity_and_translation():
    assert valid_mask(np.eye(3), (40, 30), (40, 30)).all()
    shifted = valid_mask(np.array([[1.0, 0, 10], [0, 1, 0], [0, 0, 1]]), (40, 30), (40, 30))
    assert not shifted[:, :10].any() and shifted[:, 10:].all()
    eroded = valid_mask(np.eye(3), (40, 30), (40, 30), margin=2.0)
    assert eroded.sum() == (40 - 4) * (30 - 4)


# ---------------------------------------------------------------------------- photometric


def test_augment_shapes_determinism_and_identity():
    gray, color = _texture(60, 80), cv2.merge([_texture(60, 80, seed=s) for s in range(3)])
    for image in (gray, color):
        out = augment(image, np.random.default_rng(0))
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, augment(image, np.random.default_rng(0)))
        np.testing.assert_array_equal(augment(image, np.random.default_rng(0), PhotometricConfig.disabled()), image)
    outs = [augment(gray, np.random.default_rng(seed)) for seed in range(8)]
    assert len({o.tobytes() for o in outs}) > 4


@pytest.mark.parametrize("change, check", [
    (dict(brightness=(20.0, 20.0), brightness_p=1.0), lambda a, b: abs(b.mean() - a.mean() - 20) < 2),
    (dict(contrast=(0.5, 0.5), contrast_p=1.0), lambda a, b: abs(b.std() - 0.5 * a.std()) < 1.5),
    (dict(gamma=(2.0, 2.0), gamma_p=1.0), lambda a, b: b.mean() < a.mean() - 20),
    (dict(noise_std=(8.0, 8.0), noise_p=1.0), lambda a, b: 6 < (b.astype(float) - a).std() < 9),
    (dict(blur_sigma=(2.0, 2.0), blur_p=1.0), lambda a, b: b.std() < 0.8 * a.std()),
    (dict(motion_blur=(9.0, 9.0), motion_blur_p=1.0), lambda a, b: b.std() < 0.9 * a.std()),
    (dict(jpeg_quality=(10.0, 10.0), jpeg_p=1.0), lambda a, b: 0 < np.abs(b.astype(float) - a).mean() < 30),
])
def test_each_photometric_change_does_what_it_says(change, check):
    image = np.clip(_texture(64, 64, seed=3, sigma=1.0).astype(int) // 2 + 64, 0, 255).astype(np.uint8)
    only = {**PhotometricConfig.disabled().__dict__, **change}
    out = augment(image, np.random.default_rng(0), PhotometricConfig(**only))
    assert check(image.astype(float), out.astype(float))


def test_augment_rejects_bad_input():
    with pytest.raises(cvdeep.Error, match="uint8"):
        augment(np.zeros((4, 4), np.float32), np.random.default_rng(0))
    with pytest.raises(cvdeep.Error, match="probability"):
        PhotometricConfig(noise_p=1.5)
    with pytest.raises(cvdeep.Error, match="brightness"):
        PhotometricConfig(brightness=(10, -10))


# ---------------------------------------------------------------------------- patch pairs


def _grid_keypoints(width: int, height: int, step: int, size: float, rng: np.random.Generator) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(step, width - step, step), np.arange(step, height - step, step))
    count = xs.size
    return np.c_[xs.ravel(), ys.ravel(), np.full(count, size), rng.uniform(0, 360, count)].astype(np.float64)


def test_pairs_from_a_known_homography_agree_and_non_pairs_do_not():
    image = _texture(240, 320, seed=2, sigma=1.5)
    H = _similarity((160.0, 120.0), 25.0, 1.2) @ np.array([[1, 0.05, 0], [0.02, 1, 0], [1e-4, 5e-5, 1]])
    warped = warp_image(image, H, (320, 240))
    keypoints = _grid_keypoints(320, 240, 20, 2.5, np.random.default_rng(0))
    pairs = pp.pairs_from_homography(image, cv2.cvtColor(warped, cv2.COLOR_GRAY2BGR), H, keypoints)
    assert pairs.patches.shape[1:] == (2, 32, 32) and 20 < len(pairs) < len(keypoints)
    a, b = pairs.patches[:, 0].astype(float), pairs.patches[:, 1].astype(float)
    same = np.abs(a - b).mean(axis=(1, 2))
    other = np.abs(a - np.roll(b, 1, axis=0)).mean(axis=(1, 2))
    assert np.median(same) < 5.0 and np.median(other) > 4 * np.median(same)
    # positions of the kept keypoints map exactly, and their patches lie inside both images
    np.testing.assert_allclose(pairs.keypoints[:, 1, :2], warp_points(H, keypoints[pairs.point_id, :2]), atol=1e-3)
    for view in range(2):
        corners = pp._patch_corners(pairs.keypoints[:, view].astype(np.float64), 12.0)
        assert pp._inside(corners, 320, 240).all()
    dropped = np.setdiff1d(np.arange(len(keypoints)), pairs.point_id)
    corners = pp._patch_corners(np.c_[warp_points(H, keypoints[dropped, :2]), keypoints[dropped, 2:]], 12.0)
    assert not pp._inside(corners, 320, 240).all()  # crude: some dropped ones leave B


def test_pair_sizes_and_angles_under_rotation_and_scaling():
    image = _texture(200, 200, seed=4)
    H = _similarity((100.0, 100.0), -40.0, 0.8)
    keypoints = np.array([[100.0, 100.0, 3.0, 10.0], [90.0, 110.0, 2.0, -1.0], [110.0, 95.0, 2.5, 30.0]])
    pairs = pp.pairs_from_homography(image, warp_image(image, H, (200, 200)), H, keypoints)
    assert list(pairs.point_id) == [0, 1, 2]
    np.testing.assert_allclose(pairs.keypoints[:, 1, 2], [2.4, 1.6, 2.0], rtol=1e-5)
    np.testing.assert_allclose(pairs.keypoints[:, 1, 3], [330.0, 320.0, 350.0], atol=1e-3)
    np.testing.assert_allclose(pairs.keypoints[:, 0, 3], [10.0, -1.0, 30.0])  # upright A patch for -1
    diff = np.abs(pairs.patches[:, 0].astype(float) - pairs.patches[:, 1]).mean(axis=(1, 2))
    assert diff.max() < 6.0  # the -1 keypoint's B patch is turned with H, so it matches too


def test_pairs_accept_cv2_keypoints_and_arrays_alike():
    image = _texture(120, 160, seed=5)
    H = _similarity((80.0, 60.0), 15.0, 1.1)
    rows = _grid_keypoints(160, 120, 30, 2.0, np.random.default_rng(1))
    cv_keypoints = [cv2.KeyPoint(float(x), float(y), float(s), float(a)) for x, y, s, a in rows]
    warped = warp_image(image, H, (160, 120))
    from_array = pp.pairs_from_homography(image, warped, H, rows)
    from_cv = pp.pairs_from_homography(image, warped, H, cv_keypoints)
    np.testing.assert_array_equal(from_array.patches, from_cv.patches)
    with pytest.raises(cvdeep.Error, match="keypoints"):
        pp.pairs_from_homography(image, warped, H, np.zeros((3, 5)))


def test_select_keypoints_thins_by_distance_keeps_the_strongest_and_fitting():
    config = pp.PatchPairConfig(min_keypoint_distance=5.0, keypoints_per_image=3)
    keypoints = [cv2.KeyPoint(50, 50, 2, 0, 0.5), cv2.KeyPoint(52, 50, 2, 90, 0.9), cv2.KeyPoint(70, 50, 2, 0, 0.1),
                 cv2.KeyPoint(5, 5, 2, 0, 1.0),  # patch (24 px) leaves the image
                 cv2.KeyPoint(50, 80, 2, 0, 0.3), cv2.KeyPoint(80, 80, 2, 0, 0.2)]
    table = pp.select_keypoints(keypoints, (100, 100), config)
    np.testing.assert_allclose(table[:, :2], [[52, 50], [50, 80], [80, 80]])


def _write_photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"photo's {k}.png"  # an apostrophe, as some ImageNet names have
        cv2.imwrite(str(path), cv2.merge([_texture(150 + 10 * k, 200, seed=10 + k, sigma=s) for s in (1.5, 2.0, 2.5)]))
        paths.append(path)
    return paths


SMALL = pp.PatchPairConfig(keypoints_per_image=40, max_side=160, homographies_per_image=2)


def test_generation_is_deterministic_and_independent_of_workers(tmp_path):
    paths = _write_photos(tmp_path / "photos", 3)
    first = pp.generate_patch_pairs(paths, SMALL, seed=7, workers=0)
    again = pp.generate_patch_pairs(paths, SMALL, seed=7, workers=1)
    parallel = pp.generate_patch_pairs(paths, SMALL, seed=7, workers=2)
    other = pp.generate_patch_pairs(paths, SMALL, seed=8, workers=0)
    for result in (again, parallel):
        np.testing.assert_array_equal(result.patches, first.patches)
        np.testing.assert_array_equal(result.point_id, first.point_id)
        np.testing.assert_array_equal(result.keypoints, first.keypoints)
    assert other.patches.shape != first.patches.shape or (other.patches != first.patches).any()
    assert set(first.image_id.tolist()) == {0, 1, 2}
    # keypoints are per photo: the same point id never spans two photos, and two homographies
    # per photo give some points two rows
    for pid in np.unique(first.point_id):
        assert len(set(first.image_id[first.point_id == pid].tolist())) == 1
    assert first.num_points < len(first)
    # the photos are shrunk to max_side; the pairs agree far better than non-pairs
    assert first.keypoints[:, :, :2].max() <= 160
    # photometric changes on both views: compare by normalised correlation
    a, b = first.patches[:, 0], first.patches[:, 1]
    assert np.median(_ncc(a, b)) > 0.8 and np.median(np.abs(_ncc(a, np.roll(b, 3, 0)))) < 0.3


def test_a_photo_without_keypoints_gives_no_rows(tmp_path):
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((120, 160), 128, np.uint8))
    photo = _write_photos(tmp_path / "photos", 1)[0]
    pairs = pp.generate_patch_pairs([flat, photo], SMALL, seed=0, workers=0)
    assert len(pairs) > 0 and set(pairs.image_id.tolist()) == {1}
    alone = pp.generate_patch_pairs([flat], SMALL, seed=0, workers=0)
    assert alone.patches.shape == (0, 2, 32, 32)


def test_unreadable_photo_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(cvdeep.Error, match="broken.jpg"):
        pp.generate_patch_pairs([bad], SMALL, workers=0)


def _toy_pairs(count: int = 30, views: int = 2, repeats: int = 1) -> pp.PatchPairs:
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (count * repeats, views, 8, 8), dtype=np.uint8)
    point_id = np.tile(np.arange(count), repeats)
    return pp.PatchPairs(patches, point_id, point_id // 10, rng.random((count * repeats, views, 4)),
                         {"note": "toy"})


def test_batches_hold_distinct_points_and_cover_each_once():
    pairs = _toy_pairs(count=30, repeats=3)
    seen = []
    for anchor, positive, ids in pairs.batches(8, np.random.default_rng(0), with_ids=True):
        assert anchor.shape == positive.shape == (8, 1, 8, 8) and anchor.dtype == torch.float32
        assert 0.0 <= float(anchor.min()) and float(anchor.max()) <= 1.0
        assert len(set(ids.tolist())) == 8
        seen += ids.tolist()
    assert len(seen) == 24 and len(set(seen)) == 24  # drop_last: 30 // 8 batches, no repeats
    everything = [ids for *_, ids in pairs.batches(8, np.random.default_rng(0), drop_last=False, with_ids=True)]
    assert sorted(torch.cat(everything).tolist()) == list(range(30))
    with pytest.raises(cvdeep.Error, match="distinct points"):
        next(pairs.batches(31, np.random.default_rng(0)))


def test_batches_anchor_and_positive_are_the_views_of_one_row():
    pairs = _toy_pairs(count=20, views=3)
    lookup = {pairs.patches[n, v].tobytes(): (n, v) for n in range(20) for v in range(3)}
    used = set()
    for anchor, positive in pairs.batches(5, np.random.default_rng(1)):
        for a, p in zip(anchor, positive):
            ra, va = lookup[(a[0].numpy() * 255).round().astype(np.uint8).tobytes()]
            rp, vp = lookup[(p[0].numpy() * 255).round().astype(np.uint8).tobytes()]
            assert ra == rp and va != vp
            used.add((va, vp))
    assert len(used) > 2  # several view pairs are drawn


def test_flips_and_rotations_apply_to_both_patches():
    pairs = _toy_pairs(count=64)
    pairs.patches[:, 1] = pairs.patches[:, 0]  # identical views: a shared transform keeps them identical
    originals = {pairs.patches[n, 0].tobytes() for n in range(64)}
    changed = 0
    for anchor, positive in pairs.batches(16, np.random.default_rng(2), flip=True, rot90=True):
        torch.testing.assert_close(anchor, positive)
        changed += sum((a[0].numpy() * 255).round().astype(np.uint8).tobytes() not in originals for a in anchor)
    assert 40 < changed < 64  # 7 of 8 transforms change a random patch


def test_npz_round_trip_and_errors(tmp_path):
    pairs = _toy_pairs(count=12, views=3)
    path = pairs.save(tmp_path / "sub" / "pairs.npz")
    loaded = pp.PatchPairs.load(path)
    np.testing.assert_array_equal(loaded.patches, pairs.patches)
    np.testing.assert_array_equal(loaded.point_id, pairs.point_id)
    np.testing.assert_array_equal(loaded.image_id, pairs.image_id)
    np.testing.assert_array_equal(loaded.keypoints, pairs.keypoints.astype(np.float32))
    assert loaded.config == {"note": "toy"} and not list(tmp_path.glob("sub/*.tmp*"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(cvdeep.Error, match="junk.npz"):
        pp.PatchPairs.load(tmp_path / "junk.npz")
    with pytest.raises(cvdeep.Error, match="one id of each per row"):
        pp.PatchPairs(pairs.patches, pairs.point_id[:3], pairs.image_id)


def test_cache_is_built_once_reused_and_rebuilt_when_stale(tmp_path, monkeypatch):
    _write_photos(tmp_path / "photos", 2)
    config = pp.PatchPairConfig(keypoints_per_image=20, max_side=120)
    built = pp.cached_patch_pairs(tmp_path / "photos", config, seed=3, cache_dir=tmp_path / "cache", workers=0,
                                  progress=False)
    files = list((tmp_path / "cache").glob("patch_pairs-*.npz"))
    assert len(files) == 1 and built.config["seed"] == 3 and len(built.config["files"]) == 2

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pp, "generate_patch_pairs", fail)
    reused = pp.cached_patch_pairs(tmp_path / "photos", config, seed=3, cache_dir=tmp_path / "cache", workers=0,
                                   progress=False)
    np.testing.assert_array_equal(reused.patches, built.patches)
    monkeypatch.undo()
    # a file under the right name but made from other settings is rebuilt
    stale = pp.PatchPairs.load(files[0])
    stale.config = {**stale.config, "seed": 99}
    stale.save(files[0])
    rebuilt = pp.cached_patch_pairs(tmp_path / "photos", config, seed=3, cache_dir=tmp_path / "cache", workers=0,
                                    progress=False)
    assert rebuilt.config["seed"] == 3 and pp.PatchPairs.load(files[0]).config["seed"] == 3
    # another config gets another file
    pp.cached_patch_pairs(tmp_path / "photos", pp.PatchPairConfig(keypoints_per_image=10, max_side=120), seed=3,
                          cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(list((tmp_path / "cache").glob("patch_pairs-*.npz"))) == 2


def test_patch_pair_config_errors():
    with pytest.raises(cvdeep.Error, match="views_per_point"):
        pp.PatchPairConfig(views_per_point=1)
    with pytest.raises(cvdeep.Error, match="min_keypoint_distance"):
        pp.PatchPairConfig(min_keypoint_distance=-1)
    assert pp.PatchPairConfig(detector_params={"nfeatures": 100}).to_dict()["detector_params"] == [["nfeatures", 100]]


def test_real_training_photos_give_matching_pairs(shared):
    photos = sorted((shared / "train_images" / "bsds500").glob("*.jpg"))[:2]
    if not photos:
        pytest.skip("no train_images/bsds500 photos in ../shared")
    pairs = pp.generate_patch_pairs(photos, pp.PatchPairConfig(keypoints_per_image=128), seed=0, workers=0)
    assert len(pairs) > 50
    a, b = pairs.patches[:, 0], pairs.patches[:, 1]
    assert np.median(_ncc(a, b)) > 0.8 and np.median(np.abs(_ncc(a, np.roll(b, 1, 0)))) < 0.4


# ---------------------------------------------------------------------------- evaluation


def test_fpr_at_recall_and_matching_ap_known_answers():
    positive = np.arange(1, 21, dtype=float)  # 95 % recall -> threshold 19
    negative = np.array([0.5, 18.0, 19.0, 19.5, 30.0])
    assert pe.fpr_at_recall(positive, negative) == pytest.approx(3 / 5)
    descriptors = np.eye(6)
    assert pe.matching_ap(descriptors, descriptors) == pytest.approx(1.0)
    assert pe.verification_fpr95(descriptors, descriptors) == 0.0
    # every nearest neighbour wrong: AP 0
    assert pe.matching_ap(descriptors, np.roll(descriptors, 1, axis=0)) == pytest.approx(0.0)
    # two of four correct, ranked first: precision 1 up to recall 0.5, then nothing
    a = np.array([[0.0, 0], [10, 0], [0, 10], [10, 10]])
    b = np.array([[0.0, 0.1], [10, 0.2], [10, 9], [0, 9]])
    assert pe.matching_ap(a, b) == pytest.approx(0.5)
    with pytest.raises(cvdeep.Error, match="same shape"):
        pe.matching_ap(a, b[:3])


def test_patch_evaluation_on_a_real_pair(churchill_pair):
    image_1, image_2, H = churchill_pair
    pairs = pe.image_pair_patches(image_1, image_2, H, max_keypoints=150)
    assert 30 < len(pairs) <= 150 and pairs.views == 2

    def raw(batch: torch.Tensor) -> torch.Tensor:  # mean/std normalised pixels
        flat = batch.flatten(1)
        flat = flat - flat.mean(1, keepdim=True)
        return flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-6)

    generator = torch.Generator().manual_seed(0)

    def noise(batch: torch.Tensor) -> torch.Tensor:  # knows nothing of the patches
        return torch.randn(batch.shape[0], 16, generator=generator)

    scores = pe.evaluate_patch_descriptor(raw, [pairs])
    chance = pe.evaluate_patch_descriptor(noise, [pairs])
    assert scores["pairs"] == len(pairs) and scores["sets"] == 1
    assert scores["map"] > 0.8 and scores["fpr95"] < 0.1  # an easy pair, cut with the exact geometry
    assert chance["map"] < 0.1 and chance["fpr95"] > 0.7


def test_sequence_patches_cover_the_five_pairs(shared):
    from cvdeep.eval.datasets import load_shared

    sequence = load_shared(shared / "data", ["v_churchill"])[0]
    sets = pe.sequence_patches(sequence, max_keypoints=60)
    assert len(sets) == 5 and [int(s.image_id[0]) for s in sets if len(s)] == [k for k, s in enumerate(sets) if len(s)]
    assert all(s.point_id.max() < 60 for s in sets if len(s)) and sum(len(s) for s in sets) > 60


def test_patch_evaluation_command_scores_a_published_descriptor(shared, tmp_path, capsys):
    """``python -m cvdeep.eval.patch_pairs_eval``: TFeat (official weights) on one sequence's pairs
    beats chance by far, the JSON holds what was printed, and a detector is refused."""
    import json

    out = tmp_path / "patches.json"
    assert pe.main(["--models", "tfeat-liberty", "--root", str(shared / "data"), "--sequences", "v_churchill",
                    "--max-keypoints", "80", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["results"]["tfeat-liberty"]
    assert result["sets"] == 5 and result["map"] > 0.5 and result["fpr95"] < 0.3
    assert f"{result['map']:.4f}" in capsys.readouterr().out
    with pytest.raises(cvdeep.Error, match="not a patch descriptor"):
        pe.main(["--models", "tr-cvdeep", "--root", str(shared / "data"), "--sequences", "v_churchill",
                 "--out", str(out)])
