"""D2-Net's hard detection on a describe-and-detect feature map, shared by ``D2Net`` and ``TR``.

In D2-Net's scheme (Dusmanu et al., CVPR 2019, Sec. 3.2) one dense map y of shape (C, h, w),
non-negative, both describes and detects: a cell (i, j) is a keypoint in channel k when

- k is the channel maximum there: k = argmax_t y^t_ij;
- y^k_ij is the maximum of its (2r+1) x (2r+1) spatial window in channel k (r = 1: 3x3, the paper);
- channel k passes the edge test of SIFT: with the finite-difference Hessian of y^k at (i, j),
  trace^2 / det <= (r_e + 1)^2 / r_e and det > 0, r_e = 5 (the official ``process_multiscale``).

A quadratic fit (one Newton step with the same finite differences) refines the cell to sub-pixel;
steps of half a cell or more along either axis are rejected, as are refined positions outside the
map. Feature position p sits at image pixel 2p + 0.5 per 2x2 pooling (``feature_to_image``; for two
poolings 4p + 1.5, the ``upscale_positions`` of the reference code).

Sources (facts only, no code copied): the paper above and mihaidusmanu/d2-net (Clear BSD),
``lib/model_test.py`` (``HardDetectionModule``, ``HandcraftedLocalizationModule``) and
``lib/utils.py`` (``upscale_positions``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..precision import full_precision

EDGE_THRESHOLD = 5.0
"""r_e of the edge test (D2-Net's ``edge_threshold``)."""


def hessian_filters() -> torch.Tensor:
    """(5, 1, 3, 3) finite-difference kernels: d/di, d/dj, d2/di2, d2/didj, d2/dj2 (i = row, j = column)."""
    di = torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    dii = torch.tensor([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, 1.0, 0.0]])
    dij = 0.25 * torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]])
    return torch.stack([di, di.t(), dii, dij, dii.t()])[:, None]


def feature_to_image(positions: torch.Tensor, poolings: int = 2) -> torch.Tensor:
    """Feature-map (x, y) (..., 2) -> image pixels: p -> 2p + 0.5 per 2x2 pooling (OpenCV pixel centres)."""
    for _ in range(poolings):
        positions = positions * 2 + 0.5
    return positions


def derivatives(features: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(5, C, h, w): di, dj, dii, dij, djj of every channel of a (1, C, h, w) map (zero padding, as the
    reference code). ``filters``: ``hessian_filters()`` on the map's device and dtype."""
    channels, height, width = features.shape[1:]
    with full_precision():  # post-processing: float32 under precision="bf16" (cvdeep.precision)
        result = F.conv2d(features.reshape(channels, 1, height, width), filters, padding=1)
    return result.permute(1, 0, 2, 3)


DETECTION_BYTES = 256 << 20
"""Working memory of one channel chunk of ``hard_detection`` (5 derivative maps and masks per channel)."""


def hard_detection(
    features: torch.Tensor, filters: torch.Tensor, radius: int = 1, edge_threshold: float = EDGE_THRESHOLD
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detections of one (1, C, h, w) non-negative map (see the module docstring).

    Returns their (channel, i, j) indices (3, K) and the sub-pixel steps (di, dj) of the quadratic
    fit (2, K), in cells. The channels run in chunks of ``DETECTION_BYTES``, so the derivative maps
    (five per channel) never exist for all channels at once.
    """
    fmap = features[0]
    channels, height, width = fmap.shape
    channel_max = fmap.max(dim=0, keepdim=True).values
    chunk = max(1, DETECTION_BYTES // max(1, height * width * 4 * 16))
    found, steps = [], []
    for start in range(0, channels, chunk):
        part = features[:, start : start + chunk]
        di, dj, dii, dij, djj = derivatives(part, filters)
        values = part[0]
        detected = (values == channel_max) & (values == F.max_pool2d(part, 2 * radius + 1, stride=1, padding=radius)[0])
        detected &= not_edge(dii, dij, djj, edge_threshold)
        channel, i, j = torch.nonzero(detected, as_tuple=True)
        di, dj, dii, dij, djj = (m[channel, i, j] for m in (di, dj, dii, dij, djj))
        steps.append(newton_step(di, dj, dii, dij, djj))
        found.append(torch.stack([channel + start, i, j]))
    return torch.cat(found, dim=1), torch.cat(steps, dim=1)


def not_edge(dii: torch.Tensor, dij: torch.Tensor, djj: torch.Tensor, edge_threshold: float) -> torch.Tensor:
    """SIFT's edge test on Hessian entries: trace^2 / det <= (r_e + 1)^2 / r_e and det > 0."""
    det = dii * djj - dij * dij
    trace = dii + djj
    return (trace * trace / det <= (edge_threshold + 1) ** 2 / edge_threshold) & (det > 0)


def newton_step(di: torch.Tensor, dj: torch.Tensor, dii: torch.Tensor, dij: torch.Tensor,
                djj: torch.Tensor) -> torch.Tensor:
    """(2, N) step (di, dj) to the extremum of the quadratic with these derivatives: -H^-1 g
    (infinite or NaN where the Hessian is singular; callers test det first)."""
    det = dii * djj - dij * dij
    return torch.stack([-(djj * di - dij * dj) / det, -(-dij * di + dii * dj) / det])


def refine(features: torch.Tensor, detections: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel feature-map keypoints of the detections of ``hard_detection`` on ``features`` (1, C, h, w).

    Returns (x, y) positions (N, 2) in feature cells, refined by the quadratic step (detections
    whose step is half a cell or more along an axis, or whose refined position leaves the map,
    are dropped), and each keypoint's activation y^k at its detected cell (N,).
    """
    channel, i, j = detections
    keep = (steps.abs() < 0.5).all(dim=0)
    channel, i, j, step = channel[keep], i[keep], j[keep], steps[:, keep]
    xy = torch.stack([j + step[1], i + step[0]], dim=1)
    height, width = features.shape[-2:]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
    xy, channel, i, j = xy[inside], channel[inside], i[inside], j[inside]
    return xy, features[0, channel, i, j]
