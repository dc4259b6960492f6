"""R2D2 (Revaud et al., NeurIPS 2019): repeatable and reliable detector and descriptor.

``Quad_L2Net_ConfCFS``: an L2-Net body whose strides are turned into dilations (the output keeps
the input's resolution) and whose last 8x8 conv is split into three dilated 2x2 convs; a
reliability head (2-way softmax) and a repeatability head (softplus(s) / (1 + softplus(s))) read
the squared features. ``faster2d2`` swaps one dilation for a 2x2 max-pool and upsamples the
output by 2. Detection is a 3x3 max filter on repeatability with both confidences >= 0.7, run on
an image pyramid (factor 2^0.25, longest side from 1024 down to 256 px); the score is
reliability x repeatability and KeyPoint.size is 32 / scale, as in naver/r2d2's extract.py.

State-dict keys are naver/r2d2's ``ops.N``, ``clf``, ``sal``; its checkpoints are
``{"net": repr, "state_dict": ...}`` with a ``module.`` prefix (except faster2d2).
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .base import Extractor, Features
from .multiscale import merge_levels

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class R2D2(Extractor):
    """R2D2 network; ``fast=True`` builds ``Fast_Quad_L2Net_ConfCFS`` (faster2d2)."""

    input_channels = 3
    stride = 1
    descriptor_size = 128
    default_config = {
        "max_keypoints": 5000,
        "reliability_threshold": 0.7,
        "repeatability_threshold": 0.7,
        "scale_factor": 2**0.25,
        "min_size": 256,
        "max_size": 1024,
    }
    base_keypoint_size = 32.0

    def __init__(self, mchan: int = 4, dim: int = 128, fast: bool = False):
        super().__init__()
        self.fast = fast
        self.descriptor_size = dim
        self.ops = nn.ModuleList()
        self._channels, self._dilation = 3, 1
        self._add_conv(8 * mchan)
        self._add_conv(8 * mchan)
        if fast:
            self._add_conv(16 * mchan)
            self.ops.append(nn.MaxPool2d(kernel_size=2))
        else:
            self._add_conv(16 * mchan, stride=2)
        self._add_conv(16 * mchan)
        self._add_conv(32 * mchan, stride=2)
        self._add_conv(32 * mchan)
        self._add_conv(32 * mchan, kernel_size=2, stride=2, relu=False)
        self._add_conv(32 * mchan, kernel_size=2, stride=2, relu=False)
        self._add_conv(dim, kernel_size=2, stride=2, batch_norm=False, relu=False)
        if fast:
            self.ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        self.clf = nn.Conv2d(dim, 2, kernel_size=1)
        self.sal = nn.Conv2d(dim, 1, kernel_size=1)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _add_conv(self, out_channels: int, kernel_size: int = 3, stride: int = 1, batch_norm: bool = True, relu: bool = True) -> None:
        """One conv of the dilated L2-Net: a stride becomes a dilation of every later conv."""
        dilation = self._dilation
        self._dilation *= stride
        padding = ((kernel_size - 1) * dilation) // 2
        self.ops.append(nn.Conv2d(self._channels, out_channels, kernel_size, padding=padding, dilation=dilation))
        if batch_norm:
            self.ops.append(nn.BatchNorm2d(out_channels, affine=False))
        if relu:
            self.ops.append(nn.ReLU(inplace=True))
        self._channels = out_channels

    def load_pretrained(self, checkpoint: Any) -> None:
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        state = {key.removeprefix("module."): value for key, value in state.items()}
        self.load_state_dict(state, strict=True)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense maps of a (B, 3, H, W) RGB image in [0, 1]: descriptors (B, D, H, W), reliability, repeatability (B, 1, H, W)."""
        height, width = image.shape[-2:]
        x = (image - self.mean) / self.std
        if self.fast:  # the pooled body needs even sides; pad, then crop the maps back
            x = F.pad(x, (0, width % 2, 0, height % 2))
        for op in self.ops:
            x = op(x)
        x = x[..., :height, :width]
        squared = x * x
        reliability = F.softmax(self.clf(squared), dim=1)[:, 1:2]
        repeatability = F.softplus(self.sal(squared))
        return {
            "descriptors": F.normalize(x, p=2, dim=1),
            "reliability": reliability,
            "repeatability": repeatability / (1 + repeatability),
        }

    @staticmethod
    def pyramid(image: torch.Tensor, scale_factor: float, min_size: int, max_size: int) -> Iterator[tuple[float, torch.Tensor]]:
        """(scale, level) of naver/r2d2's extract_multiscale: s = scale_factor^-k, kept while the longest
        side s * L lies in [min_size, max_size] and s <= 1; each level is resized from the previous one.
        An image smaller than min_size still gets its full-resolution level (the reference gives none)."""
        height, width = image.shape[-2:]
        longest = max(height, width)
        min_size = min(min_size, longest)
        scale, level = 1.0, image
        while scale + 0.001 >= min_size / longest:
            if scale - 0.001 <= min(1.0, max_size / longest):
                yield scale, level
            scale /= scale_factor
            if scale + 0.001 >= min_size / longest:
                size = (round(height * scale), round(width * scale))
                level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)

    def _detect(self, maps: dict[str, torch.Tensor], valid: torch.Tensor, rel_thr: float, rep_thr: float) -> torch.Tensor:
        """(N, 2) integer (x, y) level pixels: 3x3 maxima of repeatability passing both thresholds."""
        repeatability, reliability = maps["repeatability"], maps["reliability"]
        keep = (repeatability == F.max_pool2d(repeatability, 3, stride=1, padding=1)) & valid
        keep &= (repeatability >= rep_thr) & (reliability >= rel_thr)
        ys, xs = torch.nonzero(keep[0, 0], as_tuple=True)
        return torch.stack([xs, ys], dim=1)

    def extract(self, image: torch.Tensor, valid: torch.Tensor, **config: Any) -> Features:
        cfg = {**self.default_config, **config}
        height, width = image.shape[-2:]
        pyramid = self.pyramid(image, float(cfg["scale_factor"]), int(cfg["min_size"]), int(cfg["max_size"]))
        levels = []
        for scale, level in pyramid:
            octave = round(math.log(1.0 / scale) / math.log(float(cfg["scale_factor"])))  # scale = factor^-octave
            size = tuple(level.shape[-2:])
            maps = self(level)
            level_valid = F.interpolate(valid.float(), size=size, mode="nearest-exact") > 0.5
            xy = self._detect(maps, level_valid, float(cfg["reliability_threshold"]), float(cfg["repeatability_threshold"]))
            x, y = xy[:, 0], xy[:, 1]
            # Level pixel centres -> input pixel centres.
            ratio = xy.new_tensor([width / size[1], height / size[0]], dtype=torch.float32)
            levels.append({
                "keypoints": (xy.float() + 0.5) * ratio - 0.5,
                "scores": maps["reliability"][0, 0, y, x] * maps["repeatability"][0, 0, y, x],
                "descriptors": maps["descriptors"][0, :, y, x].t(),
                "sizes": torch.full((len(xy),), self.base_keypoint_size / scale, device=image.device),
                "octaves": torch.full((len(xy),), octave, dtype=torch.int32, device=image.device),
            })
        return merge_levels(levels, int(cfg["max_keypoints"]))

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Descriptors sampled bilinearly from the full-resolution descriptor map."""
        return ops.sample_descriptors(self(image)["descriptors"][0], keypoints, stride=1.0)
