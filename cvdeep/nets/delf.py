"""DELF (Noh et al., ICCV 2017): attentive deep local features for image retrieval.

Pipeline (``DELFNet.extract``), as the official extractor (tensorflow/models
``research/delf``: ``feature_extractor.py``, ``delf_v1.py``, ``delf_config_example.pbtxt``):

1. An image pyramid: the image resized by each of ``scales`` (official: 0.25, 0.3536, 0.5,
   0.7071, 1, 1.4142, 2; level sizes rounded to whole pixels).
2. Per level, a fully convolutional backbone gives dense features ``f`` (one descriptor per
   feature cell) and the attention network scores every cell: two 1x1 convolutions (the first
   with BatchNorm and ReLU) and a softplus, ``a = softplus(conv2(relu(bn(conv1(f)))))``.
3. Keypoints are the cells whose attention is at least ``detection_threshold`` (official 100),
   at the centre of their receptive field, mapped back to the input image; every level
   contributes (``nms_radius`` > 0 adds a per-level window NMS, which the official extractor
   does not have). Across levels the official non-maximum suppression on receptive-field boxes
   runs with ``iou_threshold`` (official 1.0: nothing is suppressed), then the ``nfeatures``
   (official 1000) with the highest attention are kept. ``nms="soft"`` instead runs greedy
   Gaussian soft-NMS over every level's 3x3 attention maxima in input pixels.
4. Descriptors: ``f`` L2-normalised, projected on the first ``pca_dim`` principal components
   (official 40; learned on training descriptors), optionally whitened by the component
   variances, and L2-normalised again.

``KeyPoint.response`` is the attention, ``KeyPoint.size`` the receptive field of the cell in
input pixels (receptive field / level scale), ``KeyPoint.octave`` the pyramid level.

Backbones (``DELFNet(backbone=...)``):

- ``"resnet50"``: the paper's ResNet-50 up to conv4 (TF-slim ``resnet_v1_50/block3``, 1024-D,
  stride 32, receptive field 291 px; ``cvdeep.nets.delf_official``), RGB normalised as
  ``(255 x - 128) / 128``, pyramid levels resized as TensorFlow 1's ``resize_bilinear``
  (no half-pixel centres; level pixel ``x'`` is input pixel ``x' W / w``). Cell centres are the
  exact receptive-field centres, ``32 i + 2`` or ``32 i`` level pixels depending on the parity of
  the max-pool's input (the official code uses ``32 i`` for both: up to 2 level pixels apart).
  Weights: the official releases ``delf-gld`` and ``delf-landmarks``, converted from their
  TensorFlow variable names by ``cvdeep.nets.delf_official.read_weights``.
- ``"trnet"``: cvdeep's own ``delf-cvdeep``: the frozen encoder of ``TRNet``
  (``cvdeep.nets.tr``, the ``d2-cvdeep`` describe-and-detect network: 128-D, stride 4, receptive
  field 40 px, cell ``p`` at pixel ``4 p + 1.5``) on the image made gray with OpenCV's luminance
  weights, pyramid levels resized bilinearly with antialiasing (half-pixel centres); attention
  and PCA trained by ``cvdeep train delf`` (``cvdeep.train.delf``). Why this backbone:
  docs/models/delf-cvdeep.md.

``attention_scale`` (a buffer, 1 for the official weights) multiplies the softplus output:
cvdeep's training sets it so the official threshold of 100 means the same thing for its weights
(see ``cvdeep.train.delf``).

Sources (facts only, no code copied): H. Noh, A. Araujo, J. Sim, T. Weyand, B. Han,
"Large-Scale Image Retrieval with Attentive Deep Local Features", ICCV 2017; tensorflow/models
``research/delf`` (Apache-2.0) for the configuration values, the receptive-field parameters
(291 px, stride 32, padding 145), the attention network and the PCA post-processing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Variant, param
from ..errors import Error
from ..precision import full_precision
from ..weights import TRAINED_LICENSE, WeightSpec
from .base import Extractor, Features, pointwise, window_max
from .delf_official import BN_EPSILON, SlimResNet50, pca_buffers
from .tr import TRNet

OFFICIAL_SCALES = "0.25,0.3536,0.5,0.7071,1.0,1.4142,2.0"
"""``image_scales`` of the official configuration (``delf_config_example.pbtxt``)."""
BACKBONES = ("resnet50", "trnet")
_LUMINANCE = (0.299, 0.587, 0.114)  # R, G, B weights of cv2.COLOR_BGR2GRAY
_TRNET_STRIDE, _TRNET_OFFSET, _TRNET_FIELD = 4, 1.5, 40


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.25,0.5,1"`` -> (0.25, 0.5, 1.0); ``;`` separates too (``delf[scales=0.5;1]`` in a feature name);
    ``cvdeep.Error`` unless a non-empty list of numbers in (0, 8]."""
    try:
        scales = tuple(float(item) for item in str(text).replace(" ", "").replace(";", ",").split(",") if item)
    except ValueError:
        scales = ()
    if not scales or not all(math.isfinite(s) and 0.0 < s <= 8.0 for s in scales):
        raise Error(f"DELF: parameter 'scales' got {text!r}; expected comma-separated pyramid scales in (0, 8], "
                    f"e.g. {OFFICIAL_SCALES!r}")
    return scales


