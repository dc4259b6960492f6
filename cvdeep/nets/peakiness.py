"""ASLFeat's multi-level detection: keypoints at full resolution from the peakiness of several
feature levels of one network, for describe-and-detect networks whose descriptor map is coarse.

ASLFeat (Luo et al., CVPR 2020, Sec. 3.3 and the authors' code, lzx551402/ASLFeat, MIT) scores
each level l, a (C, h, w) map x at stride s (cell p at image pixel s p + (s - 1) / 2), as

    x <- x / max(x)                               (ASLFeat divides by a running maximum)
    alpha = softplus(x - mean of its 3x3 neighbourhood, dilation d_l, reflected at the border)
    beta  = softplus(x - mean over the channels)
    score = max over channels of alpha * beta

kept only where the channel maximum passes SIFT's edge test (dilated finite-difference Hessian,
zero padding, r_e = 10). Each level's score is resized to the image (bilinear, half-pixel
centres) and the levels are summed with weights; keypoints are the 3x3 maxima of the sum, at
least 5 px from the image edge, moved by one Newton step on the sum without the edge mask
(clipped to one pixel). ASLFeat's levels are its second, fourth and last convolutions (strides
1, 2, 4; dilations 3, 2, 1; weights 1, 2, 3), its convolutions taken before BatchNorm.

Where cvdeep differs: the maximum dividing a level is the image's own (ASLFeat's training-time
form; at test time it divides by a maximum averaged over training, which a network trained
without this detector does not have), and scores are computed in row chunks so that no
per-channel temporary of a full-resolution level exists at once. A network whose levels come
from row bands (``TRNet``) finds each level's maximum in a first pass over the bands and scores
band by band in a second, so that no full-resolution level is ever stored.

Facts only from the paper and the authors' code (MIT); no code copied.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..precision import full_precision
from . import describe_detect

EDGE_THRESHOLD = 10.0
"""r_e of the edge test (ASLFeat's evaluation setting ``edge_thld``)."""
BORDER = 5
"""Pixels at the image edge without keypoints (ASLFeat's ``eof_mask``)."""
CHUNK_VALUES = 1 << 22
"""Values (channels x rows x columns) of a level that one chunk of ``level_score`` reads."""


@dataclass(frozen=True)
class Level:
    """The scores of one feature level (``level_score``): ``masked`` and ``raw`` (1, 1, h, w) at
    ``stride`` input pixels per cell, and the level's ``weight`` in the sum."""

    masked: torch.Tensor
    raw: torch.Tensor
    stride: int
    weight: float


def _reflected(size: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Indices of positions [start, stop) of an axis of ``size`` reflected at its ends without
    repeating the edge (numpy's 'reflect'), for any distance: a map of 1 or 2 cells included."""
    positions = torch.arange(start, stop, device=device)
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    folded = torch.remainder(positions, period)
    return torch.where(folded < size, folded, period - folded)


def _rows(x: torch.Tensor, start: int, stop: int, halo: int, mode: str) -> torch.Tensor:
    """Rows [start - halo, stop + halo) of (1, C, h, w) ``x`` with ``halo`` more columns on each
    side; beyond the map's edges reflected (``mode`` 'reflect') or zeros ('constant')."""
    height, width = x.shape[-2:]
    if mode == "reflect":
        rows = x.index_select(-2, _reflected(height, start - halo, stop + halo, x.device))
        return rows.index_select(-1, _reflected(width, -halo, width + halo, x.device))
    top, bottom = max(0, start - halo), min(height, stop + halo)
    return F.pad(x[..., top:bottom, :], (halo, halo, halo - (start - top), halo - (bottom - stop)))


def _shifted(padded: torch.Tensor, di: int, dj: int, halo: int, rows: int, width: int) -> torch.Tensor:
    """The (…, rows, width) window of ``padded`` moved by (di, dj) from its centre."""
    return padded[..., halo + di : halo + di + rows, halo + dj : halo + dj + width]


def level_score(features: torch.Tensor, dilation: int, maximum: torch.Tensor | None = None,
                edge_threshold: float = EDGE_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """ASLFeat's peakiness score of one level (1, C, h, w) (module docstring): the (1, 1, h, w)
    score with the edge mask applied and without it. ``maximum`` divides the level (default: its
    own maximum); a row band of a level passes the whole level's, so its scores are the whole's
    away from the band's cut edges."""
    with full_precision():
        x = features.float()
        top = x.amax() if maximum is None else maximum.float()
        x = x / top.clamp_min(torch.finfo(torch.float32).tiny)
        channels, height, width = x.shape[1:]
        masked = x.new_empty((1, 1, height, width))
        raw = x.new_empty((1, 1, height, width))
        step = max(1, CHUNK_VALUES // max(1, channels * width))
        d = dilation
        for start in range(0, height, step):
            stop = min(height, start + step)
            rows = stop - start
            centre = x[..., start:stop, :]
            reflected = _rows(x, start, stop, d, "reflect")
            mean = sum(_shifted(reflected, a * d, b * d, d, rows, width) for a in (-1, 0, 1) for b in (-1, 0, 1)) / 9
            alpha = F.softplus(centre - mean)
            beta = F.softplus(centre - centre.mean(dim=1, keepdim=True))
            raw[..., start:stop, :] = (alpha * beta).amax(dim=1, keepdim=True)
            strongest = centre.argmax(dim=1, keepdim=True)
            zeros = _rows(x, start, stop, d, "constant")
            masked[..., start:stop, :] = raw[..., start:stop, :] * _not_edge(zeros, strongest, d, edge_threshold)
    return masked, raw


def _not_edge(padded: torch.Tensor, channel: torch.Tensor, dilation: int, edge_threshold: float) -> torch.Tensor:
    """SIFT's edge test (trace^2 / det <= (r + 1)^2 / r, det > 0) of the dilated finite-difference
    Hessian of channel ``channel`` (1, 1, rows, w) of a chunk zero-padded by ``dilation``."""
    rows, width = channel.shape[-2:]

    def at(di: int, dj: int) -> torch.Tensor:
        return _shifted(padded, di * dilation, dj * dilation, dilation, rows, width).gather(1, channel)

    middle = at(0, 0)
    dii = at(1, 0) - 2 * middle + at(-1, 0)
    djj = at(0, 1) - 2 * middle + at(0, -1)
    dij = 0.25 * (at(-1, -1) - at(-1, 1) - at(1, -1) + at(1, 1))
    return describe_detect.not_edge(dii, dij, djj, edge_threshold)


def detect(levels: Sequence[Level], size: tuple[int, int], valid: torch.Tensor,
           nms_radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (N, 2) in input pixels and their scores (N,) (unsorted) from the weighted sum of
    the levels' scores resized to the input size ``size`` (H, W); ``valid`` (1, 1, H, W) bool marks where
    keypoints may lie (image, user mask). ``nms_radius`` in pixels (1: ASLFeat's 3x3 maxima)."""
    total = sum(level.weight for level in levels)
    with full_precision():
        combined = torch.zeros((1, 1) + tuple(size), device=valid.device)
        unmasked = torch.zeros_like(combined)
        for level in levels:
            # F.interpolate's half-pixel centres put cell p at s p + (s - 1) / 2: the levels' convention
            combined += level.weight / total * F.interpolate(level.masked.float(), size=size, mode="bilinear",
                                                             align_corners=False)
            unmasked += level.weight / total * F.interpolate(level.raw.float(), size=size, mode="bilinear",
                                                             align_corners=False)
        window = 2 * nms_radius + 1
        keep = (combined == F.max_pool2d(combined, window, stride=1, padding=nms_radius)) & (combined > 0) & valid
        keep[..., :BORDER, :] = False
        keep[..., -BORDER:, :] = False
        keep[..., :BORDER] = False
        keep[..., -BORDER:] = False
        _, _, i, j = torch.nonzero(keep, as_tuple=True)
        scores = combined[0, 0, i, j]
        padded = F.pad(unmasked, (1, 1, 1, 1))

        def at(di: int, dj: int) -> torch.Tensor:
            return padded[0, 0, i + 1 + di, j + 1 + dj]

        middle = at(0, 0)
        gi, gj = (at(1, 0) - at(-1, 0)) / 2, (at(0, 1) - at(0, -1)) / 2
        hii, hjj = at(1, 0) - 2 * middle + at(-1, 0), at(0, 1) - 2 * middle + at(0, -1)
        hij = 0.25 * (at(-1, -1) - at(-1, 1) - at(1, -1) + at(1, 1))
        solvable = hii * hjj - hij * hij != 0
        step = describe_detect.newton_step(gi, gj, hii, hij, hjj)
        step = torch.where(solvable, step, torch.zeros_like(step)).clamp(-1.0, 1.0)
        keypoints = torch.stack([j + step[1], i + step[0]], dim=1)
    return keypoints, scores
