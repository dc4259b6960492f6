"""Key.Net (Barroso-Laguna et al., ICCV 2019): hand-crafted derivative filters + a small learned block.

The response map is computed over three internal scale levels (the image blurred and shrunk
by 1.2 each time, features resized back); detection runs that response over an image pyramid
(factor sqrt(2), one level above the input and four below), keeps 15x15 local maxima away from
a 15-pixel strip along each level's sides and shares the keypoint budget between levels as the
official extractor does. Key.Net only detects: the paper pairs it with a patch descriptor (HyNet).

State-dict keys follow axelBarroso/Key.Net-Pytorch (``feature_extractor.lb_block.conv{0,1,2}``,
``last_conv``); its checkpoint wraps them as ``{"state_dict": ..., "optimizer": ...}``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Renamed, Variant, param
from ..weights import WeightSpec
from .bands import no_rows, resize_rows, run_banded, source_positions
from .base import Extractor, Features, mask_scores
from .multiscale import level_nms_radius, merge_levels, no_keypoints
from .patch_descriptor import SIFT_SCALE_FACTOR

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
_BINOMIAL_5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
_BORDER = 15  # pixels along each side of a level where the official extractor never detects
_FEATURE_HALO = 8  # receptive radius of the feature extractor: two Sobel passes (2) and three 5x5 convolutions (6)
_LAST_HALO = 2  # the last 5x5 convolution


def sobel_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised 3x3 Sobel derivatives (d/dx, d/dy) of a (B, 1, H, W) map, replicated border."""
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()])[:, None].to(image)
    gradients = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernels)
    return gradients[:, :1], gradients[:, 1:]


def blur_and_shrink(image: torch.Tensor, factor: float) -> torch.Tensor:
    """5x5 binomial blur (reflected border), then bilinear resize to floor(size / factor)."""
    kernel = torch.outer(_BINOMIAL_5, _BINOMIAL_5)[None, None].to(image)
    channels = image.shape[1]
    blurred = F.conv2d(F.pad(image, (2, 2, 2, 2), mode="reflect"), kernel.expand(channels, 1, 5, 5), groups=channels)
    height, width = image.shape[-2:]
    size = (int(height / factor), int(width / factor))
    return F.interpolate(blurred, size=size, mode="bilinear", align_corners=False)


