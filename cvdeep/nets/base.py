"""What every dense local-feature network offers the Feature2D layer.

An ``Extractor`` is a pure-torch ``nn.Module``: ``forward`` is the network (image ->
dense maps) and ``extract`` adds that method's published post-processing through
``cvdeep.ops``. It knows nothing of OpenCV; see docs/ARCHITECTURE.md for the contract.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig
from .bands import BAND_PIXELS, LARGE_IMAGE_PIXELS

Features = dict[str, torch.Tensor]


class PretrainedNetwork(nn.Module):
    """A network whose official checkpoint loads with ``load_pretrained``."""

    def load_pretrained(self, checkpoint: Any) -> None:
        """Load a checkpoint as its authors saved it, strictly (every key, every shape).

        The default takes a plain state_dict; networks whose official files wrap it
        (``{"state_dict": ...}``, ``module.`` prefixes) override this.
        """
        self.load_state_dict(checkpoint, strict=True)


class Extractor(PretrainedNetwork):
    """Base of the dense detectors/descriptors (ALIKED, DISK, XFeat, SuperPoint, ...).

    What the network is fed (channels, stride) is declared in its module's ``ModelFamily``.
    """

    descriptor_size: int = 0  # 0 for detectors that do not describe
    keypoint_size: float = 0.0  # KeyPoint.size (diameter, px) when extract() returns no "sizes"
    band_pixels: int = BAND_PIXELS  # pixels per row band of the full-resolution stages (cvdeep.nets.bands)
    large_image_pixels: int = LARGE_IMAGE_PIXELS  # above this, memory-first allocation (bands.extraction_allocation)

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: Any = None) -> Features:
        """Detect and describe on one (1, C, H, W) image in [0, 1] with the family's config
        (its defaults when None); see the module docstring."""
        raise NotImplementedError

    def extract_batch(self, images: torch.Tensor, valid: torch.Tensor, config: Any = None) -> list[Features]:
        """``extract`` on each image of a (B, C, H, W) batch with its (B, 1, H, W) ``valid`` mask.

        This default runs the images one by one; a network that can take a batch overrides it to
        run the network once on all of them and post-process each image as ``extract`` does.
        """
        return [self.extract(images[b : b + 1], valid[b : b + 1], config) for b in range(images.shape[0])]

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: Any = None,
    ) -> torch.Tensor:
        """Descriptors (N, D) at given keypoints (N, 2) in pixels of ``image``.

        ``sizes`` (KeyPoint.size), ``angles`` (KeyPoint.angle) and ``octaves`` (KeyPoint.octave)
        let a multi-scale or oriented model describe a keypoint where it detected it: the
        pyramid level its own ``extract`` reports through these fields. ``config`` is the
        family's config (its defaults when None), for models whose levels depend on it."""
        raise NotImplementedError

    def describe_keypoints(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None,
        angles: torch.Tensor | None,
        octaves: torch.Tensor | None,
        config: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What ``Feature2D.compute`` calls: descriptors (N, D) at given keypoints with the family's
        config, and the (N,) angles (OpenCV degrees) they were computed with when the network
        estimates an angle for keypoints given without one (-1; LIFT), else None. The default is
        ``describe``; networks that estimate orientations override it."""
        return self.describe(image, keypoints, sizes, angles, octaves, config), None

    def output_size(self, config: Any) -> int:
        """Length of the descriptors ``extract`` gives with ``config`` (``descriptor_size`` unless
        a parameter changes it, as DELF's ``pca_dim``)."""
        return int(self.descriptor_size)


def on_valid_pixels(keypoints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the pixel of each (x, y) keypoint, ``round(x), round(y)``, is inside the map and valid.

    Keypoints found on another grid (a pyramid level) or moved by a sub-pixel refinement can
    leave the valid pixels they were detected on; extractors drop those before selecting the
    ``nfeatures`` best, so the count is of valid keypoints."""
    height, width = valid.shape[-2:]
    pixel = keypoints.round().long()
    inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)
    keep = inside.clone()
    keep[inside] = valid.reshape(height, width)[pixel[inside, 1], pixel[inside, 0]]
    return keep


def mask_scores(scores: torch.Tensor, valid: torch.Tensor, fill: float = float("-inf")) -> torch.Tensor:
    """Scores with invalid pixels (padding, outside the user's mask) set to ``fill``."""
    if valid.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"valid mask {tuple(valid.shape)} does not match score map {tuple(scores.shape)}")
    return scores.masked_fill(~valid, fill)


def valid_at(valid: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the four pixels around each sub-pixel (x, y) keypoint (N, 2) are valid in the (1, 1, H, W) mask.

    A keypoint between a valid and an invalid pixel is dropped, so a keypoint never lies
    further out than the last valid pixel centre (mask edges, the border, the padding).
    """
    grid = valid[0, 0]
    height, width = grid.shape
    x, y = keypoints[:, 0], keypoints[:, 1]
    x0, x1 = x.floor().long().clamp(0, width - 1), x.ceil().long().clamp(0, width - 1)
    y0, y1 = y.floor().long().clamp(0, height - 1), y.ceil().long().clamp(0, height - 1)
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    return inside & grid[y0, x0] & grid[y0, x1] & grid[y1, x0] & grid[y1, x1]


def soft_nms_keypoints(scores: torch.Tensor, config: DetectorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``nms="soft"`` detection of every dense detector, on a (1, 1, H, W) score map.

    Candidates are the 3x3 local maxima scoring above ``config.detection_threshold``; greedy
    Gaussian soft-NMS (``cvdeep.ops.soft_nms``, sigma ``config.soft_nms_sigma`` pixels) then
    picks them best first, each pick scaling its neighbours' scores by
    ``1 - exp(-d^2 / 2 sigma^2)``, until ``config.nfeatures`` are picked (all when 0) or the
    best decayed score is no longer above the threshold. Returns integer (x, y) pixels
    (N, 2) and their decayed scores (N,), non-increasing.
    """
    candidates, values = ops.nms(scores, 1, config.detection_threshold)
    picked, decayed, _ = ops.soft_nms(
        candidates[0].to(scores.dtype), values[0], config.soft_nms_sigma, config.nfeatures or -1,
        config.detection_threshold,
    )
    return picked.round().long(), decayed


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution as one matrix product over the NHWC view of ``x``; returns channels-last.

    PyTorch's CPU 1x1 convolution takes a slow im2col path on the maps of these networks;
    on a channels-last tensor the product reads the pixel rows in place.
    """
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)


def window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``max_pool2d(x, 2r+1, stride 1, padding r)`` as a row pass then a column pass of
    elementwise maxima over shifted views (max_pool2d also computes indices and is slow on
    one channel); outside the map counts as -inf."""
    size = 2 * radius + 1
    height, width = x.shape[-2:]
    padded = F.pad(x, (radius, radius, radius, radius), value=float("-inf"))
    rows = padded[..., :, :width].clone()
    for shift in range(1, size):
        torch.maximum(rows, padded[..., :, shift : shift + width], out=rows)
    out = rows[..., :height, :].clone()
    for shift in range(1, size):
        torch.maximum(out, rows[..., shift : shift + height, :], out=out)
    return out


def iterative_nms(scores: torch.Tensor, radius: int, iterations: int = 2) -> torch.Tensor:
    """The NMS of SuperPoint's and ALIKED's official code, as a boolean map of kept positions.

    First the positions equal to their (2r+1)^2 window's maximum (ties all kept); then,
    ``iterations`` times, the windows around kept positions are suppressed and the positions
    that are the maximum of their window outside the suppressed area are added, which
    approximates greedy NMS (a point suppressed only by a suppressed point comes back).
    """
    keep = scores == window_max(scores, radius)
    for _ in range(iterations):
        suppressed = window_max(keep.to(scores.dtype), radius) > 0
        remaining = scores.masked_fill(suppressed, 0.0)
        keep |= (remaining == window_max(remaining, radius)) & ~suppressed
    return keep
