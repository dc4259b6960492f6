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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Variant, param
from ..weights import DEFAULTDICT_ALLOWLIST, WeightSpec
from .base import Extractor, Features
from .multiscale import level_nms_radius, merge_levels, no_keypoints

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class R2D2Config(DetectorConfig):
    """naver/r2d2's extract.py defaults: top 5000, both confidences >= 0.7, 3x3 maxima, a pyramid
    of factor 2^0.25 with the longest side from 1024 down to 256 px."""

    nfeatures: int = param(5000, "keep at most this many keypoints, the strongest; 0 keeps all", low=0)
    detection_threshold: float = param(0.0, "minimum score (reliability x repeatability)", low=0.0, high=1.0)
    nms_radius: int = param(1, "NMS radius on the repeatability map, in level pixels", low=0)
    reliability_threshold: float = param(0.7, "minimum reliability of a keypoint", low=0.0, high=1.0)
    repeatability_threshold: float = param(0.7, "minimum repeatability of a keypoint", low=0.0, high=1.0)
    scale_factor: float = param(2**0.25, "pyramid step between levels", low=1.01, high=4.0)
    min_size: int = param(256, "smallest longest-side of a pyramid level (pixels)", low=16)
    max_size: int = param(1024, "largest longest-side of a pyramid level (pixels)", low=16)


class R2D2(Extractor):
    """R2D2 network; ``fast=True`` builds ``Fast_Quad_L2Net_ConfCFS`` (faster2d2)."""

    descriptor_size = 128
    base_keypoint_size = 32.0
    mean: torch.Tensor  # buffers
    std: torch.Tensor

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

    def _add_conv(self, out_channels: int, kernel_size: int = 3, stride: int = 1, batch_norm: bool = True,
                  relu: bool = True) -> None:
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
        """Dense maps of a (B, 3, H, W) RGB image in [0, 1]: descriptors (B, D, H, W), reliability,
        repeatability (B, 1, H, W)."""
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
    def pyramid_scales(height: int, width: int, scale_factor: float, min_size: int, max_size: int) -> list[float]:
        """The scales of naver/r2d2's extract_multiscale: s = scale_factor^-k, kept while the longest
        side s * L lies in [min_size, max_size] and s <= 1. An image smaller than min_size still gets
        its full-resolution level (the reference gives none), and so does an image so thin that no
        allowed level keeps one row (its short side would round to 0 pixels)."""
        longest = max(height, width)
        min_size = min(min_size, longest)
        scales, scale = [], 1.0
        while scale + 0.001 >= min_size / longest and round(min(height, width) * scale) >= 1:
            if scale - 0.001 <= min(1.0, max_size / longest):
                scales.append(scale)
            scale /= scale_factor
        return scales or [1.0]

    @classmethod
    def pyramid(cls, image: torch.Tensor, scale_factor: float, min_size: int,
                max_size: int) -> Iterator[tuple[float, torch.Tensor]]:
        """(scale, level) for each of ``pyramid_scales``; each level is resized from the previous
        one (bilinear), as the reference does, through the skipped ones too."""
        height, width = image.shape[-2:]
        kept = cls.pyramid_scales(height, width, scale_factor, min_size, max_size)
        longest = max(height, width)
        min_size = min(min_size, longest)
        scale, level = 1.0, image
        while scale + 0.001 >= min_size / longest:
            if kept and abs(scale - kept[0]) < 1e-9:
                kept.pop(0)
                yield scale, level
            if not kept:
                return
            scale /= scale_factor
            if scale + 0.001 >= min_size / longest:
                size = (round(height * scale), round(width * scale))
                level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)

    def _detect(self, maps: dict[str, torch.Tensor], valid: torch.Tensor, config: R2D2Config) -> torch.Tensor:
        """(N, 2) integer (x, y) level pixels: maxima of repeatability passing both thresholds."""
        repeatability, reliability = maps["repeatability"], maps["reliability"]
        radius = level_nms_radius(config)
        keep = (repeatability == F.max_pool2d(repeatability, 2 * radius + 1, stride=1, padding=radius)) & valid
        keep &= (repeatability >= config.repeatability_threshold) & (reliability >= config.reliability_threshold)
        ys, xs = torch.nonzero(keep[0, 0], as_tuple=True)
        return torch.stack([xs, ys], dim=1)

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: R2D2Config | None = None) -> Features:
        config = config or R2D2Config()
        height, width = image.shape[-2:]
        pyramid = self.pyramid(image, config.scale_factor, config.min_size, config.max_size)
        levels = []
        for scale, level in pyramid:
            octave = round(math.log(1.0 / scale) / math.log(config.scale_factor))  # scale = factor^-octave
            size = tuple(level.shape[-2:])
            maps = self(level)
            level_valid = F.interpolate(valid.float(), size=size, mode="nearest-exact") > 0.5
            xy = self._detect(maps, level_valid, config)
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
        if not levels:
            return no_keypoints(image, self.descriptor_size)
        return merge_levels(levels, config, valid)

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: R2D2Config | None = None,
    ) -> torch.Tensor:
        """Descriptors read where ``extract`` reads them: in the keypoint's pyramid level, bilinearly
        at its position there.

        The level is the one whose KeyPoint.size (32 px / scale, as ``extract`` sets it) is
        nearest the keypoint's, so a keypoint of any detector gets the level of its scale;
        without sizes, the largest level. Only the levels some keypoint needs are computed.
        """
        config = config or R2D2Config()
        height, width = image.shape[-2:]
        scales = self.pyramid_scales(height, width, config.scale_factor, config.min_size, config.max_size)
        available = torch.tensor(scales, dtype=torch.float64)
        if sizes is None:
            level_of = torch.zeros(len(keypoints), dtype=torch.long)
        else:
            wanted = self.base_keypoint_size / sizes.double().cpu().clamp_min(1e-6)
            level_of = (wanted.log()[:, None] - available.log()[None]).abs().argmin(dim=1)
        level_of = level_of.to(keypoints.device)
        out = image.new_zeros((len(keypoints), self.descriptor_size))
        needed = set(level_of.tolist())
        for index, (_, level) in enumerate(self.pyramid(image, config.scale_factor, config.min_size, config.max_size)):
            if not needed:
                break
            if index not in needed:
                continue
            needed.discard(index)
            chosen = torch.nonzero(level_of == index).squeeze(1)
            level_h, level_w = level.shape[-2:]
            # input pixel centres -> level pixel centres (the inverse of extract's mapping)
            xy = (keypoints[chosen].to(image.dtype) + 0.5) * image.new_tensor([level_w / width, level_h / height]) - 0.5
            out[chosen] = ops.sample_descriptors(self(level)["descriptors"][0], xy, stride=1.0)
        return out


