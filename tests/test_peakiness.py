"""ASLFeat's multi-level peakiness detection (``cvdeep.nets.peakiness``) and TR's use of it."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cvdeep
from cvdeep.models import build_model
from cvdeep.nets import peakiness
from cvdeep.nets.tr import TRConfig
from feature_checks import GRAF, load_image

pytestmark = [pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning"),
              pytest.mark.usefixtures("one_thread")]


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


def test_score_of_a_known_map_equals_the_hand_computed_value():
    """Channel 0: a single 1 at the centre of a 7 x 7 map; channel 1: 0.5 everywhere. At the centre
    alpha_0 = softplus(1 - 1/9), beta_0 = softplus(1 - 0.75), alpha_1 = softplus(0),
    beta_1 = softplus(0.5 - 0.75); the score is the larger product, and the peak is no edge
    (Hessian -2, -2, 0: trace^2 / det = 4)."""
    x = torch.zeros(1, 2, 7, 7)
    x[0, 0, 3, 3] = 1.0
    x[0, 1] = 0.5
    masked, raw = peakiness.level_score(x, dilation=1)
    expected = max(softplus(8 / 9) * softplus(0.25), softplus(0.0) * softplus(-0.25))
    assert raw[0, 0, 3, 3].item() == pytest.approx(expected, rel=1e-6)
    assert masked[0, 0, 3, 3].item() == pytest.approx(expected, rel=1e-6)
    # twice the map: the score divides by the map's maximum, so nothing changes
    torch.testing.assert_close(peakiness.level_score(2 * x, dilation=1)[1], raw)


def test_edges_are_masked_and_corners_are_not():
    """A vertical line is an edge (one Hessian eigenvalue is zero) where its channel is the maximum;
    the end of a line segment is not."""
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 3:12, 7] = 1.0
    masked, raw = peakiness.level_score(x, dilation=1)
    assert raw[0, 0, 7, 7] > 0 and masked[0, 0, 7, 7] == 0
    assert masked[0, 0, 3, 7] > 0  # the segment's end


def _reference_score(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """The unmasked score computed on the whole map at once (reflect padding, dilated mean)."""
    x = x / x.max()
    channels = x.shape[1]
    mean = F.conv2d(F.pad(x, (dilation,) * 4, mode="reflect"), torch.full((channels, 1, 3, 3), 1 / 9),
                    dilation=dilation, groups=channels)
    return (F.softplus(x - mean) * F.softplus(x - x.mean(1, keepdim=True))).amax(1, keepdim=True)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 5), (2, 6), (3, 2)])
def test_maps_smaller_than_the_neighbourhood_are_scored(height, width):
    """A level of 1-3 cells (a tiny image's stride-2 map) with dilation 3: reflection folds back as
    often as needed (torch's reflect padding refuses a pad as large as the map)."""
    x = torch.rand(1, 4, height, width, generator=torch.Generator().manual_seed(height * 10 + width))
    masked, raw = peakiness.level_score(x, dilation=3)
    assert torch.isfinite(masked).all()
    x = x / x.max()
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect"))  # folds repeatedly
    mean = sum(padded[..., 3 * a : 3 * a + height, 3 * b : 3 * b + width] for a in range(3) for b in range(3)) / 9
    expected = (F.softplus(x - mean) * F.softplus(x - x.mean(1, keepdim=True))).amax(1, keepdim=True)
    torch.testing.assert_close(raw, expected)


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_row_chunks_give_the_whole_map_score(dilation, monkeypatch):
    """Chunks of 5 rows (each with its dilation halo, reflected at the map's top and bottom) give
    the score of the whole map at once."""
    x = torch.rand(1, 8, 23, 17, generator=torch.Generator().manual_seed(dilation))
    whole_masked, whole = peakiness.level_score(x, dilation)
    torch.testing.assert_close(whole, _reference_score(x, dilation))
    monkeypatch.setattr(peakiness, "CHUNK_VALUES", 5 * 8 * 17)
    chunked_masked, chunked = peakiness.level_score(x, dilation)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)  # sums in another order
    assert torch.equal(chunked_masked > 0, whole_masked > 0)


def _level(features: torch.Tensor, stride: int) -> peakiness.Level:
    """One level of weight 1 scored with dilation 1."""
    return peakiness.Level(*peakiness.level_score(features, 1), stride=stride, weight=1.0)


def test_a_band_scored_with_the_whole_maximum_matches_the_whole_away_from_its_cut():
    """Rows 10..30 of a level, scored with the whole level's maximum, equal the whole level's
    scores except within the dilation of the cut edges (the second pass of ``TRNet.level_scores``)."""
    x = torch.rand(1, 6, 40, 20, generator=torch.Generator().manual_seed(4))
    whole_masked, whole = peakiness.level_score(x, 2)
    band_masked, band = peakiness.level_score(x[..., 10:30, :], 2, x.amax())
    torch.testing.assert_close(band[..., 2:-2, :], whole[..., 12:28, :], atol=1e-6, rtol=0)
    assert torch.equal(band_masked[..., 2:-2, :] > 0, whole_masked[..., 12:28, :] > 0)
    assert not torch.allclose(peakiness.level_score(x[..., 10:30, :], 2)[1], band)  # its own maximum differs


def test_detect_refines_a_blob_to_its_sub_pixel_centre():
    """A Gaussian blob centred at (x, y) = (20.3, 17.6) in a stride-1 level: one keypoint, within
    0.15 px of the centre (a whole-pixel detection would be 0.5 px off); a stride-2 level of the
    same blob (cell q at pixel 2q + 0.5) puts it at the same place within 0.35 px."""
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(48.0), indexing="ij")
    blob = torch.exp(-((cols - 20.3) ** 2 + (rows - 17.6) ** 2) / (2 * 3.0**2))[None, None]
    valid = torch.ones(1, 1, 40, 48, dtype=torch.bool)
    keypoints, scores = peakiness.detect([_level(blob, 1)], (40, 48), valid)
    best = keypoints[scores.argmax()]
    assert torch.dist(best, torch.tensor([20.3, 17.6])) < 0.15
    rows2, cols2 = torch.meshgrid(torch.arange(20.0) * 2 + 0.5, torch.arange(24.0) * 2 + 0.5, indexing="ij")
    coarse = torch.exp(-((cols2 - 20.3) ** 2 + (rows2 - 17.6) ** 2) / (2 * 3.0**2))[None, None]
    keypoints, scores = peakiness.detect([_level(coarse, 2)], (40, 48), valid)
    assert torch.dist(keypoints[scores.argmax()], torch.tensor([20.3, 17.6])) < 0.35