@dataclass
class DELFConfig(DetectorConfig):
    """The official extraction settings (``delf_config_example.pbtxt``)."""

    nfeatures: int = param(1000, "keep at most this many keypoints, the most attended (official max_feature_num 1000); "
                           "0 keeps all", low=0)
    detection_threshold: float = param(100.0, "minimum attention score (the softplus output) of a keypoint; 100 is "
                                       "the official score_threshold")
    nms_radius: int = param(0, "per pyramid level, a keypoint must be the attention maximum of its (2r+1)x(2r+1) "
                            "feature cells; 0 keeps every cell above the threshold, as the official extractor", low=0)
    scales: str = param(OFFICIAL_SCALES, "image pyramid scales separated by ',' or ';' (official: 7 scales from "
                        "0.25 to 2)")
    iou_threshold: float = param(1.0, "non-maximum suppression of receptive-field boxes across levels: a keypoint "
                                 "overlapping a better one by more than this IoU is dropped; 1 suppresses nothing "
                                 "(official)", low=0.0, high=1.0)
    pca_dim: int = param(40, "descriptor length after PCA (official 40; 0: the backbone's L2-normalised features)",
                         low=0)
    whitening: bool = param(False, "divide the PCA components by their standard deviation (official: no)")
    max_edge: int = param(1024, "shrink the image so its longest side is at most this many pixels before the "
                          "pyramid (0: never, as the official extractor; the 2x level of a 12 MP photo alone "
                          "takes over 8 GB)", low=0)

    def __post_init__(self) -> None:
        parse_scales(self.scales)


def tf_legacy_resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TensorFlow 1's ``resize_bilinear`` (``align_corners=False``, no half-pixel centres): output pixel
    ``i`` samples input position ``i * in / out``, the last input pixel repeated beyond the edge."""

    def axis(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position = torch.arange(size_out, dtype=torch.float64, device=image.device) * (size_in / size_out)
        low = position.floor().long().clamp(max=size_in - 1)
        high = (low + 1).clamp(max=size_in - 1)
        return low, high, (position - low).to(image.dtype)

    top, bottom, fy = axis(image.shape[-2], height)
    left, right, fx = axis(image.shape[-1], width)
    rows = image[..., top, :] + (image[..., bottom, :] - image[..., top, :]) * fy[:, None]
    return rows[..., left] + (rows[..., right] - rows[..., left]) * fx


class AttentionHead(nn.Module):
    """The paper's attention network on a (B, D, h, w) feature map -> (B, 1, h, w) softplus scores."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.conv1_bn = nn.BatchNorm2d(hidden, eps=BN_EPSILON)
        self.conv2 = nn.Conv2d(hidden, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.conv1_bn(pointwise(features, self.conv1.weight)))
        return F.softplus(pointwise(hidden, self.conv2.weight, self.conv2.bias))


@dataclass
class _Level:
    """One pyramid level: its maps, cell centres (input pixels), validity and scale."""

    index: int
    features: torch.Tensor  # (D, h, w)
    attention: torch.Tensor  # (h, w)
    xs: torch.Tensor  # (w,) input x of each column's receptive-field centre
    ys: torch.Tensor  # (h,)
    valid: torch.Tensor  # (h, w) bool
    scale: float  # level pixels per input pixel (mean of both axes)


