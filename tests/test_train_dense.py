"""cvdeep.train: Synthetic Shapes, SuperPoint / D2-Net / TR losses, and tiny learning tasks.

Every expected value below is computed independently of the code under test: by hand, by brute-force
loops over the paper formulas, or by a property the rendering must have (edges through the corners).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cvdeep
from cvdeep.nets.superpoint import cell_logits_to_scores
from cvdeep.ops import soft_detection_score
from cvdeep.train import d2net_losses as d2
from cvdeep.train import superpoint_losses as sp
from cvdeep.train import synthetic_shapes as ss
from cvdeep.train import tr_losses as tr

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ss.SyntheticShapesConfig(image_size=(48, 64), supersample=2)


# ----------------------------------------------------------------------------------------------
# Synthetic Shapes


@pytest.mark.parametrize("primitive", ss.PRIMITIVES)
def test_render_is_deterministic_and_corners_lie_inside(primitive):
    image, corners = ss.render(primitive, np.random.default_rng(7), SMALL)
    again, corners_again = ss.render(primitive, np.random.default_rng(7), SMALL)
    assert image.dtype == np.uint8 and image.shape == (48, 64)
    assert corners.dtype == np.float32 and corners.ndim == 2 and corners.shape[1] == 2
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(corners, corners_again)
    assert np.all((corners[:, 0] >= -0.5) & (corners[:, 0] < 63.5) & (corners[:, 1] >= -0.5) & (corners[:, 1] < 47.5))
    if primitive in ("ellipses", "gaussian_noise"):
        assert len(corners) == 0
    if primitive == "cube":
        assert len(corners) <= 7
    assert image.std() > 1.0  # something was drawn, not a flat image


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    xs = points[:, 0].astype(np.float32).reshape(1, -1)
    ys = points[:, 1].astype(np.float32).reshape(1, -1)
    return cv2.remap(image.astype(np.float32), xs, ys, cv2.INTER_LINEAR).ravel()


def _edge_midpoint_errors(shift: float) -> np.ndarray:
    """|I(edge) - (I(inside) + I(outside)) / 2| / contrast along the edges the corners define."""
    config = ss.SyntheticShapesConfig(image_size=(96, 128))
    errors = []
    for seed in range(10):
        image, corners = ss.render("polygon", np.random.default_rng(seed), config)
        corners = corners.astype(np.float64) + shift
        for k in range(len(corners)):
            a, b = corners[k], corners[(k + 1) % len(corners)]
            length = np.linalg.norm(b - a)
            if length < 12:
                continue
            normal = np.array([a[1] - b[1], b[0] - a[0]]) / length
            along = a + np.linspace(0.3, 0.7, 9)[:, None] * (b - a)
            one, other = _bilinear(image, along + 3 * normal), _bilinear(image, along - 3 * normal)
            mid = _bilinear(image, along)
            contrast = one - other
            strong = np.abs(contrast) > 40
            errors.extend(np.abs((mid - (one + other) / 2) / contrast)[strong])
    return np.asarray(errors)


def test_corner_ground_truth_lies_on_the_rendered_edges():
    """The polygon edges drawn between the returned corners sit where the image crosses half contrast.
    A half-pixel convention error (x / 4 instead of (x + 0.5) / 4 - 0.5, i.e. 0.375 px) fails this."""
    exact, shifted = _edge_midpoint_errors(0.0), _edge_midpoint_errors(0.375)
    assert len(exact) > 50
    assert np.median(exact) < 0.1
    assert np.median(shifted) > 0.15


def test_occluded_corners_are_removed():
    canvas = ss._Canvas(np.zeros((64, 64), np.uint8))
    first, second = canvas.new_shape(), canvas.new_shape()
    square = np.array([[10.0, 10.0], [40.0, 10.0], [40.0, 40.0], [10.0, 40.0]])
    canvas.add_corners(canvas.fill_polygon(square, 200, first), first)
    canvas.add_corners(canvas.fill_polygon(np.array([[35.0, 35.0], [60.0, 35.0], [60.0, 60.0]]), 90, second), second)
    kept = {tuple(p) for p in canvas.visible_corners(2.0)}
    assert (40.0, 40.0) not in kept  # under the second shape
    assert {(10.0, 10.0), (40.0, 10.0), (10.0, 40.0), (35.0, 35.0), (60.0, 35.0), (60.0, 60.0)} <= kept


def test_generate_follows_the_probabilities_and_bad_input_raises():
    config = ss.SyntheticShapesConfig(image_size=(32, 32), supersample=1, primitives=("ellipses", "star"),
                                      probabilities=(0.0, 1.0))
    rng = np.random.default_rng(0)
    assert {ss.generate(rng, config)[0] for _ in range(5)} == {"star"}
    probabilities = ss.SyntheticShapesConfig().primitive_probabilities()
    assert probabilities[ss.PRIMITIVES.index("gaussian_noise")] == pytest.approx(0.1 / 6.6)
    with pytest.raises(cvdeep.Error, match="primitive"):
        ss.render("hexagon", rng, config)
    with pytest.raises(cvdeep.Error, match="probabilities"):
        ss.SyntheticShapesConfig(primitives=("star",), probabilities=(0.5, 0.5))
    with pytest.raises(cvdeep.Error, match="Generator"):
        ss.render("star", 3, config)


def test_write_dataset_caches_shards_and_loads(tmp_path):
    config = ss.SyntheticShapesConfig(image_size=(32, 40), supersample=2, primitives=("polygon", "star"))
    paths = ss.write_dataset(tmp_path, n_per_primitive=3, seed=5, config=config, shard_size=2)
    assert [p.name for p in paths] == ["polygon-0000.npz", "polygon-0001.npz", "star-0000.npz", "star-0001.npz"]
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert ss.write_dataset(tmp_path, n_per_primitive=3, seed=5, config=config, shard_size=2) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # cached, not rendered again
    # the same stream as rendering directly
    image, corners = ss.render("star", np.random.default_rng([5, ss.PRIMITIVES.index("star")]), config)
    dataset = ss.SyntheticShapesDataset(paths)
    assert len(dataset) == 6
    item = dataset[3]
    np.testing.assert_array_equal((item["image"][0].numpy() * 255).round().astype(np.uint8), image)
    np.testing.assert_array_equal(item["keypoints"].numpy(), corners)
    assert item["keypoint_map"].sum() == len({(int(np.floor(x + 0.5)), int(np.floor(y + 0.5))) for x, y in corners})


def test_warp_sample_and_photometric_augmentation():
    image, corners = ss.render("cube", np.random.default_rng(1), SMALL)
    shift = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0], [0.0, 0.0, 1.0]])
    warped, moved, valid = ss.warp_sample(image, corners, shift, border_margin=2)
    np.testing.assert_array_equal(warped[10:40, 10:60], image[13:43, 5:55])
    expected = corners + np.array([5.0, -3.0], np.float32)
    inside = (expected[:, 0] >= -0.5) & (expected[:, 0] < 63.5) & (expected[:, 1] >= -0.5) & (expected[:, 1] < 47.5)
    np.testing.assert_allclose(moved, expected[inside], atol=1e-4)
    # source pixel (x - 5, y + 3) exists for x >= 5, y <= 44; eroded by 2 px: x >= 7, y <= 42
    rows, cols = np.mgrid[0:48, 0:64]
    np.testing.assert_array_equal(valid, (cols >= 7) & (rows <= 42))
    augmented = ss.photometric_augmentation(image, np.random.default_rng(0))
    assert augmented.dtype == np.uint8 and augmented.shape == image.shape and not np.array_equal(augmented, image)


# ----------------------------------------------------------------------------------------------
# SuperPoint losses


def test_labels_follow_the_pixel_shuffle_order():
    keypoints = torch.zeros(1, 16, 24, dtype=torch.bool)
    keypoints[0, 10, 3] = True  # cell (1, 0), row 2 and column 3 inside it
    labels = sp.keypoint_map_to_labels(keypoints)
    assert labels.shape == (1, 2, 3) and labels.dtype == torch.int64
    assert labels[0, 1, 0] == 2 * 8 + 3
    assert (labels == sp.DUSTBIN).sum() == 5
    # labels -> confident logits -> the network's own unfolding gives the map back
    generator = torch.Generator().manual_seed(0)
    sparse = torch.zeros(2, 32, 40, dtype=torch.bool)
    cells = torch.rand(2, 4, 5, generator=generator) < 0.6
    offsets = torch.randint(0, 64, (2, 4, 5), generator=generator)
    for b, i, j in cells.nonzero().tolist():
        sparse[b, 8 * i + offsets[b, i, j] // 8, 8 * j + offsets[b, i, j] % 8] = True
    logits = 50.0 * F.one_hot(sp.keypoint_map_to_labels(sparse), 65).permute(0, 3, 1, 2).float()
    assert torch.equal(cell_logits_to_scores(logits)[:, 0] > 0.5, sparse)


def test_labels_pick_one_of_several_keypoints_at_random():
    keypoints = torch.zeros(1, 8, 8, dtype=torch.bool)
    keypoints[0, 1, 2] = keypoints[0, 6, 5] = True
    picks = {int(sp.keypoint_map_to_labels(keypoints, rng=torch.Generator().manual_seed(s))[0, 0, 0])
             for s in range(40)}
    assert picks == {1 * 8 + 2, 6 * 8 + 5}
    same = [int(sp.keypoint_map_to_labels(keypoints, rng=torch.Generator().manual_seed(3))[0, 0, 0]) for _ in range(2)]
    assert same[0] == same[1]
    with pytest.raises(cvdeep.Error, match="multiple of cell"):
        sp.keypoint_map_to_labels(torch.zeros(1, 12, 16))


def test_detector_loss_ignores_cells_touching_invalid_pixels():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 65, 2, 3, generator=generator)
    labels = torch.randint(0, 65, (2, 2, 3), generator=generator)
    valid = torch.ones(2, 16, 24, dtype=torch.bool)
    valid[0, 15, 23] = False  # spoils cell (1, 2) of image 0
    valid[1, :8, :] = False  # the whole first row of cells of image 1
    expected, count = 0.0, 0
    for b in range(2):
        for i in range(2):
            for j in range(3):
                if valid[b, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8].all():
                    log_probs = logits[b, :, i, j] - torch.logsumexp(logits[b, :, i, j], dim=0)
                    expected -= float(log_probs[labels[b, i, j]])
                    count += 1
    assert count == 8
    assert float(sp.detector_loss(logits, labels, valid)) == pytest.approx(expected / count, rel=1e-5)
    assert float(sp.detector_loss(logits, labels)) == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)


def _descriptor_loss_by_loops(desc_a, desc_b, homography, valid_b, mp, mn, lam, cell):
    batch, _, hc, wc = desc_a.shape
    total, norm = 0.0, 0.0
    for b in range(batch):
        for i2 in range(hc):
            for j2 in range(wc):
                if not valid_b[b, cell * i2 : cell * i2 + cell, cell * j2 : cell * j2 + cell].all():
                    continue
                norm += hc * wc
                d2 = desc_b[b, :, i2, j2] / desc_b[b, :, i2, j2].norm()
                centre_b = np.array([cell * j2 + (cell - 1) / 2, cell * i2 + (cell - 1) / 2])
                for i in range(hc):
                    for j in range(wc):
                        centre_a = np.array([cell * j + (cell - 1) / 2, cell * i + (cell - 1) / 2, 1.0])
                        p = homography[b].numpy() @ centre_a
                        s = float(np.linalg.norm(p[:2] / p[2] - centre_b) <= cell)
                        dot = float(desc_a[b, :, i, j] @ d2 / desc_a[b, :, i, j].norm())
                        total += lam * s * max(0.0, mp - dot) + (1 - s) * max(0.0, dot - mn)
    return total / norm


def test_descriptor_loss_matches_the_paper_formula():
    generator = torch.Generator().manual_seed(2)
    desc_a = torch.randn(2, 5, 3, 4, generator=generator, dtype=torch.float64)
    desc_b = torch.randn(2, 5, 3, 4, generator=generator, dtype=torch.float64)
    angle = 0.3
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 6.0], [math.sin(angle), math.cos(angle), -4.0],
                             [0, 0, 1]])
    homography = torch.stack([torch.tensor([[1.0, 0, 8], [0, 1, 0], [0, 0, 1]]), rotation]).double()
    valid_b = torch.ones(2, 24, 32, dtype=torch.bool)
    valid_b[1, 20:, :5] = False
    got = sp.descriptor_loss(desc_a, desc_b, homography, valid_b, 1.0, 0.2, 250.0, 8)
    expected = _descriptor_loss_by_loops(desc_a, desc_b, homography, valid_b, 1.0, 0.2, 250.0, 8)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(cvdeep.Error, match="homography"):
        sp.descriptor_loss(desc_a, desc_b, homography[0])


def test_descriptor_loss_positive_radius_on_an_identity_warp():
    """Identical descriptors everywhere (d.d' = 1): positives cost 0, negatives 1 - 0.2 = 0.8. On a
    5x6 grid the paper's "<= 8 px" makes every cell and its 4-neighbours (exactly 8 px away)
    positives: 30 + 2 * (5 * 5 + 4 * 6) = 128 of the 900 pairs; rpautrat's 7.5 px only the 30 cells."""
    desc = torch.ones(1, 3, 5, 6)
    identity = torch.eye(3)[None]
    assert float(sp.descriptor_loss(desc, desc, identity)) == pytest.approx(0.8 * (900 - 128) / 900, rel=1e-5)
    assert float(sp.descriptor_loss(desc, desc, identity, positive_radius=7.5)) == pytest.approx(
        0.8 * (900 - 30) / 900, rel=1e-5)


def test_keypoints_to_map_rounds_to_the_nearest_pixel():
    keypoints = torch.tensor([[2.49, 0.5], [-0.5, 3.0], [7.6, 1.0], [-0.51, 2.0]])
    expected = torch.zeros(4, 8, dtype=torch.bool)
    expected[1, 2] = expected[3, 0] = True  # (2.49, 0.5) -> column 2, row 1; (-0.5, 3) -> column 0
    assert torch.equal(sp.keypoints_to_map(keypoints, (4, 8)), expected)  # 7.6 -> column 8: outside


def test_warping_keeps_the_pixel_centre_convention():
    """An integer translation moves pixels exactly (a half-pixel slip would interpolate); a 2x zoom
    about the origin sends pixel x to 2x, so warped pixel 2x reads source pixel x exactly."""
    image = torch.rand(1, 1, 12, 16, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([[[1.0, 0, 3], [0, 1, 2], [0, 0, 1]]])
    warped = sp._warp_image(image, shift, (12, 16))
    torch.testing.assert_close(warped[0, 0, 2:, 3:], image[0, 0, :-2, :-3])
    assert float(warped[0, 0, :2].abs().sum() + warped[0, 0, :, :3].abs().sum()) == 0.0
    zoom = torch.tensor([[[2.0, 0, 0], [0, 2, 0], [0, 0, 1]]])
    torch.testing.assert_close(sp._warp_image(image, zoom, (24, 32))[0, 0, ::2, ::2], image[0, 0])


def test_homographic_adaptation_counts_only_what_each_warp_saw():
    h, w = 48, 64
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((xs - 30) ** 2 + (ys - 22) ** 2) / (2 * 6.0**2))[None, None]
    homographies = []
    for angle, tx, ty in ((0.2, 10.0, -6.0), (-0.3, -12.0, 8.0), (0.0, 20.0, 0.0)):
        c, s = math.cos(angle), math.sin(angle)
        centre = torch.tensor([[1, 0, 32.0], [0, 1, 24.0], [0, 0, 1]])
        rotation = torch.tensor([[c, -s, tx], [s, c, ty], [0, 0, 1]])
        homographies.append(centre @ rotation @ torch.linalg.inv(centre))
    homographies = torch.stack(homographies)
    # a detector answering 1 everywhere: the mean is 1 exactly where counted, i.e. everywhere
    ones = sp.homographic_adaptation(lambda x: torch.ones_like(x[:, :1]), blob, homographies)
    torch.testing.assert_close(ones, torch.ones(h, w))
    # a covariant "detector" (the image itself): warping back gives the image again
    mean = sp.homographic_adaptation(lambda x: x, blob, homographies)
    assert float((mean - blob[0, 0]).abs().max()) < 0.02
    maximum = sp.homographic_adaptation(lambda x: x, blob, homographies, aggregation="max")
    assert bool((maximum >= blob[0, 0] - 1e-6).all())
    # also without erosion: a pixel counts a warp only where the warp's values were read
    sums = sp.homographic_adaptation(lambda x: torch.ones_like(x[:, :1]), blob, homographies[:1], valid_margin=0)
    torch.testing.assert_close(sums, torch.ones(h, w))
    with pytest.raises(cvdeep.Error, match="aggregation"):
        sp.homographic_adaptation(lambda x: x, blob, homographies, aggregation="sum")


def test_pseudo_ground_truth_suppresses_and_truncates():
    heat = torch.zeros(32, 32)
    heat[5, 5], heat[6, 8], heat[20, 25], heat[28, 2] = 0.9, 0.5, 0.7, 0.01
    keypoints, scores = sp.pseudo_ground_truth(heat, nms_radius=4, threshold=0.015)
    assert keypoints.dtype == torch.float32
    assert keypoints.tolist() == [[5.0, 5.0], [25.0, 20.0]] and scores.tolist() == pytest.approx([0.9, 0.7])
    keypoints, _ = sp.pseudo_ground_truth(heat, nms_radius=1, threshold=0.0, top_k=3)
    assert keypoints.tolist() == [[5.0, 5.0], [25.0, 20.0], [8.0, 6.0]]


# ----------------------------------------------------------------------------------------------
# D2-Net


def test_soft_detection_score_of_a_hand_made_map():
    """2 channels, 2x2 map, maximum 1 (so y / max = y). By hand, with the 3x3 window padded by exp(0):
    pixel (0, 0): channel 0 wins, alpha = e / (5 padded + e + 3 x exp(0)) = e / (8 + e), beta = 1;
    pixel (0, 1): channel 1 wins, alpha = e^0.5 / (8 + e^0.5), beta = 0.5 / 0.5 = 1; others 0."""
    features = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.5], [0.0, 0.0]]]])
    g00, g01 = math.e / (8 + math.e), math.exp(0.5) / (8 + math.exp(0.5))
    expected = torch.tensor([[g00, g01], [0.0, 0.0]]) / (g00 + g01)
    torch.testing.assert_close(soft_detection_score(features)[0], expected)
    # the op divides by the per-image maximum (official code): scaling the features changes nothing,
    # although the seed's literal alpha = exp(D) / sum exp(D) would change
    torch.testing.assert_close(soft_detection_score(3.0 * features), soft_detection_score(features))