class HandcraftedBlock(nn.Module):
    """The ten fixed derivative maps Key.Net feeds its learned filters."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        dx, dy = sobel_gradients(image)
        dxx, dxy = sobel_gradients(dx)
        _, dyy = sobel_gradients(dy)
        return torch.cat([dx, dy, dx * dx, dy * dy, dx * dy, dxy, dxy * dxy, dxx, dyy, dxx * dyy], dim=1)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class LearnableBlock(nn.Module):
    def __init__(self, in_channels: int = 10, num_filters: int = 8, kernel_size: int = 5):
        super().__init__()
        self.conv0 = _conv_bn_relu(in_channels, num_filters, kernel_size)
        self.conv1 = _conv_bn_relu(num_filters, num_filters, kernel_size)
        self.conv2 = _conv_bn_relu(num_filters, num_filters, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(self.conv0(x)))


class FeatureExtractor(nn.Module):
    def __init__(self, num_filters: int = 8, kernel_size: int = 5):
        super().__init__()
        self.hc_block = HandcraftedBlock()
        self.lb_block = LearnableBlock(10, num_filters, kernel_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.lb_block(self.hc_block(image))


@dataclass
class KeyNetConfig(DetectorConfig):
    """The official extractor's defaults: 5000 keypoints, 15x15 NMS, one level up and four down."""

    renamed = {"nms_size": Renamed("nms_radius", convert=lambda size: int(size) // 2)}
    nfeatures: int = param(5000, "keep at most this many keypoints, shared between levels by area; 0 keeps all", low=0)
    detection_threshold: float = param(0.0, "minimum response", low=0.0)
    nms_radius: int = param(7, "NMS radius in level pixels (the official 15x15 window)", low=0)
    pyramid_levels: int = param(4, "pyramid levels below the input", low=0, high=12)
    up_levels: int = param(1, "pyramid levels above the input (upsampled)", low=0, high=3)
    scale_factor: float = param(math.sqrt(2.0), "pyramid step between levels", low=1.05, high=4.0)


class KeyNet(Extractor):
    """Key.Net detector: ``forward`` gives the (B, 1, H, W) response, ``extract`` the multi-scale keypoints."""

    descriptor_size = 0
    # The official extractor hands HyNet the square of half-side s_mult x level scale around a keypoint;
    # KeyPoint.size is set so that cvdeep's patch descriptors (side = SIFT_SCALE_FACTOR x size) crop it.
    patch_scale = 22.0
    internal_levels_factor = 1.2

    def __init__(self, num_filters: int = 8, num_levels: int = 3, kernel_size: int = 5):
        super().__init__()
        self.num_levels = num_levels
        self.feature_extractor = FeatureExtractor(num_filters, kernel_size)
        self.last_conv = nn.Sequential(
            nn.Conv2d(num_filters * num_levels, 1, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
        )

    def load_pretrained(self, checkpoint: Any) -> None:
        state = checkpoint["state_dict"] if isinstance(checkpoint, dict) and "state_dict" in checkpoint else checkpoint
        self.load_state_dict(state, strict=True)

    def _features(self, level: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the learned features of one (1-channel) internal level, computed on
        those rows widened by the extractor's receptive radius (exact, see ``cvdeep.nets.bands``)."""
        height = level.shape[-2]
        lo, hi = max(0, start - _FEATURE_HALO), min(height, stop + _FEATURE_HALO)
        return self.feature_extractor(level[..., lo:hi, :])[..., start - lo : stop - lo, :]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> the (B, 1, H, W) response.

        The three internal levels (the image blurred and shrunk by 1.2, twice) are 1-channel
        maps; their 8-channel features, upsampled back to the image size, and the 24-channel
        concatenation exist only one band of rows at a time (``cvdeep.nets.bands``).
        """
        size = (image.shape[-2], image.shape[-1])
        levels = [image]
        for _ in range(1, self.num_levels):
            levels.append(blur_and_shrink(levels[-1], self.internal_levels_factor))

        def band(_: object, lo: int, hi: int) -> tuple[torch.Tensor]:
            features = [self._features(image, lo, hi)]
            for level in levels[1:]:
                level_h = level.shape[-2]
                top, bottom, _ = source_positions(level_h, size[0], lo, hi, align_corners=False)
                first, last = int(top.min()), int(bottom.max()) + 1
                rows = self._features(level, first, last)
                features.append(resize_rows(rows, size, lo, hi, align_corners=False, rows_of=(first, level_h)))
            return (self.last_conv(torch.cat(features, dim=1)),)

        return run_banded(band, no_rows, halo=_LAST_HALO, pixels=self.band_pixels, size=size)[0]

    @staticmethod
    def level_budgets(max_keypoints: int, levels: int, up_levels: int, scale_factor: float) -> list[int]:
        """Keypoints allotted to each level (upper levels first), proportional to its area, as published."""
        weights = [scale_factor ** (-2.0 * (index - up_levels)) for index in range(levels)]
        total = sum(weights)
        return [int(max_keypoints * weight / total) for weight in weights]

    def _detect_level(self, level: torch.Tensor, valid: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Local maxima (x, y) in level pixels and their responses, sorted by response."""
        response = self(level)
        level_valid = F.interpolate(valid.float(), size=response.shape[-2:], mode="nearest-exact") > 0.5
        keypoints, scores = ops.nms(mask_scores(response, level_valid, 0.0), radius, 0.0, -1, _BORDER)
        return keypoints[0], scores[0]

    @staticmethod
    def pyramid(image: torch.Tensor, config: KeyNetConfig) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, level image) of the detection pyramid, upper levels first (index - up_levels is
        the octave): upsampled by ``scale_factor^k``, the image, then blurred and shrunk by
        ``scale_factor`` each time. A level with a side of at most 30 px has no pixel outside the
        15-px strips along its sides, so it is skipped, and so are the smaller ones below it (the
        published code fails on them)."""
        height, width = image.shape[-2:]
        factor, up_levels = config.scale_factor, config.up_levels
        for index in range(up_levels):
            up = factor ** (up_levels - index)
            size = (int(height * up), int(width * up))
            if min(size) > 2 * _BORDER:
                yield index, F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        level = image
        for step in range(config.pyramid_levels + 1):
            if min(level.shape[-2:]) <= 2 * _BORDER:
                return
            yield up_levels + step, level
            if step < config.pyramid_levels:
                level = blur_and_shrink(level, factor)

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: KeyNetConfig | None = None) -> Features:
        config = config or KeyNetConfig()
        factor, up_levels = config.scale_factor, config.up_levels
        limit = config.nfeatures if config.nms == "hard" else 0  # soft-NMS selects over all levels at once
        level_count = up_levels + config.pyramid_levels + 1
        budgets = self.level_budgets(limit, level_count, up_levels, factor) if limit > 0 else [-1] * level_count
        height, width = image.shape[-2:]

        levels: list[Features] = []
        granted = found = accounted = 0
        for index, level in self.pyramid(image, config):
            xy, response = self._detect_level(level, valid, level_nms_radius(config))
            if limit > 0:
                # Budget left unused by earlier levels carries over, as in the official extractor.
                granted += sum(budgets[skipped] for skipped in range(accounted, index + 1))
                accounted = index + 1
                take = max(granted - found, 0) if index >= up_levels else budgets[index]
                xy, response = xy[:take], response[:take]
            found += len(response)
            octave = index - up_levels
            level_h, level_w = level.shape[-2:]
            # Level pixel centres -> input pixel centres (bilinear resizes keep pixel centres aligned).
            scale_xy = xy.new_tensor([width / level_w, height / level_h], dtype=torch.float32)
            levels.append({
                "keypoints": (xy.float() + 0.5) * scale_xy - 0.5,
                "scores": response,
                "sizes": torch.full_like(response, 2 * self.patch_scale * factor**octave / SIFT_SCALE_FACTOR),
                "octaves": torch.full((len(response),), octave, dtype=torch.int32, device=image.device),
            })
        if not levels:  # every level too small to hold a keypoint
            return no_keypoints(image)
        return merge_levels(levels, config, valid)


FAMILIES = (
    ModelFamily(
        name="keynet",
        public_name="KeyNet",
        kind="detector-only",
        network=KeyNet,
        config=KeyNetConfig,
        input=InputConvention(channels=1),  # Key.Net-Pytorch reads images with cv2.imread(path, 0)
        paper="Barroso-Laguna et al., Key.Net: Keypoint Detection by Handcrafted and Learned CNN Filters, ICCV 2019",
        summary="Key.Net: a multi-scale keypoint detector only. Describe its keypoints with a patch descriptor "
        "(HyNet, the paper's pairing, or HardNet): descriptor.compute(image, keynet.detect(image)).",
        variants=(
            Variant(
                "keynet",
                "Key.Net multi-scale detector (detect only)",
                WeightSpec(
                    name="keynet", filename="keynet/keynet_pytorch.pth",
                    sha256="59d3a46d57b439513acf531877fdfaa95eb550ccd10ec462e23d7c1f7a86d52a", license="MIT",
                    source="axelBarroso/Key.Net-Pytorch model/weights/keynet_pytorch.pth",
                    urls=("https://github.com/axelBarroso/Key.Net-Pytorch/raw/main/model/weights/keynet_pytorch.pth",),
                ),
            ),
        ),
    ),
)