def test_a_stride_4_cell_lands_on_its_documented_pixel():
    """A peak at cell (9, 7) of a stride-4 level sits at pixel (4p + 1.5) = (37.5, 29.5); resizing
    with corner alignment instead of half-pixel centres would put it about 1 px away."""
    level = torch.zeros(1, 1, 10, 12)
    level[0, 0, 7, 9] = 1.0
    valid = torch.ones(1, 1, 40, 48, dtype=torch.bool)
    keypoints, scores = peakiness.detect([_level(level, 4)], (40, 48), valid)
    assert torch.dist(keypoints[scores.argmax()], torch.tensor([37.5, 29.5])) < 0.3


def test_detect_keeps_the_border_and_the_mask_free():
    """No keypoint within 5 px of the edge or on an invalid pixel."""
    x = torch.rand(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    valid[..., :, 20:] = False
    keypoints, _ = peakiness.detect([_level(x, 1)], (32, 32), valid)
    assert len(keypoints) > 5
    pixels = keypoints.round()
    assert pixels.min() >= 4 and pixels[:, 1].max() <= 27 and pixels[:, 0].max() <= 20


def test_tr_multilevel_detects_at_full_resolution(data_dir):
    """TR's default ``detection='multilevel'`` (packaged weights): keypoints off the stride-4 grid,
    ``describe`` gives the descriptors ``extract`` gave, and ``nfeatures`` is honoured."""
    image = load_image(data_dir, GRAF, (480, 360))
    gray = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).float()[None, None] / 255
    network = build_model("tr-cvdeep").eval()
    valid = torch.ones_like(gray, dtype=torch.bool)
    config = TRConfig(nfeatures=500)
    assert config.detection == "multilevel"
    with torch.no_grad():
        features = network.extract(gray, valid, config)
        described = network.describe(gray, features["keypoints"], config=config)
    assert len(features["keypoints"]) == 500
    assert torch.all(features["scores"][:-1] >= features["scores"][1:])
    torch.testing.assert_close(described, features["descriptors"], atol=1e-5, rtol=0)
    phase = torch.remainder(features["keypoints"] - 1.5, 4.0).round()
    assert (phase != 0).any(dim=1).float().mean() > 0.5  # most are not on 4p + 1.5


def test_multilevel_does_not_combine_with_upsampled():
    """``upsampled`` belongs to D2-Net's detection; with the default detection it is refused."""
    image = (torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) * 255).numpy().astype("uint8")
    with pytest.raises(cvdeep.Error, match="detection='d2'"):
        cvdeep.TR_create(upsampled=True).detect(image)
    assert isinstance(cvdeep.TR_create(detection="d2", upsampled=True).detect(image), tuple)
    with pytest.raises(cvdeep.Error, match="detection"):
        cvdeep.TR_create(detection="aslfeat")