def _d2_loss_by_loops(fa, fb, pos_a, pos_b, margin, radius):
    da, db = F.normalize(fa, dim=0), F.normalize(fb, dim=0)
    sa, sb = soft_detection_score(fa[None])[0], soft_detection_score(fb[None])[0]
    num, den = 0.0, 0.0
    for (xa, ya), (xb, yb) in zip(pos_a.tolist(), pos_b.tolist()):
        p = float(((da[:, ya, xa] - db[:, yb, xb]) ** 2).sum())
        n = math.inf
        for y in range(fb.shape[1]):
            for x in range(fb.shape[2]):
                if max(abs(x - xb), abs(y - yb)) > radius:
                    n = min(n, float(((da[:, ya, xa] - db[:, y, x]) ** 2).sum()))
        for y in range(fa.shape[1]):
            for x in range(fa.shape[2]):
                if max(abs(x - xa), abs(y - ya)) > radius:
                    n = min(n, float(((db[:, yb, xb] - da[:, y, x]) ** 2).sum()))
        weight = float(sa[ya, xa] * sb[yb, xb])
        num += weight * max(0.0, margin + p - n)
        den += weight
    return num / den


def test_d2net_loss_matches_the_official_definition():
    generator = torch.Generator().manual_seed(4)
    fa = torch.rand(6, 7, 8, generator=generator, dtype=torch.float64)
    fb = torch.rand(6, 7, 8, generator=generator, dtype=torch.float64)
    pos_a = torch.tensor([[0, 0], [3, 2], [7, 6], [5, 1]])
    pos_b = torch.tensor([[1, 0], [4, 3], [6, 6], [5, 2]])
    for radius in (1, 2):
        got = d2.d2net_loss(fa, fb, pos_a, pos_b, margin=1.0, safe_radius=radius)
        assert float(got) == pytest.approx(_d2_loss_by_loops(fa, fb, pos_a, pos_b, 1.0, radius), rel=1e-9)
    with pytest.raises(cvdeep.Error, match="outside"):
        d2.d2net_loss(fa, fb, pos_a, pos_b + 7)


