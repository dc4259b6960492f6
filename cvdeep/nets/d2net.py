"""D2-Net (Dusmanu et al., CVPR 2019): one VGG16 feature map both describes and detects.

The network is VGG16 up to conv4_3 with the paper's changes: pool3 becomes a 2x2 average pool
of stride 1 and the conv4 layers are dilated by 2, so the 512-D map has stride 4. Input is
caffe-style: BGR, 0..255, ImageNet mean subtracted, no scaling.

Hard detection: a pixel of channel k is a keypoint when k is the channel maximum there, the
pixel is a 3x3 spatial maximum of channel k, and channel k passes the edge test (Hessian
trace^2 / det below (r+1)^2/r with r = 5, det > 0); a quadratic fit refines it to sub-pixel (steps
over half a cell are rejected); ``cvdeep.nets.describe_detect`` holds this, shared with TR.
Multi-scale runs [0.5, 1, 2], adds each level's features to the (upsampled) previous ones and
bans positions already detected at a coarser level. Feature position p maps to image pixel
4p + 1.5 (two 2x2 poolings, as in the reference code).

State-dict keys are the official ``dense_feature_extraction.model.N``; the files wrap them as
``{"model": state_dict}``.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Variant, param
from ..weights import WeightSpec
from . import describe_detect
from .bands import add_resized, run_banded
from .base import Extractor, Features
from .multiscale import level_nms_radius, merge_levels, no_keypoints

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_MULTISCALE = (0.5, 1.0, 2.0)
_POOLINGS = 2  # feature position p sits at image pixel 4p + 1.5
_STRIDE = 4  # of the feature map
_MIN_INPUT = 8  # the smallest side VGG16 to conv4_3 leaves one feature cell of (two 2x2 poolings, a 2x2 stride-1 pool)
_HALO = 64  # receptive radius of a feature row in input pixels (~50), rounded up to the stride


def feature_to_image(positions: torch.Tensor) -> torch.Tensor:
    """Feature-map (x, y) -> image pixels, as upscale_positions of the reference code (two poolings)."""
    return describe_detect.feature_to_image(positions, _POOLINGS)


class DenseFeatureExtraction(nn.Module):
    """VGG16 conv1_1 .. conv4_3 with D2-Net's modifications; the official index layout."""

    def __init__(self) -> None:
        super().__init__()

        def conv(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)

        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.model = nn.Sequential(
            conv(3, 64), relu(), conv(64, 64), relu(), nn.MaxPool2d(2, stride=2),
            conv(64, 128), relu(), conv(128, 128), relu(), nn.MaxPool2d(2, stride=2),
            conv(128, 256), relu(), conv(256, 256), relu(), conv(256, 256), relu(), nn.AvgPool2d(2, stride=1),
            conv(256, 512, 2), relu(), conv(512, 512, 2), relu(), conv(512, 512, 2),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.relu(self.model(image))


@dataclass
class D2NetConfig(DetectorConfig):
    """The published extractor: single scale, every detection (``nfeatures=0``; a matching
    pipeline should cap it), images shrunk to 1600 px / 2800 px."""

    detection_threshold: float = param(0.0, "minimum feature activation (divided by the level index + 1)", low=0.0)
    nms_radius: int = param(1, "spatial NMS radius in feature-map cells (4 px); the paper uses 3x3 maxima", low=0)
    multiscale: bool = param(False, "run the paper's [0.5, 1, 2] pyramid with accumulated feature maps")
    max_edge: int = param(1600, "shrink the image so its longest side is at most this (pixels)", low=32)
    max_sum_edges: int = param(2800, "shrink the image so its width + height is at most this (pixels)", low=64)


class D2Net(Extractor):
    descriptor_size = 512
    keypoint_size = 12.0  # the 3x3-cell detection window, 4 px per cell
    mean: torch.Tensor  # non-persistent buffers
    filters: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.dense_feature_extraction = DenseFeatureExtraction()
        self.register_buffer("mean", torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("filters", describe_detect.hessian_filters(), persistent=False)

    def load_pretrained(self, checkpoint: Any) -> None:
        state = checkpoint["model"] if isinstance(checkpoint, dict) and "model" in checkpoint else checkpoint
        self.load_state_dict(state, strict=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 512, H/4 - 1, W/4 - 1) non-negative features.

        VGG runs over row bands of 4-pixel-aligned rows with a ``_HALO``-pixel halo
        (``cvdeep.nets.bands``): its 64-channel full-resolution maps exist one band at a time.
        """
        bgr = image.flip(1) * 255.0 - self.mean

        def band(rows: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor]:
            # the stride-1 average pool leaves a band one feature row short: pad it (the row lies
            # in the halo, or below the image's last feature row)
            return (F.pad(self.dense_feature_extraction(rows), (0, 0, 0, 1)),)

        features = run_banded(band, bgr, halo=_HALO, align=_STRIDE, pixels=self.band_pixels, strides=(_STRIDE,))[0]
        return features[..., :-1, :]

    def hard_detection(self, features: torch.Tensor, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Detections of one (1, C, h, w) map: (channel, i, j) indices (3, K) and sub-pixel steps (di, dj) (2, K);
        ``cvdeep.nets.describe_detect.hard_detection``."""
        return describe_detect.hard_detection(features, self.filters, radius)

    def refine(self, features: torch.Tensor, detections: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Refined feature-map keypoints (x, y), their channel activations and descriptors."""
        xy, activation = describe_detect.refine(features, detections, steps)
        # ops.sample_descriptors puts cell j at pixel 4j + 1.5, the same map as feature_to_image
        return xy, activation, ops.sample_descriptors(features[0], feature_to_image(xy), stride=4.0)

    @staticmethod
    def working_image(image: torch.Tensor, config: D2NetConfig) -> tuple[torch.Tensor, float]:
        """The published extractor first shrinks large images (longest edge, sum of edges): the
        image it works on and the factor."""
        height, width = image.shape[-2:]
        shrink = min(1.0, config.max_edge / max(height, width), config.max_sum_edges / (height + width))
        if shrink < 1.0:
            size = (max(1, int(height * shrink)), max(1, int(width * shrink)))
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        return image, shrink

    def levels(self, work: torch.Tensor,
               config: D2NetConfig) -> Iterator[tuple[int, float, tuple[int, int], torch.Tensor]]:
        """(index, scale, level size, accumulated features) of each pyramid level of the working
        image, in order: the paper's multi-scale adds each level's features to the previous ones
        (upsampled, align_corners), band by band in place."""
        scales = _MULTISCALE if config.multiscale else (1.0,)
        previous = None
        for index, scale in enumerate(scales):
            if min(int(side * scale) for side in work.shape[-2:]) < _MIN_INPUT:
                continue  # no feature cell: nothing to detect or accumulate at this level
            level = (work if scale == 1.0
                     else F.interpolate(work, scale_factor=scale, mode="bilinear", align_corners=True))
            level_size = (level.shape[-2], level.shape[-1])
            features = self(level)
            del level
            if previous is not None:
                add_resized(features, previous, self.band_pixels, align_corners=True)
            yield index, scale, level_size, features
            previous = features

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: D2NetConfig | None = None) -> Features:
        config = config or D2NetConfig()
        height, width = image.shape[-2:]
        work, shrink = self.working_image(image, config)
        work_h, work_w = work.shape[-2:]
        image_valid = valid
        if shrink < 1.0:
            valid = F.interpolate(valid.float(), size=(work_h, work_w), mode="nearest-exact") > 0.5
        levels = []
        banned = None
        for index, scale, (level_h, level_w), features in self.levels(work, config):
            detections, steps = self.hard_detection(features, level_nms_radius(config))
            _, i, j = detections
            # no keypoint where the image is invalid (padding, user mask)
            level_valid = F.interpolate(valid.float(), size=features.shape[-2:], mode="nearest-exact")[0, 0] > 0.5
            keep = level_valid[i, j]
            if banned is not None:  # nor where a coarser level already detected something
                banned = F.interpolate(banned.float()[None, None], size=features.shape[-2:])[0, 0] > 0.5
                keep &= ~banned[i, j]
            else:
                banned = torch.zeros(features.shape[-2:], dtype=torch.bool, device=features.device)
            detections, steps = detections[:, keep], steps[:, keep]
            banned[detections[1], detections[2]] = True
            xy, activation, level_descriptors = self.refine(features, detections, steps)
            # level -> working image (resized with align_corners=True) -> input image (align_corners=False)
            level_to_work = xy.new_tensor([(work_w - 1) / max(level_w - 1, 1), (work_h - 1) / max(level_h - 1, 1)])
            on_work = feature_to_image(xy) * level_to_work
            levels.append({
                "keypoints": (on_work + 0.5) * xy.new_tensor([width / work_w, height / work_h]) - 0.5,
                "scores": activation / (index + 1),
                "descriptors": level_descriptors,
                "sizes": torch.full_like(activation, self.keypoint_size / (scale * shrink)),
                "octaves": torch.full((len(xy),), index, dtype=torch.int32, device=xy.device),
            })
        if not levels:
            return no_keypoints(image, self.descriptor_size)
        # the sub-pixel refinement moves a keypoint up to half a cell from the valid cell it was found at
        return merge_levels(levels, config, image_valid)

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: D2NetConfig | None = None,
    ) -> torch.Tensor:
        """Descriptors at image keypoints, read where ``extract`` reads them: the accumulated
        features of the keypoint's pyramid level of the working (shrunk) image, bilinearly.

        The level is the one whose KeyPoint.size (12 px / (scale x shrink), as ``extract`` sets
        it) is nearest the keypoint's, so a keypoint of any detector gets the level of its scale;
        without sizes, the scale-1 level.
        """
        config = config or D2NetConfig()
        height, width = image.shape[-2:]
        work, shrink = self.working_image(image, config)
        work_h, work_w = work.shape[-2:]
        scales = torch.tensor(_MULTISCALE if config.multiscale else (1.0,), dtype=torch.float64)
        if sizes is None:
            wanted = torch.ones(len(keypoints), dtype=torch.float64)
        else:
            wanted = self.keypoint_size / (sizes.double().cpu().clamp_min(1e-6) * shrink)
        level_of = (wanted.log()[:, None] - scales.log()[None]).abs().argmin(dim=1).to(keypoints.device)
        out = image.new_zeros((len(keypoints), self.descriptor_size))
        last = int(level_of.max()) if len(keypoints) else -1
        for index, _, (level_h, level_w), features in self.levels(work, config):
            if index > last:
                break
            chosen = torch.nonzero(level_of == index).squeeze(1)
            if len(chosen) == 0:
                continue
            image_to_work = image.new_tensor([work_w / width, work_h / height])
            on_work = (keypoints[chosen].to(image.dtype) + 0.5) * image_to_work - 0.5
            work_to_level = on_work.new_tensor([(level_w - 1) / max(work_w - 1, 1), (level_h - 1) / max(work_h - 1, 1)])
            on_level = on_work * work_to_level
            out[chosen] = ops.sample_descriptors(features[0], on_level, stride=4.0)
        return out


def _d2net_weights(name: str, file: str, description: str) -> WeightSpec:
    # d2-net's train.py saves {"args": argparse.Namespace, "model", "optimizer", ...}: allow the Namespace.
    return WeightSpec(
        name=name, filename=f"d2net/{file}", sha256=None, license="Clear BSD",
        source=f"mihaidusmanu/d2-net (README: models/{file}, {description}, hosted on the author's site)",
        urls=(f"https://dusmanu.com/files/d2-net/{file}",), safe_globals=(argparse.Namespace,),
    )


FAMILIES = (
    ModelFamily(
        name="d2net",
        public_name="D2Net",
        kind="detector",
        network=D2Net,
        config=D2NetConfig,
        # RGB (the authors read images with imageio); the caffe-style BGR conversion happens inside the
        # network. Padded to 4, a side of 5 px becomes 8: the smallest input with a feature cell.
        input=InputConvention(channels=3, stride=4, min_size=5),
        paper="Dusmanu et al., D2-Net: A Trainable CNN for Joint Description and Detection of Local Features, "
              "CVPR 2019",
        summary="D2-Net: describe-and-detect on VGG16 conv4_3 features; 512-D descriptors.",
        variants=(
            Variant("d2net", "D2-Net fine-tuned on MegaDepth (d2_tf.pth)",
                    _d2net_weights("d2net-tf", "d2_tf.pth", "fine-tuned on MegaDepth")),
            Variant("d2net-ots", "D2-Net off-the-shelf ImageNet VGG16 weights (d2_ots.pth)",
                    _d2net_weights("d2net-ots", "d2_ots.pth", "off-the-shelf ImageNet VGG16")),
        ),
    ),
)
