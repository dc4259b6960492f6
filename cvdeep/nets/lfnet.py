"""LF-Net (Ono, Trulls, Fua, Yi, NeurIPS 2018): a scale-space detector with dense scale and orientation,
a differentiable patch sampler and a patch descriptor.

Detector [``detector.*``] (the release's ``mso_resnet_detector``): the gray image, normalised per
image to zero mean and unit variance (``input_inst_norm``; see "Canvas" below), goes through a
5 x 5 convolution to 16 channels and 3 pre-activation residual blocks (BatchNorm, leaky ReLU 0.2,
5 x 5 conv, BatchNorm, leaky ReLU, 5 x 5 conv, plus the input), then BatchNorm and leaky ReLU: the
feature map F. For each of 5 scales s, log-spaced from sqrt(2) down to 1/sqrt(2), F resized by 1/s goes through its
own 5 x 5 convolution to one map, normalised per image (over the same pixels), resized back: the
scale-space logits (B, 5, H, W). An orientation convolution (5 x 5, initialised to the constant
(1, 0)) gives a unit 2-vector (cos, sin) per pixel.

Canvas (a deviation from the release, whose statistics take every pixel): the means and variances of
both normalisations leave out the image's canvas, flat runs from the image edge and the 2 px around them
(``content_weights``: the black border of a turn or warp, a letterbox, padding), so an image pasted on
a canvas, or turned onto one, is described as the picture itself. With every pixel counted, graf pasted
on a black canvas of twice its area kept 8 of 112 mutual matches correct; without its canvas 366 of 375
(tests/test_lfnet.py). Why runs from the edge and not every flat pixel: on 12 training photos (not the
evaluation pairs) leaving out every flat pixel cost 1.7 and 4.0 points of correct matches against the
photo's own JPEG at quality 20 and 10 (JPEG makes flat blocks), the runs 0.2 and 0.6, and both fixed
the canvas (4 % -> 98.5 %) and a 30-degree turn (5 % -> 89 %). ``lfnet-cvdeep`` was trained with every
pixel counted (its warped views have black corners) and was not retrained; training now uses the same
rule.

Score map (training and inference alike): a soft scale-space NMS (each logit's
``exp(3 (x - m))`` over the sum of those in its 15 x 15 x 5 neighbourhood, m the neighbourhood
maximum), then a softmax over the scales with strength 100 gives the score map (the soft
maximum) and the scale map (the soft argmax of s); the score is zero within 16 px of the image
edge (where the 8 stacked 5 x 5 convolutions see padding).

Keypoints: the common vocabulary (``nms="hard"``: the release's 5 x 5 NMS, ``nms_radius`` 2;
``"soft"``: Gaussian soft-NMS), ``cvdeep.ops.nms`` then a 9 x 9 ``cvdeep.ops.softargmax``
refinement (strength 1, the release's ``kp_com_strength``), the scale s and the angle
atan2(sin, cos) read at the keypoint. A keypoint's patch covers 32 s pixels and is rotated by the
angle; it is cut from the normalised image by ``cvdeep.ops.extract_patches`` (bilinear, as the
release's spatial transformer, and differentiable in position, size and angle, so training and
inference sample alike). ``KeyPoint.size`` is 32 s / 6 px: the patch side is 6 x size, SIFT's
descriptor support, as LIFT's; ``KeyPoint.angle`` is in OpenCV's convention (degrees, clockwise
on screen); ``compute()`` cuts given keypoints the same way (upright when their angle is -1).

Descriptor [``descriptor.*``] (the release's ``simple_desc``): three 3 x 3 stride-2 convolutions,
each with BatchNorm and ReLU, a fully connected layer with BatchNorm and ReLU, a fully connected
output, L2-normalised. The release uses widths 64, 128, 256, 512 hidden units and 256-D;
``lfnet-cvdeep`` halves the convolution widths and the hidden layer (32, 64, 128; 256) and gives
128-D descriptors (as SIFT, HardNet, LIFT), 3.1 M multiply-adds per patch against 12 M, so that
the two-branch training fits a 2-core CPU (``cvdeep.train.lfnet``).

Memory: ``forward`` computes the whole maps (training, on small crops); ``extract`` never holds F
or the (S, H, W) logits at full resolution (``detection_maps``, ``cvdeep.nets.bands``): one pass
over row bands of F (the trunk read with a halo of its receptive radius) writes each scale's
score-conv map at its own size and the orientations, then the soft NMS and the scale selection
run over row bands of the logits, resized back band by band. Bands of any height give the same
numbers bit for bit; a 12 MP photo peaks at about 1.1 GB of RSS instead of 6 GB.

Sources (facts only, no code copied): Y. Ono, E. Trulls, P. Fua, K. M. Yi, "LF-Net: Learning
Local Features from Images", NeurIPS 2018; vcg-uvic/lf-net-release (research and evaluation use
only), ``models/mso_resnet_detector.py``, ``models/simple_desc.py``, ``det_tools.py``,
``inference.py``, ``spatial_transformer.py`` and the defaults of ``train_lfnet.py``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Variant, param
from ..image import FLAT_RADIUS
from ..ops import extract_patches  # float32 under autocast (cvdeep.precision)
from ..weights import TRAINED_LICENSE, WeightSpec
from .bands import band_height, release_freed_memory, resize_rows, run_banded, source_positions
from .base import Extractor, Features, mask_scores, valid_at
from .multiscale import level_nms_radius, merge_levels

PATCH = 32
"""Side in pixels of the descriptor's input patch (the release's ``patch_size``)."""
DESC_SCALE_FACTOR = 6.0
"""Patch side in units of ``KeyPoint.size``: a keypoint of scale s has size 32 s / 6."""
SOFT_NMS_WINDOW = 15
"""Side of the soft scale-space NMS window (``sm_ksize``)."""
SOFT_NMS_STRENGTH = 3.0
"""Strength of that soft NMS (``com_strength``)."""
SCALE_STRENGTH = 100.0
"""Strength of the softmax over scales (``score_com_strength`` = ``scale_com_strength``)."""
REFINE_WINDOW = 4
"""Half-window of the keypoint refinement: 9 x 9 (``kp_loc_size``)."""
REFINE_TEMPERATURE = 1.0
"""Temperature of the refinement's softmax (``kp_com_strength`` 1)."""
LEAKY_SLOPE = 0.2