def test_correspondences_from_homography():
    pos_a, pos_b = d2.correspondences_from_homography(torch.eye(3), (4, 5), (4, 5), scaling_steps=3)
    assert len(pos_a) == 20 and torch.equal(pos_a, pos_b)
    shift = torch.tensor([[1.0, 0, 16], [0, 1, -8], [0, 0, 1]])  # 2 cells right, 1 up at stride 8
    pos_a, pos_b = d2.correspondences_from_homography(shift, (4, 5), (4, 5), scaling_steps=3)
    assert torch.equal(pos_b, pos_a + torch.tensor([2, -1]))
    assert len(pos_a) == 3 * 3  # columns 0..2 and rows 1..3 stay inside
    assert torch.equal(d2.downscale_positions(d2.upscale_positions(pos_a.double(), 2), 2), pos_a.double())


# ----------------------------------------------------------------------------------------------
# TR


def test_ema_update_is_exactly_the_rule():
    target, online = nn.Linear(1, 1), nn.Linear(1, 1)  # two parameters: weight and bias
    with torch.no_grad():
        target.weight.fill_(1.0), target.bias.fill_(-2.0)
        online.weight.fill_(3.0), online.bias.fill_(2.0)
    tr.ema_update(target, online, tau=0.75)
    assert target.weight.item() == 0.75 * 1.0 + 0.25 * 3.0 == 1.5
    assert target.bias.item() == 0.75 * -2.0 + 0.25 * 2.0 == -1.0
    assert online.weight.item() == 3.0  # the online network is untouched
    bn_target, bn_online = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    bn_online.running_mean.fill_(4.0)
    bn_online.num_batches_tracked.fill_(7)
    tr.ema_update(bn_target, bn_online, tau=0.5)
    assert bn_target.running_mean.tolist() == [2.0, 2.0] and int(bn_target.num_batches_tracked) == 7
    tr.ema_update(bn_target, bn_online, tau=0.5, buffers="copy")
    assert bn_target.running_mean.tolist() == [4.0, 4.0]
    with pytest.raises(cvdeep.Error, match="tau"):
        tr.ema_update(target, online, tau=1.5)
    with pytest.raises(cvdeep.Error, match="names"):
        tr.ema_update(target, nn.Linear(1, 1, bias=False), tau=0.5)