class DELFNet(Extractor):
    """Backbone + attention + PCA buffers; ``forward`` gives (features, attention) of one level."""

    pca_mean: torch.Tensor
    pca_matrix: torch.Tensor
    pca_variances: torch.Tensor
    pca_fitted: torch.Tensor
    attention_scale: torch.Tensor

    def __init__(self, backbone: str = "trnet", attention_hidden: int = 128) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise Error(f"DELFNet: backbone got {backbone!r}; accepted: {', '.join(BACKBONES)}")
        self.backbone_kind = backbone
        self.backbone: nn.Module
        if backbone == "resnet50":
            self.backbone = SlimResNet50()
            dim, self.stride = SlimResNet50.out_channels, SlimResNet50.stride
            self.receptive_field = SlimResNet50.receptive_field
        else:
            self.backbone = TRNet()
            dim, self.stride, self.receptive_field = self.backbone.descriptor_size, _TRNET_STRIDE, _TRNET_FIELD
        self.descriptor_size = dim
        self.keypoint_size = float(self.receptive_field)
        self.attention = AttentionHead(dim, int(attention_hidden))
        for name, value in pca_buffers(None, dim).items():
            self.register_buffer(name, value)
        self.register_buffer("attention_scale", torch.tensor(1.0))

    # --- one level -------------------------------------------------------------------------

    def backbone_features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, D, h, w) dense features (not normalised)."""
        if self.backbone_kind == "resnet50":
            return self.backbone(image * (255.0 / 128.0) - 1.0)
        weights = image.new_tensor(_LUMINANCE).view(1, 3, 1, 1)
        gray = (image * weights).sum(dim=1, keepdim=True)
        pad_h, pad_w = -gray.shape[-2] % _TRNET_STRIDE, -gray.shape[-1] % _TRNET_STRIDE
        if pad_h or pad_w:
            gray = F.pad(gray, (0, pad_w, 0, pad_h), mode="replicate")
        return self.backbone(gray)

    def attend(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) features -> (B, 1, h, w) attention scores (softplus, times ``attention_scale``)."""
        return self.attention(features) * self.attention_scale

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB in [0, 1] -> features (B, D, h, w) and attention (B, 1, h, w)."""
        features = self.backbone_features(image)
        return features, self.attend(features)

    def resize(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """A pyramid level of ``image``, resized as the backbone's authors resize (module docstring)."""
        if (height, width) == tuple(image.shape[-2:]):
            return image
        if self.backbone_kind == "resnet50":
            return tf_legacy_resize(image, height, width)
        return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False, antialias=True)

    def level_to_input(self, position: torch.Tensor, level_size: int, input_size: int) -> torch.Tensor:
        """Level pixel coordinates along one axis -> input pixel coordinates (the resize's own map)."""
        ratio = input_size / level_size
        if self.backbone_kind == "resnet50":
            return position * ratio
        return (position + 0.5) * ratio - 0.5

    def input_to_level(self, position: torch.Tensor, level_size: int, input_size: int) -> torch.Tensor:
        """The inverse of ``level_to_input``."""
        ratio = level_size / input_size
        if self.backbone_kind == "resnet50":
            return position * ratio
        return (position + 0.5) * ratio - 0.5

    def cell_offset(self, level_size: int) -> float:
        """Level pixel of cell 0's receptive-field centre along an axis of ``level_size`` pixels."""
        if self.backbone_kind == "resnet50":
            return SlimResNet50.cell_offset(level_size)
        return _TRNET_OFFSET

    # --- the pyramid ------------------------------------------------------------------------

    def level_sizes(self, height: int, width: int, config: DELFConfig) -> list[tuple[int, int, int]]:
        """(level index, height, width) of every pyramid level the image gets (levels rounding to 0 px are left out)."""
        shrink = min(1.0, config.max_edge / max(height, width)) if config.max_edge > 0 else 1.0
        sizes = []
        for index, scale in enumerate(parse_scales(config.scales)):
            level_h, level_w = round(height * scale * shrink), round(width * scale * shrink)
            if level_h >= 1 and level_w >= 1:
                sizes.append((index, level_h, level_w))
        return sizes

    def _level(self, image: torch.Tensor, valid: torch.Tensor, index: int, height: int, width: int) -> _Level:
        in_h, in_w = image.shape[-2:]
        features, attention = self(self.resize(image, height, width))
        map_h, map_w = features.shape[-2:]
        xs = self.level_to_input(torch.arange(map_w, device=image.device) * float(self.stride)
                                 + self.cell_offset(width), width, in_w)
        ys = self.level_to_input(torch.arange(map_h, device=image.device) * float(self.stride)
                                 + self.cell_offset(height), height, in_h)
        inside_x = (xs >= 0) & (xs <= in_w - 1)
        inside_y = (ys >= 0) & (ys <= in_h - 1)
        columns = xs.round().long().clamp(0, in_w - 1)
        rows = ys.round().long().clamp(0, in_h - 1)
        cells_valid = valid[0, 0][rows][:, columns] & inside_y[:, None] & inside_x[None, :]
        return _Level(index, features[0], attention[0, 0], xs, ys, cells_valid, 0.5 * (width / in_w + height / in_h))

    def _candidates(self, level: _Level, config: DELFConfig) -> torch.Tensor:
        """(h, w) bool: the level's cells that may become keypoints."""
        attention = level.attention.masked_fill(~level.valid, float("-inf"))
        keep = level.valid & (attention >= config.detection_threshold)
        radius = 1 if config.nms == "soft" else config.nms_radius
        if radius > 0:
            keep &= attention == window_max(attention[None, None], radius)[0, 0]
        return keep

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: DELFConfig | None = None) -> Features:
        """Keypoints (N, 2), attention scores (N,) descending, descriptors (N, output_size), sizes, octaves."""
        config = config or DELFConfig()
        self._check_pca(config)
        in_h, in_w = image.shape[-2:]
        levels, pieces = [], []
        for index, height, width in self.level_sizes(in_h, in_w, config):
            level = self._level(image, valid, index, height, width)
            rows, columns = torch.nonzero(self._candidates(level, config), as_tuple=True)
            levels.append(level)
            pieces.append((level.attention[rows, columns], torch.stack([level.xs[columns], level.ys[rows]], dim=1),
                           torch.full_like(rows, len(levels) - 1), rows, columns))
        if not pieces:
            return self._empty(image, config)
        scores, points, owner, rows, columns = (torch.cat(part) for part in zip(*pieces))
        points = points.float()
        sizes = torch.tensor([self.receptive_field / level.scale for level in levels], device=image.device)[owner]
        if config.nms == "soft":
            _, decayed, order = ops.soft_nms(points, scores, config.soft_nms_sigma, config.nfeatures or -1,
                                             config.detection_threshold)
            scores = decayed
        else:
            order = torch.argsort(scores, descending=True, stable=True)
            if config.iou_threshold < 1.0:
                order = order[box_nms(points[order], sizes[order], config.iou_threshold, config.nfeatures)]
            elif config.nfeatures > 0:
                order = order[: config.nfeatures]
            scores = scores[order]
        owner, rows, columns = owner[order], rows[order], columns[order]
        raw = torch.empty((len(order), self.descriptor_size), dtype=levels[0].features.dtype, device=image.device)
        for position, level in enumerate(levels):
            chosen = owner == position
            raw[chosen] = level.features[:, rows[chosen], columns[chosen]].T
        return {
            "keypoints": points[order],
            "scores": scores.float(),
            "descriptors": self.postprocess(raw, config),
            "sizes": sizes[order].float(),
            "octaves": torch.tensor([level.index for level in levels], dtype=torch.int32, device=image.device)[owner],
        }

    def _empty(self, image: torch.Tensor, config: DELFConfig) -> Features:
        return {"keypoints": image.new_zeros((0, 2)), "scores": image.new_zeros(0),
                "descriptors": image.new_zeros((0, self.output_size(config))), "sizes": image.new_zeros(0),
                "octaves": torch.zeros(0, dtype=torch.int32, device=image.device)}

    # --- descriptors --------------------------------------------------------------------------

    def output_size(self, config: Any) -> int:
        pca_dim = int(getattr(config, "pca_dim", 0))
        return pca_dim if pca_dim > 0 else self.descriptor_size

    def _check_pca(self, config: DELFConfig) -> None:
        if config.pca_dim > self.descriptor_size:
            raise Error(f"DELF: pca_dim {config.pca_dim} exceeds the backbone's {self.descriptor_size}-D features")
        if config.pca_dim > 0 and not bool(self.pca_fitted):
            raise Error("DELF: these weights hold no PCA (it is learned by `cvdeep train delf` or read from the "
                        "official pca/*.datum files); use pca_dim=0 for the raw L2-normalised features")
        if config.pca_dim > 0 and config.whitening and not bool(torch.isfinite(self.pca_variances).all()):
            raise Error("DELF: these weights hold no PCA variances; whitening needs them (use whitening=False)")

    def postprocess(self, raw: torch.Tensor, config: DELFConfig) -> torch.Tensor:
        """(N, D) backbone features -> final descriptors: L2, PCA to ``pca_dim`` (optionally whitened), L2."""
        descriptors = F.normalize(raw.float(), dim=1)
        if config.pca_dim > 0:
            components = self.pca_matrix[: config.pca_dim]
            with full_precision():  # post-processing: float32 under precision="bf16" (cvdeep.precision)
                descriptors = (descriptors - self.pca_mean) @ components.T
            if config.whitening:
                descriptors = descriptors / self.pca_variances[: config.pca_dim].clamp_min(1e-12).sqrt()
            descriptors = F.normalize(descriptors, dim=1)
        return descriptors

    def _describe_at_levels(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None,
        config: Any,
    ) -> torch.Tensor:
        """Descriptors at given keypoints: each is described on the pyramid level whose receptive field
        (``receptive_field / scale`` input pixels) is closest to its ``size`` in log scale (the level of
        scale 1 without sizes), bilinearly between feature cells; angles are not used."""
        config = config if isinstance(config, DELFConfig) else DELFConfig()
        self._check_pca(config)
        in_h, in_w = image.shape[-2:]
        levels = self.level_sizes(in_h, in_w, config)
        out = image.new_zeros((len(keypoints), self.descriptor_size))
        if not levels or len(keypoints) == 0:
            return self.postprocess(out, config) if len(keypoints) else image.new_zeros((0, self.output_size(config)))
        level_scales = torch.tensor([0.5 * (h / in_h + w / in_w) for _, h, w in levels], device=image.device)
        if sizes is None:
            wanted = torch.ones(len(keypoints), device=image.device)
        else:
            wanted = self.receptive_field / sizes.to(image.device).float().clamp_min(1e-6)
        choice = (wanted.log()[:, None] - level_scales.log()[None, :]).abs().argmin(dim=1)
        for position, (_, height, width) in enumerate(levels):
            chosen = choice == position
            if not bool(chosen.any()):
                continue
            features, _ = self(self.resize(image, height, width))
            points = keypoints[chosen].to(image.device).float()
            cell_x = (self.input_to_level(points[:, 0], width, in_w) - self.cell_offset(width)) / self.stride
            cell_y = (self.input_to_level(points[:, 1], height, in_h) - self.cell_offset(height)) / self.stride
            out[chosen] = sample_cells(features[0], cell_x, cell_y)
        return self.postprocess(out, config)

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: Any = None,
    ) -> torch.Tensor:
        """``Extractor.describe``: the keypoint's pyramid level by its size, the config's scales and PCA
        (the official configuration when None); angles and octaves are not used."""
        return self._describe_at_levels(image, keypoints, sizes, config)