def content_weights(image: torch.Tensor, radius: int = FLAT_RADIUS) -> torch.Tensor:
    """(B, 1, H, W) float: 0 on the image's canvas, 1 elsewhere.

    The canvas (a black border a turn or warp leaves, a letterbox, padding) is where the image is flat
    (``cvdeep.image.flat_pixels``'s rule: the (2r+1)^2 neighbourhood holds one value) along an unbroken
    row or column run from the image edge, grown by r so that the canvas pixels touching the picture leave
    too. Flat patches inside the picture (JPEG blocks, a saturated highlight) stay: they are content, and
    they differ from one compression of a scene to the next. Every canvas pixel of a convex picture (a
    turned or warped rectangle) has such a run: of the four axis rays from a point outside a convex set,
    the left or the right one misses it."""
    window = 2 * radius + 1
    highest = F.max_pool2d(image, window, stride=1, padding=radius)
    lowest = -F.max_pool2d(-image, window, stride=1, padding=radius)
    flat = (highest == lowest).to(torch.uint8)
    canvas = torch.zeros_like(flat)
    for dim in (-1, -2):
        canvas |= torch.cummin(flat, dim=dim).values
        canvas |= torch.cummin(flat.flip(dim), dim=dim).values.flip(dim)
    return 1.0 - F.max_pool2d(canvas.to(image.dtype), window, stride=1, padding=radius)