def test_tr_loss_values_on_hand_made_vectors():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    proj = torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # cosines 1 and 0
    assert tr.prediction_loss(pred, proj).tolist() == [0.0, 1.0]
    scores_a, scores_b = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 3.0])  # weights 1/4, 3/4
    assert float(tr.tr_loss(pred, proj, scores_a, scores_b)) == pytest.approx((0.25 * 0 + 0.75 * 1) / 2)
    labels = torch.tensor([0.5, 1.0])
    assert float(tr.tr_loss(pred, proj, scores_a, scores_b, labels)) == pytest.approx((0.25 * 1.5 + 0.75 * 1.0) / 2)
    assert float(tr.tr_loss(pred, proj, scores_a, scores_b, labels, soft_form="target")) == pytest.approx(
        (0.25 * 0.5 + 0.75 * 1.0) / 2)
    got = tr.soft_labels(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [3.0, 3.0]]), lam=0.5,
                         alpha=1.0)
    assert got.tolist() == pytest.approx([math.exp(-2.0), 1.0])
    assert tr.soft_labels(torch.eye(2), torch.eye(2).flip(0), lam=1.0, alpha=0.0).tolist() == [1.0, 1.0]
    with pytest.raises(cvdeep.Error, match="positive sum"):
        tr.tr_loss(pred, proj, torch.zeros(2), scores_b)