def sample_cells(features: torch.Tensor, cell_x: torch.Tensor, cell_y: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (N, D) of a (D, h, w) map at fractional cell coordinates (cell centres at integers),
    the border cells repeated outside the map."""
    height, width = features.shape[-2:]
    gx = cell_x / max(width - 1, 1) * 2 - 1 if width > 1 else torch.zeros_like(cell_x)
    gy = cell_y / max(height - 1, 1) * 2 - 1 if height > 1 else torch.zeros_like(cell_y)
    grid = torch.stack([gx, gy], dim=1).to(features.dtype)[None, None]
    return F.grid_sample(features[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0, :, 0].T


def box_nms(centres: torch.Tensor, sides: torch.Tensor, threshold: float, limit: int = 0,
            chunk: int = 256) -> torch.Tensor:
    """Greedy NMS of square boxes (centre (N, 2), side (N,)) already sorted best first, as
    ``tf.image.non_max_suppression``: a box whose IoU with a kept box exceeds ``threshold`` is dropped;
    stops after ``limit`` kept boxes (0: no limit). Returns the kept positions (ascending)."""
    half = (sides.double() / 2).cpu().numpy()
    centre = centres.double().cpu().numpy()
    boxes = np.concatenate([centre - half[:, None], centre + half[:, None]], axis=1)  # x0, y0, x1, y1
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        low = np.maximum(boxes[first, None, :2], boxes[None, second, :2])
        high = np.minimum(boxes[first, None, 2:], boxes[None, second, 2:])
        inter = np.clip(high - low, 0, None).prod(axis=2)
        union = areas[first, None] + areas[None, second] - inter
        return inter / np.maximum(union, 1e-12)

    kept: list[int] = []
    for start in range(0, len(boxes), chunk):
        block = np.arange(start, min(start + chunk, len(boxes)))
        if kept:
            block = block[~(iou(block, np.array(kept)) > threshold).any(axis=1)]
        overlaps = iou(block, block) > threshold
        alive = np.ones(len(block), bool)
        for position in range(len(block)):
            if not alive[position]:
                continue
            kept.append(int(block[position]))
            if limit and len(kept) >= limit:
                return torch.tensor(kept, dtype=torch.long, device=centres.device)
            alive &= ~overlaps[position]
    return torch.tensor(kept, dtype=torch.long, device=centres.device)


_OFFICIAL_LICENSE = "Apache-2.0 (tensorflow/models, which publishes the model; no separate licence for the file)"
_READER = "cvdeep.nets.delf_official:read_weights"


def _official(name: str, release: str, description: str, readme: str) -> Variant:
    return Variant(
        name, description,
        WeightSpec(name=name, filename=f"delf/{release}.tar.gz", license=_OFFICIAL_LICENSE,
                   source=f"tensorflow/models research/delf (README: {readme})",
                   urls=(f"http://storage.googleapis.com/delf/{release}.tar.gz",), reader=_READER),
        network_args={"backbone": "resnet50", "attention_hidden": 512},
    )


FAMILIES = (
    ModelFamily(
        name="delf",
        public_name="DELF",
        kind="detector",
        network=DELFNet,
        config=DELFConfig,
        input=InputConvention(channels=3, gray="luminance", stride=1),  # each level is resized and padded inside
        paper="Noh, Araujo, Sim, Weyand, Han: Large-Scale Image Retrieval with Attentive Deep Local Features, "
              "ICCV 2017",
        summary="DELF: dense CNN features over an image pyramid, keypoints chosen by a learned attention, "
                "L2-normalised and PCA-reduced descriptors (40-D) for image retrieval.",
        variants=(
            _official("delf-gld", "delf_gld_20190411", "DELF, ResNet-50 block3 + attention, trained on "
                      "Google-Landmarks v1 (official release delf_gld_20190411)",
                      "DELF pre-trained on the Google-Landmarks dataset v1"),
            _official("delf-landmarks", "delf_v1_20171026", "DELF of the ICCV'17 paper, trained on Landmarks-Clean/"
                      "Landmarks-Full (official release delf_v1_20171026)",
                      "DELF pre-trained on Landmarks-Clean/Landmarks-Full dataset"),
            Variant(
                "delf-cvdeep",
                "DELF attention and PCA trained by cvdeep (image-level supervision from unlabeled photos) on the "
                "frozen TRNet encoder of d2-cvdeep",
                WeightSpec(name="delf-cvdeep", filename="delf-cvdeep.pt", license=TRAINED_LICENSE,
                           sha256="1517cdf295e55e5aea9abd34131a446a7f2cc7f1f16f53d9ca62993becbca287",
                           source="trained by cvdeep: docs/models/delf-cvdeep.md", packaged=True, noncommercial=True,
                           reader=_READER),
                network_args={"backbone": "trnet", "attention_hidden": 128},
                trained_by_cvdeep=True,
            ),
        ),
    ),
)