def _statistics(x: torch.Tensor, eps: float, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and standard deviation (variance + ``eps``) over H, W, kept as (B, C, 1, 1), in float32.

    With ``weights`` (B, 1, H, W) in [0, 1] the moments are weighted: canvas pixels (weight 0) do not
    count; a sample whose weights are all 0 uses every pixel."""
    x = x.float()
    if weights is None:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        variance = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
        return mean, torch.sqrt(variance + eps)
    weights = weights.float()
    total = weights.sum(dim=(-2, -1), keepdim=True)
    weights = torch.where(total > 0, weights, 1.0)
    total = weights.sum(dim=(-2, -1), keepdim=True)
    mean = (weights * x).sum(dim=(-2, -1), keepdim=True) / total
    variance = (weights * (x - mean).square()).sum(dim=(-2, -1), keepdim=True) / total
    return mean, torch.sqrt(variance + eps)


def instance_normalise(x: torch.Tensor, weights: torch.Tensor | None = None, eps: float = 1e-3) -> torch.Tensor:
    """Each (C, H, W) sample of x to zero mean and unit variance over H, W (variance + ``eps``), the
    moments weighted by ``weights`` (B, 1, H, W) when given (``_statistics``)."""
    mean, std = _statistics(x, eps, weights)
    return ((x - mean) / std).to(x.dtype)


def instance_normalise_(x: torch.Tensor, weights: torch.Tensor | None = None, eps: float = 1e-3) -> torch.Tensor:
    """``instance_normalise`` in place (the same numbers), for a large map that needs no copy."""
    mean, std = _statistics(x, eps, weights)
    return x.sub_(mean.to(x.dtype)).div_(std.to(x.dtype))


def level_weights(weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The image's ``content_weights`` (B, 1, H, W) at a scale level's ``size``: the share of picture pixels
    under each level pixel (area resize)."""
    return F.interpolate(weights, size=size, mode="area")


def zero_border(score: torch.Tensor, border: int) -> torch.Tensor:
    """The (B, H, W) score map with zeros within ``border`` px of its edge."""
    if border <= 0:
        return score
    edge = torch.zeros_like(score[:1], dtype=torch.bool)
    edge[:, border:-border, border:-border] = True
    return score * edge


@dataclass(frozen=True)
class LevelBand:
    """The rows of a resized scale level that one band of F rows produces, and the rows they read.

    The level's rows are shared out between the bands of F in proportion (``start = top * h // H``);
    their 5 x 5 convolution reads ``halo`` more resized rows on each side (clipped to the level),
    and the bilinear resize of those reads the F rows ``[source_lo, source_hi)``.
    """

    start: int
    stop: int
    lo: int
    hi: int
    source_lo: int
    source_hi: int

    @classmethod
    def of(cls, top: int, bottom: int, height: int, level_height: int, halo: int) -> LevelBand | None:
        """The level band of F rows ``[top, bottom)`` of ``height``, or None when it has no level row."""
        start, stop = top * level_height // height, bottom * level_height // height
        if start == stop:
            return None
        lo, hi = max(0, start - halo), min(level_height, stop + halo)
        lower, upper, _ = source_positions(height, level_height, lo, hi, align_corners=False)
        return cls(start, stop, lo, hi, int(lower[0]), int(upper[-1]) + 1)

    def crop(self, output: torch.Tensor) -> torch.Tensor:
        """The rows ``[start, stop)`` of an output computed on the resized rows ``[lo, hi)``."""
        return output[..., self.start - self.lo : self.stop - self.lo, :]


class ResidualBlock(nn.Module):
    """Pre-activation residual block: BN, leaky ReLU, conv, BN, leaky ReLU, conv, plus the input."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.bn1(x), LEAKY_SLOPE))
        return x + self.conv2(F.leaky_relu(self.bn2(y), LEAKY_SLOPE))


class LFNetDetectorNet(nn.Module):
    """(B, 1, H, W) normalised image -> scale-space logits (B, S, H, W) and orientations (B, 2, H, W)."""

    def __init__(self, channels: int = 16, blocks: int = 3, kernel: int = 5, scales: Sequence[float] = ()) -> None:
        super().__init__()
        self.kernel = int(kernel)
        self.init_conv = nn.Conv2d(1, channels, kernel, padding=kernel // 2)
        self.blocks = nn.Sequential(*(ResidualBlock(channels, kernel) for _ in range(blocks)))
        self.final_bn = nn.BatchNorm2d(channels)
        self.scales = tuple(float(s) for s in scales)
        self.score_convs = nn.ModuleList(nn.Conv2d(channels, 1, kernel, padding=kernel // 2) for _ in self.scales)
        self.ori_conv = nn.Conv2d(channels, 2, kernel, padding=kernel // 2)
        nn.init.zeros_(self.ori_conv.weight)
        with torch.no_grad():
            self.ori_conv.bias.copy_(torch.tensor([1.0, 0.0]))  # type: ignore[union-attr]  # the conv has a bias

    @property
    def trunk_radius(self) -> int:
        """Rows of the image a row of F sees on each side: the trunk's 1 + 2 x blocks convolutions."""
        return (1 + 2 * len(self.blocks)) * (self.kernel // 2)

    @property
    def border(self) -> int:
        """Pixels along the edge where the stacked convolutions (the trunk and a score conv) see padding."""
        return self.trunk_radius + self.kernel // 2

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The feature map F (B, C, H, W); local in eval mode (convolutions, BatchNorm on running statistics)."""
        features = self.blocks(self.init_conv(image))
        return F.leaky_relu(self.final_bn(features), LEAKY_SLOPE)

    def feature_rows(self, image: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Rows ``[lo, hi)`` of F (eval mode), from the image rows they see: the same numbers as ``features``."""
        height = image.shape[-2]
        a, b = max(0, lo - self.trunk_radius), min(height, hi + self.trunk_radius)
        return self.features(image[..., a:b, :])[..., lo - a : hi - a, :]

    @staticmethod
    def level_size(scale: float, height: int, width: int) -> tuple[int, int]:
        """Size of the map F is resized to for scale ``scale`` (F shrunk by ``scale``)."""
        return max(1, int(height / scale + 0.5)), max(1, int(width / scale + 0.5))

    def forward(self, image: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole maps (training, small crops; ``LFNet.detection_maps`` is the banded inference); each
        level normalised over the image's ``weights`` (``content_weights``)."""
        features = self.features(image)
        height, width = image.shape[-2:]
        logits = []
        for scale, conv in zip(self.scales, self.score_convs):
            size = self.level_size(scale, height, width)
            resized = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
            level = instance_normalise(conv(resized), level_weights(weights, size))
            logits.append(F.interpolate(level, size=(height, width), mode="bilinear", align_corners=False))
        orientation = F.normalize(self.ori_conv(features), dim=1, eps=1e-12)
        return torch.cat(logits, dim=1), orientation


class LFNetDescriptorNet(nn.Module):
    """(N, 1, 32, 32) patches of the normalised image -> (N, D) unit descriptors."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), hidden: int = 256, dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            layers += [nn.Conv2d(channels, int(width), 3, stride=2, padding=1), nn.BatchNorm2d(int(width)), nn.ReLU()]
            channels = int(width)
        self.convs = nn.Sequential(*layers)
        side = PATCH // 2 ** len(widths)
        self.fc1 = nn.Linear(channels * side * side, int(hidden))
        self.bn = nn.BatchNorm1d(int(hidden))
        self.fc2 = nn.Linear(int(hidden), int(dim))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.convs(patches).flatten(1)
        return F.normalize(self.fc2(F.relu(self.bn(self.fc1(x)))), dim=1)


def scale_space_nms(logits: torch.Tensor, window: int = SOFT_NMS_WINDOW,
                    strength: float = SOFT_NMS_STRENGTH) -> torch.Tensor:
    """(B, S, H, W) logits -> soft NMS probabilities: exp(k (x - m)) / (sum of those in the window x all scales),
    m the window's maximum over all scales (zero outside the map in the sum, -inf in the maximum).

    The window maximum is taken as a column maximum then a row maximum: the same numbers, a third
    of the time of one 15 x 15 pooling."""
    pad = window // 2
    peaks = logits.amax(dim=1, keepdim=True)
    maxima = F.max_pool2d(F.max_pool2d(peaks, (window, 1), stride=1, padding=(pad, 0)), (1, window), stride=1,
                          padding=(0, pad))
    exp = torch.exp(strength * (logits - maxima))
    total = F.avg_pool2d(exp.sum(dim=1, keepdim=True), window, stride=1, padding=pad, count_include_pad=True)
    return exp / (total * window * window + 1e-6)


def soft_scale_selection(probabilities: torch.Tensor, scales: torch.Tensor,
                         strength: float = SCALE_STRENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, H, W) -> score (B, H, W) = the softmax-weighted mean over scales (a soft maximum) and the
    scale map (B, H, W) = the same weights' mean of ``scales`` (S,) (a soft argmax).

    The softmax is written out: ``torch.softmax`` over a non-innermost dim rounds the last vector
    lanes of a map differently, so row bands would not give the numbers of the whole map."""
    logits = strength * probabilities
    weights = torch.exp(logits - logits.amax(dim=1, keepdim=True).detach())  # the shift cancels out
    weights = weights / weights.sum(dim=1, keepdim=True)
    score = (weights * probabilities).sum(dim=1)
    scale = (weights * scales.to(weights.dtype).reshape(1, -1, 1, 1)).sum(dim=1)
    return score, scale


@dataclass
class LFNetConfig(DetectorConfig):
    """LF-Net's detection on its score map (probabilities in [0, 1])."""

    nfeatures: int = param(500, "keep at most this many keypoints, the strongest (the release's top_k); 0 keeps all",
                           low=0)
    detection_threshold: float = param(0.0, "minimum score-map value (a soft-NMS probability in [0, 1])", low=0.0,
                                       high=1.0)
    nms_radius: int = param(2, "NMS radius in pixels (the release's 5 x 5 window)", low=0)


class LFNet(Extractor):
    """Detector and descriptor of LF-Net; see the module docstring."""

    scales: torch.Tensor

    def __init__(self, channels: int = 16, blocks: int = 3, kernel: int = 5, num_scales: int = 5,
                 min_scale: float = 2**-0.5, max_scale: float = 2**0.5, desc_widths: Sequence[int] = (32, 64, 128),
                 desc_hidden: int = 256, desc_dim: int = 128) -> None:
        super().__init__()
        if num_scales == 1:
            scales = [1.0]
        else:
            logs = torch.linspace(math.log(max_scale), math.log(min_scale), num_scales, dtype=torch.float64)
            scales = [math.exp(v) for v in logs.tolist()]
        self.detector = LFNetDetectorNet(channels, blocks, kernel, scales)
        self.descriptor = LFNetDescriptorNet(desc_widths, desc_hidden, desc_dim)
        self.descriptor_size = int(desc_dim)
        self.register_buffer("scales", torch.tensor(scales), persistent=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1, H, W) in [0, 1] -> the normalised image, logits (B, S, H, W), score and scale maps
        (B, H, W) and orientations (B, 2, H, W) (cos, sin)."""
        weights = content_weights(image)
        normalised = instance_normalise(image, weights)
        logits, orientation = self.detector(normalised, weights)
        score, scale = soft_scale_selection(scale_space_nms(logits), self.scales)
        score = zero_border(score, self.detector.border)
        return {"image": normalised, "logits": logits, "score": score, "scale": scale, "orientation": orientation}

    def scale_levels(self, normalised: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One pass over row bands of F (eval mode, one (1, 1, H, W) image): each scale's score-conv
        map at its own size, not yet normalised, and the unit orientations (1, 2, H, W).

        A band of F rows is computed once (``feature_rows``) for every level row its resize reads
        and for the orientation conv's halo, so F never exists beyond a band (768 MB at 12 MP).
        """
        detector = self.detector
        height, width = normalised.shape[-2:]
        halo = detector.kernel // 2
        sizes = [detector.level_size(scale, height, width) for scale in detector.scales]
        levels = [normalised.new_empty((1, 1, *size)) for size in sizes]
        orientations = normalised.new_empty((1, 2, height, width))
        rows = band_height(width, self.band_pixels)
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            bands = [LevelBand.of(top, bottom, height, size[0], halo) for size in sizes]
            lo, hi = max(0, top - halo), min(height, bottom + halo)  # what the orientation conv reads
            first = min([lo] + [band.source_lo for band in bands if band is not None])
            last = max([hi] + [band.source_hi for band in bands if band is not None])
            features = detector.feature_rows(normalised, first, last)
            for level, size, conv, band in zip(levels, sizes, detector.score_convs, bands):
                if band is not None:
                    resized = resize_rows(features, size, band.lo, band.hi, False, rows_of=(first, height))
                    level[..., band.start : band.stop, :] = band.crop(conv(resized))
            orientation = detector.ori_conv(features[..., lo - first : hi - first, :])[..., top - lo : bottom - lo, :]
            orientations[..., top:bottom, :] = F.normalize(orientation, dim=1, eps=1e-12)
            del features, orientation
            release_freed_memory()
        return levels, orientations

    def detection_maps(self, image: torch.Tensor) -> Features:
        """What keypoint selection reads, for a (1, 1, H, W) image in [0, 1]: ``forward``'s maps but
        the logits, equal to float rounding (the resizes run rows first: ``bands.resize_rows``).

        Bounded memory in eval mode: besides these maps only the scale levels (5.6 floats per
        pixel) are stored; F, the logits and the NMS exist one row band at a time. The soft NMS
        reads logits 14 rows away (its window maximum at each pixel of its window), hence that halo.
        In training mode (BatchNorm on batch statistics: not local) the whole-map ``forward``.
        """
        if self.training:
            return self(image)
        weights = content_weights(image)
        normalised = instance_normalise(image, weights)
        levels, orientations = self.scale_levels(normalised)
        for level in levels:
            instance_normalise_(level, level_weights(weights, (level.shape[-2], level.shape[-1])))
        del weights
        size = (normalised.shape[-2], normalised.shape[-1])

        def logits(lo: int, hi: int) -> torch.Tensor:
            """Rows [lo, hi) of the scale-space logits (1, S, H, W), each level resized back."""
            return torch.cat([resize_rows(level, size, lo, hi, align_corners=False) for level in levels], dim=1)

        def selection(rows: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            return soft_scale_selection(scale_space_nms(rows), self.scales)

        score, scale = run_banded(selection, logits, halo=2 * (SOFT_NMS_WINDOW // 2), pixels=self.band_pixels,
                                  size=size)
        levels.clear()
        return {"image": normalised, "score": zero_border(score, self.detector.border), "scale": scale,
                "orientation": orientations}

    @staticmethod
    def sizes_of(scales: torch.Tensor) -> torch.Tensor:
        """KeyPoint.size (px) of keypoints of scale s: 32 s / 6."""
        return scales * (PATCH / DESC_SCALE_FACTOR)

    @staticmethod
    def angles_of(orientation: torch.Tensor) -> torch.Tensor:
        """(N, 2) (cos, sin) -> (N,) OpenCV angles in degrees [0, 360)."""
        return torch.remainder(torch.rad2deg(torch.atan2(orientation[:, 1], orientation[:, 0])), 360.0)

    def patches(self, normalised: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor,
                angles: torch.Tensor | None) -> torch.Tensor:
        """(N, 1, 32, 32) patches of side 6 x size of the (1, 1, H, W) normalised image (differentiable)."""
        return extract_patches(normalised, keypoints, sizes, angles, PATCH, DESC_SCALE_FACTOR)

    def describe_normalised(self, normalised: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor,
                            angles: torch.Tensor | None) -> torch.Tensor:
        rows = [self.descriptor(self.patches(normalised, keypoints[part], sizes[part],
                                             None if angles is None else angles[part]))
                for part in (slice(s, s + 512) for s in range(0, keypoints.shape[0], 512))]
        return torch.cat(rows) if rows else normalised.new_zeros((0, self.descriptor_size))

    def describe(self, image: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor | None = None,
                 angles: torch.Tensor | None = None, octaves: torch.Tensor | None = None,
                 config: Any = None) -> torch.Tensor:
        """(N, D) descriptors of (N, 2) keypoints with their sizes (px) and angles (-1: upright)."""
        if sizes is None:
            raise ValueError("LF-Net needs keypoint sizes to cut its patches")
        return self.describe_normalised(instance_normalise(image, content_weights(image)), keypoints, sizes, angles)

    def select(self, maps: Features, index: int, valid: torch.Tensor, config: LFNetConfig) -> Features:
        """Keypoints of image ``index`` of ``detection_maps``: NMS, refinement, scale, angle; before ``nfeatures``."""
        score = mask_scores(maps["score"][index][None, None], valid, float("-inf"))
        found_cells, found_values = ops.nms(score, level_nms_radius(config), config.detection_threshold)
        cells, values = found_cells[0], found_values[0]
        plain = maps["score"][index].float()
        refined, _ = ops.softargmax(plain, cells.to(plain.dtype), REFINE_WINDOW, REFINE_TEMPERATURE)
        inside = valid_at(valid, refined)
        cells, refined, values = cells[inside], refined[inside], values[inside]
        scale = maps["scale"][index][cells[:, 1], cells[:, 0]]
        orientation = maps["orientation"][index][:, cells[:, 1], cells[:, 0]].t()
        return {"keypoints": refined.float(), "scores": values.float(), "sizes": self.sizes_of(scale).float(),
                "angles": self.angles_of(orientation).float()}

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: LFNetConfig | None = None) -> Features:
        """Keypoints (N, 2), scores (N,) descending, sizes (px), angles (degrees) and descriptors (N, D)."""
        config = config or LFNetConfig()
        maps = self.detection_maps(image)
        selected = merge_levels([self.select(maps, 0, valid, config)], config)
        selected["descriptors"] = self.describe_normalised(maps["image"], selected["keypoints"], selected["sizes"],
                                                           selected["angles"])
        return selected


FAMILIES = (
    ModelFamily(
        name="lfnet",
        public_name="LFNet",
        kind="detector",
        network=LFNet,
        config=LFNetConfig,
        input=InputConvention(channels=1, gray="luminance"),
        paper="Ono, Trulls, Fua, Yi: LF-Net: Learning Local Features from Images, NeurIPS 2018",
        summary="LF-Net: a scale-space detector with dense scale and orientation, patches cut by a differentiable "
                "sampler, a small patch descriptor (128-D). KeyPoint.size and KeyPoint.angle in OpenCV's conventions.",
        variants=(
            Variant(
                "lfnet-cvdeep",
                "LF-Net trained by cvdeep with its two-branch scheme (score, geometry, pair and triplet losses) on "
                "homographies of unlabeled photos; descriptor widths halved, 128-D",
                WeightSpec(name="lfnet-cvdeep", filename="lfnet-cvdeep.pt", license=TRAINED_LICENSE,
                           sha256="8d9b1eb2d28f6dab3e2e9232322967f44a8427f2559cbb0ce611c6352c740afa",
                           source="trained by cvdeep: docs/models/lfnet-cvdeep.md", packaged=True, noncommercial=True),
                trained_by_cvdeep=True,
            ),
        ),
    ),
)