def test_no_gradient_reaches_the_target_branch():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
    predictor = nn.Linear(8, 8)
    target = tr.make_target(online)
    assert not any(p.requires_grad for p in target.parameters())
    for p in target.parameters():  # even with gradients switched on, the loss must stop them
        p.requires_grad_(True)
    x_a, x_b = torch.randn(5, 4), torch.randn(5, 4)
    scores = torch.rand(5, requires_grad=True)
    labels = tr.soft_labels(online(x_a), target(x_b), lam=0.5, alpha=1.0)
    loss = tr.tr_loss(predictor(online(x_a)), target(x_b), scores, scores.detach() + 1, labels, soft_form="target")
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in online.parameters())
    assert scores.grad is not None


def test_curriculum_schedule():
    curriculum = tr.Curriculum(total_steps=100, strength=(0.2, 1.0), alpha=(0.0, 2.0))
    assert curriculum(0) == (0.2, 0.0, pytest.approx(0.996))
    assert curriculum(50).strength == pytest.approx(0.6) and curriculum(50).alpha == pytest.approx(1.0)
    assert curriculum(50).tau == pytest.approx(0.998)
    assert curriculum(500) == (1.0, 2.0, 1.0)
    assert tr.Curriculum(100, schedule="cosine").strength_at(25) == pytest.approx(
        0.2 + 0.8 * (1 - math.cos(math.pi / 4)) / 2)
    with pytest.raises(cvdeep.Error):
        tr.Curriculum(total_steps=0)