_R2D2_FILES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    # model name, file, sha256, network arguments
    ("r2d2", "r2d2_WASF_N16.pt", "9ae90e02a9a133d100ca7aeaa32f4d4d7736a6dd222a530a25c8f7da5e508528", {}),
    ("r2d2-waf-n16", "r2d2_WAF_N16.pt", "27cebd6608317b35198a76f60f87492110dee3e88ca382586a729dadb1a16b90", {}),
    ("r2d2-wasf-n8-big", "r2d2_WASF_N8_big.pt", "597dc13998e211e827c550bdc8f76dbb4aca32747846f96962c9168586cec418",
     {"mchan": 6}),
    ("faster2d2", "faster2d2_WASF_N16.pt", "217daa3a166bfe9bf2b68c05c1607a09dd4d552ae1bbeda885479d504eefc14b",
     {"fast": True}),
)

FAMILIES = (
    ModelFamily(
        name="r2d2",
        public_name="R2D2",
        kind="detector",
        network=R2D2,
        config=R2D2Config,
        # RGB in [0, 1] (the authors read PIL .convert("RGB")); ImageNet normalisation inside the network
        input=InputConvention(channels=3),
        paper="Revaud et al., R2D2: Repeatable and Reliable Detector and Descriptor, NeurIPS 2019",
        summary="R2D2: repeatable and reliable multi-scale detector and 128-D descriptor. All official weights "
        "are CC BY-NC-SA 3.0 (non-commercial).",
        variants=tuple(
            Variant(
                name,
                f"R2D2 {file} (non-commercial)",
                WeightSpec(
                    name=name, filename=f"r2d2/{file}", sha256=sha256, license="CC BY-NC-SA 3.0 (non-commercial)",
                    source=f"naver/r2d2 models/{file}", urls=(f"https://github.com/naver/r2d2/raw/master/models/{file}",),
                    noncommercial=True,
                    # faster2d2's file pickles its training losses as collections.defaultdict(list)
                    safe_globals=DEFAULTDICT_ALLOWLIST if arguments.get("fast") else (),
                ),
                network_args=arguments,
            )
            for name, file, sha256, arguments in _R2D2_FILES
        ),
    ),
)