# ----------------------------------------------------------------------------------------------
# Tiny learning tasks


def _squares(rng: np.random.Generator, count: int, size: int = 48) -> tuple[np.ndarray, list[np.ndarray]]:
    """Filled axis-aligned squares (exact corners, pixel-centre convention) on a noisy background."""
    images, corners = [], []
    for _ in range(count):
        side = rng.uniform(0.3 * size, 0.55 * size)
        x0, y0 = rng.uniform(5, size - 6 - side, size=2)
        square = np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]])
        background = rng.uniform(0, 255)
        foreground = (background + rng.uniform(70, 185)) % 256
        canvas = np.full((4 * size, 4 * size), background, np.float32)
        polygon = np.round(((square + 0.5) * 4 - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [polygon], float(foreground), cv2.LINE_8, 4)
        image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA) + rng.normal(0, 6, (size, size))
        images.append(np.clip(image, 0, 255) / 255.0)
        corners.append(square)
    return np.stack(images).astype(np.float32), corners


class _TinyMagicPoint(nn.Module):
    """SuperPoint's detector layout (conv -> ReLU -> BatchNorm blocks as rpautrat's, three 2x2
    poolings, a 65-way head) at a tiny width."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout)]

        self.body = nn.Sequential(*block(1, 8), nn.MaxPool2d(2), *block(8, 16), nn.MaxPool2d(2),
                                  *block(16, 32), nn.MaxPool2d(2), *block(32, 32), nn.Conv2d(32, 65, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_magicpoint_learns_the_corners_of_squares():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, corners = _squares(rng, 128)
    keypoint_maps = torch.stack([sp.keypoints_to_map(torch.from_numpy(c), (48, 48)) for c in corners])
    images = torch.from_numpy(images)[:, None]
    net = _TinyMagicPoint()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        index = torch.randint(0, len(images), (16,), generator=generator)
        loss = sp.detector_loss(net(images[index]), sp.keypoint_map_to_labels(keypoint_maps[index], rng=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_images, test_corners = _squares(np.random.default_rng(123), 8)
    net.eval()
    with torch.no_grad():
        heat = cell_logits_to_scores(net(torch.from_numpy(test_images)[:, None]))[:, 0]
    found = []
    for b in range(len(test_images)):
        keypoints, _ = sp.pseudo_ground_truth(heat[b], nms_radius=4, threshold=0.0, top_k=4)
        distance = torch.cdist(torch.from_numpy(test_corners[b]).float(), keypoints)
        found.append(int((distance.min(dim=1).values <= 2.0).sum()))
    # 3 or 4 of the 4 corners within 2 px on (nearly) every held-out square
    assert sum(found) >= 3 * len(found) and sum(f >= 3 for f in found) >= len(found) - 1, found


def _texture_pair(seed: int, size: int = 48, dx: int = 4,
                  dy: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((size + 16, size + 16)).astype(np.float32), (0, 0), 1.5)
    base = (base - base.min()) / (base.max() - base.min())
    a = base[8 : 8 + size, 8 : 8 + size]
    b = base[8 - dy : 8 - dy + size, 8 - dx : 8 - dx + size]  # B(x) = A(x - (dx, dy))
    homography = torch.tensor([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])
    return torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], homography


def _tiny_encoder(out: int = 16) -> nn.Module:
    """Stride 4 (two poolings, scaling_steps=2); the last conv has no ReLU, as D2-Net's training
    network ends at conv4_3 (the soft detection applies the ReLU itself)."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, out, 3, padding=1))


def test_d2net_loss_decreases_on_a_toy_pair():
    torch.manual_seed(0)
    image_a, image_b, homography = _texture_pair(0)
    net = _tiny_encoder()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        value = d2.d2net_batch_loss(net(image_a), net(image_b), homography[None], scaling_steps=2,
                                    min_correspondences=16)
        assert value is not None
        return value

    with torch.no_grad():
        initial = float(loss())
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        final = float(loss())
    assert final < 0.6 * initial, (initial, final)
    # a pair with too few correspondences is skipped, as in the official code
    far = torch.tensor([[[1.0, 0, 400], [0, 1, 0], [0, 0, 1]]])
    assert d2.d2net_batch_loss(net(image_a), net(image_b), far, scaling_steps=2) is None


def test_tr_loss_decreases_on_a_toy_pair():
    torch.manual_seed(0)
    image_a, image_b, homography = _texture_pair(1)
    encoder, projector, predictor = _tiny_encoder(), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)
    online = nn.Sequential(encoder, projector)
    target = tr.make_target(online)
    optimizer = torch.optim.Adam([*online.parameters(), *predictor.parameters()], lr=3e-3)
    pos_a, pos_b = d2.correspondences_from_homography(homography, (12, 12), (12, 12), scaling_steps=2)
    curriculum = tr.Curriculum(total_steps=80, tau_base=0.9)

    def loss(soft: bool, step: int) -> torch.Tensor:
        features = encoder(image_a)
        pred = predictor(projector(features))[0, :, pos_a[:, 1], pos_a[:, 0]].T
        with torch.no_grad():
            proj = target(image_b)[0, :, pos_b[:, 1], pos_b[:, 0]].T
        scores = soft_detection_score(features)[0, pos_a[:, 1], pos_a[:, 0]]
        labels = None
        if soft:  # the target branch's view of A against B's, at the correspondences
            y_a = target(image_a)[0, :, pos_a[:, 1], pos_a[:, 0]].T
            labels = tr.soft_labels(y_a, proj, lam=0.5, alpha=curriculum(step).alpha)
        return tr.tr_loss(pred, proj, scores, torch.ones_like(scores), labels, soft_form="target")

    initial_hard, initial_soft = loss(False, 0).item(), loss(True, 40).item()
    for step in range(80):
        value = loss(step % 2 == 1, step)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        tr.ema_update(target, online, curriculum(step).tau)
    final_hard, final_soft = loss(False, 80).item(), loss(True, 40).item()
    assert final_hard < 0.5 * initial_hard, (initial_hard, final_hard)
    assert final_soft < initial_soft, (initial_soft, final_soft)
