"""LIFT (Yi, Trulls, Lepetit, Fua, ECCV 2016): a learned detector, orientation estimator and descriptor.

Three networks, run in this order at inference and trained in the reverse order
(``cvdeep.train.lift``): the *detector* scores every pixel of a scale space, the *orientation
estimator* turns the patch around each keypoint into an angle, and the *descriptor* describes
the patch rotated by that angle.

Geometry (the official configuration ``picc-finetune-nopair``: ``nPatchSizeKp`` 48,
``nDescInputSize`` 64, ``fRatioScale`` 12, a LIFT "scale" s being half of OpenCV's
``KeyPoint.size``):

- the orientation and descriptor patches are 64 x 64 pixels covering a square of side
  ``DESC_SCALE_FACTOR`` = 6 x ``KeyPoint.size`` (12 s: the 64 px centre of the official 128 px
  training patch of side 24 s), cut by ``cvdeep.ops.extract_patches`` (``KeyPoint.angle``
  degrees, clockwise on screen as OpenCV's SIFT; checked in tests/test_lift.py on a rotated
  image);
- the detector works at 4 pixels per ``KeyPoint.size`` (the official 48 px keypoint patch covers
  24 s = 12 sizes): a keypoint found on a pyramid level that shrank the image by r has the size
  ``4 / r`` pixels. ``min_size``, ``max_size`` and ``levels_per_octave`` choose the levels
  (the official test covers sizes 2..32 with 5 levels per octave; cvdeep's default starts at
  4 px, the input resolution, so that no level is upsampled).

Networks (``state_dict`` keys in brackets):

- detector [``detector.conv``]: TILDE's form as LIFT's ``tilde.py`` builds it: one 25 x 25
  convolution to 16 maps (no padding) and generalised hinging hyperplanes (GHH: the 16 maps in
  4 groups of 4, the maximum of each group, summed with signs +, -, +, -), on the image
  standardised as ``(255 I - input_mean) / input_std``. The score map is padded back to the
  level's size with -inf (no keypoint within 12 level pixels of its edge, as the official
  test pads). Inference: hard NMS in a (2r+1)^2 window of each level (``nms_radius`` level
  pixels; the official test's radius is 3) and against the two neighbouring levels (the
  official scale-space NMS), then a 3 x 3 ``cvdeep.ops.softargmax`` refinement; training
  localises with ``cvdeep.ops.softargmax`` over the whole central 15 x 15 score map of a
  patch (strength 10, i.e. temperature 0.1, as the official ``fCoMStrength``).
- orientation [``orientation.*``]: LIFT's ``cvpr16.py``: 5 x 5 conv to 10, ReLU, 2 x 2 max-pool,
  5 x 5 conv to 20, ReLU, pool, 3 x 3 conv to 50, ReLU, pool, a fully connected layer to 1600
  units with GHH (4 x 4) -> 100, dropout 0.3, one to 32 units with GHH -> 2 numbers (a, b) and
  the angle atan2(a, b). The official graph feeds the first fully connected layer the unpooled
  50 x 11 x 11 map (6050 inputs, 9.7 M weights); cvdeep feeds it the pooled 50 x 5 x 5 map
  (1250 inputs, 2.0 M weights), so a trained file stays under 10 MB.
- descriptor [``descriptor.*``, ``LIFTDescriptorNet``]: the CNN3 of the official release
  (``new-CNN3-picc-iter-56k.h5``, the DeepDesc layout): 7 x 7 conv to 32, tanh, L2 pooling 2,
  subtractive normalisation (5 x 5 kernel over all channels, border-corrected), 6 x 6 conv to
  64, tanh, L2 pooling 3, subtractive normalisation, 5 x 5 conv to 128, tanh, L2 pooling 4:
  128-D. Its input is the patch in 0..255 standardised by the scalars ``patch_mean`` and
  ``patch_std`` of the file.

The official file and its normalisation. ``read_official_descriptor`` reads the HDF5 file
(Theano/Lasagne export: ``layers`` = layer types [1 conv, 5 tanh, 4 LP-pool, 7 subtractive
norm, ...], ``l-<i>-weights``/``-bias``, ``l-<i>-filter``, ``l-<i>-kw``/``-kh``, ``patch-mean``,
``patch-std``; the convolutions are cross-correlations, ``flip_filters=False`` in
``descriptor_imported.py``). The official pipeline feeds every network the image standardised
with ``mean_std.h5`` (``mean_x``, ``std_x``: ``read_mean_std``) and the descriptor first undoes
that and applies its own ``(p - patch_mean) / patch_std``; cvdeep feeds the descriptor the
0..255 patch directly, which is the same number (tests/test_lift.py checks it).

Variants. ``lift-cvdeep``: the three networks trained by cvdeep (``cvdeep train lift --stage
descriptor|orientation|detector``), unit-length descriptors. ``lift-cvdeep-picc``: the official
descriptor (loaded from its own file through the weights hub, never copied into cvdeep's file;
its raw, unnormalised output as released) with the detector and orientation estimator cvdeep
trained against it. The official full model (``picc-best/model.h5``) is not obtainable here.

Sources (facts only, no code copied): K. M. Yi, E. Trulls, V. Lepetit, P. Fua, "LIFT: Learned
Invariant Feature Transform", ECCV 2016; cvlab-epfl/LIFT (patented, academic use only), files
``python-code/Utils/networks/{detector/tilde.py, orientation/cvpr16.py,
descriptor/descriptor_imported.py, eccv_combined.py}``, ``Utils/lasagne_tools.py``,
``Utils/ghh_pool.py``, ``Utils/kp_tools.py``, ``compute_detector.py``, ``compute_orientation.py``
and ``models/configs/picc-finetune-nopair.config``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .. import weights as hub
from ..declaration import DescriptorConfig, DetectorConfig, InputConvention, ModelFamily, Variant, param
from ..errors import Error
from ..ops import extract_patches  # float32 under autocast (cvdeep.precision)
from ..ops.patches import NO_ANGLE
from ..weights import TRAINED_LICENSE, WeightSpec
from .base import Extractor, Features, valid_at, window_max
from .multiscale import level_nms_radius, merge_levels
from .patch_descriptor import PatchDescriptor

DESC_PATCH = 64
"""Side in pixels of the orientation and descriptor patches (``nDescInputSize``)."""
DESC_SCALE_FACTOR = 6.0
"""Side of those patches in units of ``KeyPoint.size`` (12 LIFT scales; SIFT's own descriptor support)."""
DETECTOR_PIXELS_PER_SIZE = 4.0
"""Detector pixels per ``KeyPoint.size``: a keypoint of a level that shrank the image by r has size 4 / r."""
FILTER_SIZE = 25
"""The detector's filter side (``nFilterSize``)."""
GHH_SUM, GHH_MAX = 4, 4
"""Generalised hinging hyperplanes: groups summed with alternating signs, maxima within a group."""
SOFTARGMAX_TEMPERATURE = 0.1
"""The detector's soft-argmax (``fCoMStrength`` 10 = 1 / temperature)."""
TRAIN_DETECTOR_PATCH = 49
"""Side of the detector's training patch (odd: its 25 x 25 score map has a centre pixel)."""
TRAIN_MOVEMENT = 7
"""The training score map is the central (2 x 7 + 1)^2 of the patch's 25 x 25 map: the keypoint may move up
to 7 detector pixels (1.75 sizes), so the rotated descriptor patch stays inside the official 24 s context."""
OFFICIAL_LAYERS = (1, 5, 4, 7, 1, 5, 4, 7, 1, 5, 4)
"""Layer types of the CNN3 file: 1 convolution, 5 tanh, 4 L2 pooling, 7 subtractive normalisation."""
OFFICIAL_POOLING = {3: 2, 7: 3, 11: 4}
"""L2-pooling layer index -> window of the CNN3 file."""


def gaussian_kernel(size: int = 5, sigma: float = 1.25) -> torch.Tensor:
    """(size, size) Gaussian summing to 1: the subtractive-normalisation kernel of a network trained
    here (the official file's 5 x 5 kernels are Gaussians of sigma 1.25 px, Torch7's ``image.gaussian(5)``)."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(line, line)
    return (kernel / kernel.sum()).float()


class GHH(nn.Module):
    """Generalised hinging hyperplanes over the channel axis: (B, U x S x M, ...) -> (B, U, ...).

    Channel ``u S M + s M + m`` is member m of group s of output u (Lasagne's FeaturePoolLayer
    order); each output is sum_s (-1)^s max_m x[u, s, m].
    """

    signs: torch.Tensor

    def __init__(self, sums: int = GHH_SUM, maxes: int = GHH_MAX) -> None:
        super().__init__()
        self.sums, self.maxes = int(sums), int(maxes)
        self.register_buffer("signs", 1.0 - 2.0 * (torch.arange(self.sums) % 2).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        rest = x.shape[2:]
        units = channels // (self.sums * self.maxes)
        grouped = x.reshape(batch, units, self.sums, self.maxes, *rest).amax(dim=3)
        signs = self.signs.to(x.dtype).reshape(1, 1, self.sums, *([1] * len(rest)))
        return (grouped * signs).sum(dim=2)


class SubtractiveNormalization(nn.Module):
    """x minus its local mean over space and all channels, the mean border-corrected.

    The stored ``kernel`` (k, k) is normalised to sum 1 at run time; the local mean is the
    zero-padded correlation of the channel average with it, divided by the kernel's mass inside
    the map (Lasagne's ``SubtractiveNormalization2DLayer``, Torch7's ``SpatialSubtractiveNormalization``).
    """

    kernel: torch.Tensor

    def __init__(self, size: int = 5) -> None:
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = (self.kernel / self.kernel.sum()).to(x.dtype)[None, None]
        padding = kernel.shape[-1] // 2
        mean = F.conv2d(x.mean(dim=1, keepdim=True), kernel, padding=padding)
        coverage = F.conv2d(torch.ones_like(x[:1, :1]), kernel, padding=padding)
        return x - mean / coverage


def l2_pool(x: torch.Tensor, window: int) -> torch.Tensor:
    """sqrt of the sum of squares over non-overlapping ``window`` x ``window`` cells (LP pooling, p = 2);
    the 1e-12 under the root only keeps its gradient finite where a cell is all zeros."""
    return (F.avg_pool2d(x.pow(2), window) * window**2).clamp_min(1e-12).sqrt()


class LIFTDescriptorNet(PatchDescriptor):
    """CNN3: (N, 1, 64, 64) patches in 0..255 -> (N, 128); see the module docstring.

    ``normalize``: return unit-length descriptors (cvdeep-trained models) or the raw output
    (the official file, as released).
    """

    patch_size = DESC_PATCH
    descriptor_size = 128
    chunk = 256
    patch_mean: torch.Tensor
    patch_std: torch.Tensor

    def __init__(self, normalize: bool = False, scale_factor: float = DESC_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=255.0)
        self.normalize = bool(normalize)
        self.register_buffer("patch_mean", torch.tensor(128.0))
        self.register_buffer("patch_std", torch.tensor(64.0))
        self.conv1 = nn.Conv2d(1, 32, 7)
        self.norm1 = SubtractiveNormalization(5)
        self.conv2 = nn.Conv2d(32, 64, 6)
        self.norm2 = SubtractiveNormalization(5)
        self.conv3 = nn.Conv2d(64, 128, 5)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = (patches - self.patch_mean) / self.patch_std
        x = self.norm1(l2_pool(torch.tanh(self.conv1(x)), 2))
        x = self.norm2(l2_pool(torch.tanh(self.conv2(x)), 3))
        x = l2_pool(torch.tanh(self.conv3(x)), 4).flatten(1)
        return F.normalize(x, dim=1) if self.normalize else x


class LIFTOrientationNet(nn.Module):
    """(N, 1, 64, 64) standardised upright patches -> (N, 2) numbers (a, b); the angle is atan2(a, b)."""

    def __init__(self, widths: Sequence[int] = (10, 20, 50), hidden: int = 100, dropout: float = 0.3) -> None:
        super().__init__()
        first, second, third = (int(w) for w in widths)
        self.conv0 = nn.Conv2d(1, first, 5)
        self.conv1 = nn.Conv2d(first, second, 5)
        self.conv2 = nn.Conv2d(second, third, 3)
        self.fc3 = nn.Linear(third * 5 * 5, int(hidden) * GHH_SUM * GHH_MAX)
        self.fc4 = nn.Linear(int(hidden), 2 * GHH_SUM * GHH_MAX)
        self.ghh = GHH()
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv0(patches)), 2)  # 64 -> 60 -> 30
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 30 -> 26 -> 13
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)  # 13 -> 11 -> 5
        x = self.dropout(self.ghh(self.fc3(x)))
        return self.ghh(self.fc4(x))


def vector_to_degrees(vectors: torch.Tensor) -> torch.Tensor:
    """(N, 2) orientation outputs (a, b) -> (N,) OpenCV angles in [0, 360): atan2(a, b) in degrees,
    measured clockwise on screen (the sense ``extract_patches`` rotates by)."""
    degrees = torch.rad2deg(torch.atan2(vectors[:, 0], vectors[:, 1]))
    return torch.remainder(degrees, 360.0)


class LIFTDetectorNet(nn.Module):
    """(B, 1, H, W) standardised image -> (B, 1, H - 24, W - 24) scores: 25 x 25 convolution, GHH."""

    def __init__(self, filter_size: int = FILTER_SIZE) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, GHH_SUM * GHH_MAX, int(filter_size))
        self.ghh = GHH()

    @property
    def filter_size(self) -> int:
        return int(self.conv.kernel_size[0])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.ghh(self.conv(image))


@dataclass
class LIFTConfig(DetectorConfig):
    """LIFT's multi-scale detection (see the module docstring)."""

    nfeatures: int = param(1000, "keep at most this many keypoints, the strongest (the official test keeps 1000); 0 "
                           "keeps every local maximum", low=0)
    detection_threshold: float = param(float("-inf"), "minimum detector score (an unbounded GHH response; -inf: "
                                       "none, the official test ranks and keeps nfeatures)")
    nms_radius: int = param(3, "NMS radius in pixels of the pyramid level (4 per KeyPoint.size), within the level "
                            "and against its two neighbours; the official test's is 3", low=0)
    min_size: float = param(4.0, "KeyPoint.size (px) of the finest level; below 4 the image is upsampled (the "
                            "official test starts at 2)", low=0.5, high=1024.0)
    max_size: float = param(32.0, "KeyPoint.size (px) of the coarsest level (the official test ends at 32)",
                            low=0.5, high=4096.0)
    levels_per_octave: int = param(5, "pyramid levels per doubling of the size (the official test has 5)",
                                   low=1, high=16)


def level_sizes(config: LIFTConfig) -> list[float]:
    """KeyPoint sizes (px) of the pyramid levels: min_size x 2^(k / levels_per_octave) up to max_size."""
    if config.max_size < config.min_size:
        raise Error(f"LIFT: max_size ({config.max_size}) is below min_size ({config.min_size})")
    count = int(math.floor(config.levels_per_octave * math.log2(config.max_size / config.min_size) + 1e-9)) + 1
    return [config.min_size * 2.0 ** (k / config.levels_per_octave) for k in range(count)]


def _nearest_pixels(count: int, ratio: float, limit: int, device: torch.device) -> torch.Tensor:
    """Index of the input pixel nearest to each of ``count`` level pixels (``ratio`` input px per level px)."""
    return ((torch.arange(count, device=device) + 0.5) * ratio - 0.5).round().long().clamp(0, limit - 1)


def resize_level(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The image at ``size`` = (h, w): area averaging when shrinking, bilinear when enlarging."""
    if tuple(image.shape[-2:]) == size:
        return image
    shrinking = size[0] < image.shape[-2] and size[1] < image.shape[-1]
    if shrinking:
        return F.interpolate(image, size=size, mode="area")
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


class LIFTNet(Extractor):
    """Detector, orientation estimator and descriptor of LIFT; see the module docstring.

    ``official_descriptor``: the descriptor is the official CNN3 file, loaded through the weights
    hub by ``load_pretrained`` (the checkpoint then holds only the detector, the orientation
    estimator and the input statistics). ``normalize``: unit-length descriptors.
    """

    descriptor_size = 128
    keypoint_size = 2 * DETECTOR_PIXELS_PER_SIZE
    chunk = 256
    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, filter_size: int = FILTER_SIZE, orientation_widths: Sequence[int] = (10, 20, 50),
                 orientation_hidden: int = 100, normalize: bool = True, official_descriptor: bool = False) -> None:
        super().__init__()
        self.detector = LIFTDetectorNet(filter_size)
        self.orientation = LIFTOrientationNet(orientation_widths, orientation_hidden)
        self.descriptor = LIFTDescriptorNet(normalize=normalize)
        self.official_descriptor = bool(official_descriptor)
        # The image standardisation the detector and the orientation estimator see (0..255 units):
        # LIFT's mean_std.h5 role; set by training from its photos.
        self.register_buffer("input_mean", torch.tensor(128.0))
        self.register_buffer("input_std", torch.tensor(64.0))

    # --- the three networks on images and keypoints ------------------------------------------------

    def standardise(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> (255 I - input_mean) / input_std."""
        return (image * 255.0 - self.input_mean) / self.input_std

    def orientation_patches(self, image: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """Upright (N, 1, 64, 64) patches of side 6 x size around (N, 2) keypoints of a (1, 1, H, W) [0, 1] image,
        standardised for the orientation estimator (differentiable with respect to positions and sizes)."""
        patches = extract_patches(image, keypoints, sizes, None, DESC_PATCH, DESC_SCALE_FACTOR)
        return self.standardise(patches)

    def estimate_angles(self, image: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """(N,) OpenCV angles (degrees in [0, 360)) of (N, 2) keypoints with (N,) sizes (px)."""
        rows = []
        for start in range(0, keypoints.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            patches = self.orientation_patches(image, keypoints[part], sizes[part])
            rows.append(vector_to_degrees(self.orientation(patches).float()))
        return torch.cat(rows) if rows else image.new_zeros(0)

    def describe_oriented(self, image: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor,
                          angles: torch.Tensor) -> torch.Tensor:
        """(N, 128) descriptors of the patches rotated by ``angles`` (degrees; -1 = upright)."""
        rows = []
        for start in range(0, keypoints.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            patches = extract_patches(image, keypoints[part], sizes[part], angles[part], DESC_PATCH, DESC_SCALE_FACTOR)
            rows.append(self.descriptor.embed(patches))
        return torch.cat(rows) if rows else image.new_zeros((0, self.descriptor_size))

    def describe_keypoints(self, image: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor | None = None,
                           angles: torch.Tensor | None = None, octaves: torch.Tensor | None = None,
                           config: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Descriptors (N, 128) and the angles used (N,): each keypoint's own angle, or the estimated one
        where it has none (-1, OpenCV's "not computed")."""
        if sizes is None:
            raise Error("LIFT needs keypoint sizes (KeyPoint.size) to cut its patches")
        if angles is None:
            angles = torch.full_like(sizes, NO_ANGLE)
        angles = angles.to(sizes.dtype).clone()
        missing = angles == NO_ANGLE
        if bool(missing.any()):
            angles[missing] = self.estimate_angles(image, keypoints[missing], sizes[missing]).to(angles.dtype)
        return self.describe_oriented(image, keypoints, sizes, angles), angles

    def describe(self, image: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor | None = None,
                 angles: torch.Tensor | None = None, octaves: torch.Tensor | None = None,
                 config: Any = None) -> torch.Tensor:
        """(N, 128) descriptors at (N, 2) keypoints; keypoints without an angle are oriented by the network."""
        return self.describe_keypoints(image, keypoints, sizes, angles)[0]

    # --- detection ----------------------------------------------------------------------------------

    def score_levels(self, image: torch.Tensor, valid: torch.Tensor, config: LIFTConfig) -> list[dict[str, Any]]:
        """Per pyramid level: its score map (1, 1, h, w) (-inf at the padding, outside ``valid`` and
        where the filter does not fit), the keypoint size (px) and the level-to-image pixel ratios."""
        height, width = image.shape[-2:]
        standardised = self.standardise(image)
        half = self.detector.filter_size // 2
        levels = []
        for size in level_sizes(config):
            resize = DETECTOR_PIXELS_PER_SIZE / size
            shape = (max(1, round(height * resize)), max(1, round(width * resize)))
            if min(shape) < self.detector.filter_size:
                continue
            scores = self.detector(resize_level(standardised, shape)).float()
            scores = F.pad(scores, (half, half, half, half), value=float("-inf"))
            ratio_y, ratio_x = height / shape[0], width / shape[1]
            rows = _nearest_pixels(shape[0], ratio_y, height, image.device)
            cols = _nearest_pixels(shape[1], ratio_x, width, image.device)
            level_valid = valid[0, 0][rows][:, cols]
            scores = scores.masked_fill(~level_valid, float("-inf"))
            levels.append({"scores": scores, "size": DETECTOR_PIXELS_PER_SIZE * 0.5 * (ratio_x + ratio_y),
                           "ratio": (ratio_x, ratio_y)})
        return levels

    def detect_levels(self, image: torch.Tensor, valid: torch.Tensor, config: LIFTConfig) -> list[Features]:
        """Keypoints of every level (image pixels), scores, sizes and level indices, before the selection."""
        levels = self.score_levels(image, valid, config)
        radius = level_nms_radius(config)
        result: list[Features] = []
        for index, level in enumerate(levels):
            scores = level["scores"]
            found_cells, found_values = ops.nms(scores, radius, config.detection_threshold)
            cells, values = found_cells[0], found_values[0]
            if config.nms == "hard" and len(cells):
                keep = torch.ones(len(cells), dtype=torch.bool, device=cells.device)
                for other in (index - 1, index + 1):  # the official scale-space NMS: >= the neighbouring levels
                    if 0 <= other < len(levels):
                        neighbour = F.interpolate(levels[other]["scores"], size=scores.shape[-2:], mode="nearest")
                        keep &= values >= window_max(neighbour, radius)[0, 0, cells[:, 1], cells[:, 0]]
                cells, values = cells[keep], values[keep]
            if len(cells) == 0:
                continue
            finite = scores[0, 0].masked_fill(~torch.isfinite(scores[0, 0]), -1e4)
            refined, _ = ops.softargmax(finite, cells.to(finite.dtype), 1, SOFTARGMAX_TEMPERATURE)
            ratio_x, ratio_y = level["ratio"]
            xy = (refined + 0.5) * refined.new_tensor([ratio_x, ratio_y]) - 0.5
            inside = valid_at(valid, xy)
            count = int(inside.sum())
            result.append({
                "keypoints": xy[inside].float(),
                "scores": values[inside].float(),
                "sizes": torch.full((count,), float(level["size"]), device=image.device),
                "octaves": torch.full((count,), index, dtype=torch.int32, device=image.device),
            })
        return result

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: LIFTConfig | None = None) -> Features:
        """Keypoints (N, 2), scores (N,) descending, sizes (px), angles (OpenCV degrees), level indices and
        descriptors (N, 128) of a (1, 1, H, W) image in [0, 1]."""
        config = config or LIFTConfig()
        levels = self.detect_levels(image, valid, config)
        if not levels:
            return {"keypoints": image.new_zeros((0, 2)), "scores": image.new_zeros(0), "sizes": image.new_zeros(0),
                    "angles": image.new_zeros(0), "octaves": torch.zeros(0, dtype=torch.int32, device=image.device),
                    "descriptors": image.new_zeros((0, self.descriptor_size))}
        selected = merge_levels(levels, config)
        angles = self.estimate_angles(image, selected["keypoints"], selected["sizes"])
        selected["angles"] = angles
        selected["descriptors"] = self.describe_oriented(image, selected["keypoints"], selected["sizes"], angles)
        return selected

    # --- weights ------------------------------------------------------------------------------------

    def load_pretrained(self, checkpoint: Any) -> None:
        """A checkpoint saved from this network; with ``official_descriptor`` it holds everything but
        ``descriptor.*``, which comes from the official file (``OFFICIAL_DESCRIPTOR``, via the hub)."""
        if not self.official_descriptor:
            self.load_state_dict(checkpoint, strict=True)
            return
        if any(key.startswith("descriptor.") for key in checkpoint):
            raise KeyError("this model loads its descriptor from the official LIFT file; the checkpoint must not "
                           "hold descriptor.* entries")
        official = hub.load_checkpoint(OFFICIAL_DESCRIPTOR)
        self.load_state_dict({**checkpoint, **{f"descriptor.{k}": v for k, v in official.items()}}, strict=True)


# --- the official files ------------------------------------------------------------------------


def _h5(path: str | os.PathLike) -> Any:
    try:
        import h5py
    except ImportError:
        raise Error("reading LIFT's HDF5 files needs h5py: pip install h5py") from None
    return h5py.File(os.fspath(path), "r")


def read_official_descriptor(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``new-CNN3-picc-iter-56k.h5`` (cvlab-epfl/LIFT ``models/base/``) as a ``LIFTDescriptorNet`` state_dict.

    The layer list must be the CNN3 layout (``OFFICIAL_LAYERS``) with L2 pooling windows 2, 3 and
    4; anything else raises ``cvdeep.Error`` naming what differs.
    """
    with _h5(path) as handle:
        keys = set(handle.keys())
        layers = tuple(int(v) for v in np.asarray(handle["layers"]).ravel()) if "layers" in keys else ()
        if layers != OFFICIAL_LAYERS:
            raise Error(f"{os.fspath(path)}: layer types {layers!r}; expected LIFT's CNN3 {OFFICIAL_LAYERS!r}")
        for index, window in OFFICIAL_POOLING.items():
            found = (float(np.asarray(handle[f"l-{index}-kw"])[0]), float(np.asarray(handle[f"l-{index}-kh"])[0]))
            if found != (window, window):
                raise Error(f"{os.fspath(path)}: L2 pooling {index} is {found}; expected {window} x {window}")
        tensor = lambda name: torch.from_numpy(np.asarray(handle[name], dtype=np.float32).copy())  # noqa: E731
        return {
            "patch_mean": tensor("patch-mean").reshape(()),
            "patch_std": tensor("patch-std").reshape(()),
            "conv1.weight": tensor("l-1-weights"), "conv1.bias": tensor("l-1-bias"),
            "norm1.kernel": tensor("l-4-filter"),
            "conv2.weight": tensor("l-5-weights"), "conv2.bias": tensor("l-5-bias"),
            "norm2.kernel": tensor("l-8-filter"),
            "conv3.weight": tensor("l-9-weights"), "conv3.bias": tensor("l-9-bias"),
        }


def read_mean_std(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """LIFT's ``mean_std.h5`` (``models/picc-best/``): the pipeline's input statistics in 0..255 units, as
    ``{"input_mean", "input_std"}`` (``LIFTNet``'s buffers)."""
    with _h5(path) as handle:
        if not {"mean_x", "std_x"} <= set(handle.keys()):
            raise Error(f"{os.fspath(path)}: no mean_x / std_x; expected LIFT's mean_std.h5")
        mean, std = float(np.asarray(handle["mean_x"])), float(np.asarray(handle["std_x"]))
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise Error(f"{os.fspath(path)}: mean_x {mean}, std_x {std}; expected finite values and std_x > 0")
    return {"input_mean": torch.tensor(mean), "input_std": torch.tensor(std)}


LIFT_LICENSE = "academic use only, patented (cvlab-epfl/LIFT README: contact EPFL for any other use)"

OFFICIAL_DESCRIPTOR = WeightSpec(
    name="liftdesc-picc", filename="lift/new-CNN3-picc-iter-56k.h5",
    sha256="aae2e8008b6bc1e9d792c152c554e7b9cc15c1192b9f7ea3cc5e391b52f74ded", license=LIFT_LICENSE,
    noncommercial=True, reader="cvdeep.nets.lift:read_official_descriptor",
    source="cvlab-epfl/LIFT models/base/new-CNN3-picc-iter-56k.h5",
    urls=("https://github.com/cvlab-epfl/LIFT/raw/master/models/base/new-CNN3-picc-iter-56k.h5",),
)
"""The released LIFT descriptor (the initialisation of the official full model)."""

OFFICIAL_MEAN_STD = WeightSpec(
    name="lift-mean-std", filename="lift/mean_std.h5",
    sha256="fbbee1c45ce7964c3d71fc85e630a25ef622731b322f21e62a9a55d778745d38", license=LIFT_LICENSE,
    noncommercial=True, reader="cvdeep.nets.lift:read_mean_std", source="cvlab-epfl/LIFT models/picc-best/mean_std.h5",
    urls=("https://github.com/cvlab-epfl/LIFT/raw/master/models/picc-best/mean_std.h5",),
)
"""The official pipeline's input statistics (``cvdeep train lift --input-stats official``)."""


def _trained(name: str, description: str, license: str = TRAINED_LICENSE, sha256: str | None = None,
             **network_args: Any) -> Variant:
    return Variant(
        name, description,
        WeightSpec(name=name, filename=f"{name}.pt", license=license, sha256=sha256,
                   source=f"trained by cvdeep: docs/models/{name}.md", packaged=True, noncommercial=True),
        network_args=network_args, trained_by_cvdeep=True,
    )


FAMILIES = (
    ModelFamily(
        name="lift",
        public_name="LIFT",
        kind="detector",
        network=LIFTNet,
        config=LIFTConfig,
        input=InputConvention(channels=1, gray="luminance"),
        paper="Yi, Trulls, Lepetit, Fua: LIFT: Learned Invariant Feature Transform, ECCV 2016",
        summary="LIFT: a learned scale-space detector, orientation estimator and descriptor (64 x 64 patches of "
                "6 x KeyPoint.size, 128-D). KeyPoint.angle in OpenCV's convention, KeyPoint.size in pixels; compute() "
                "orients keypoints given without an angle. The official code and weights are academic-use only "
                "(patented).",
        variants=(
            _trained("lift-cvdeep", "LIFT's three networks trained by cvdeep in the paper's order (descriptor, "
                     "orientation, detector) on homographies of unlabeled photos; unit descriptors",
                     sha256="80b72a1d9995d5a863b480e4f93afcded01aad85f3b446dc2c916b13b09626f6"),
            _trained("lift-cvdeep-picc", "the official LIFT descriptor (new-CNN3-picc-iter-56k.h5, from its own file) "
                     "with a detector and orientation estimator cvdeep trained against it",
                     license=f"detector and orientation: {TRAINED_LICENSE}; descriptor: {LIFT_LICENSE}",
                     sha256="ef391070318ac20adda84d020e8442cfe798b6aef98cfa5a650af6b46321284d",
                     normalize=False, official_descriptor=True),
        ),
    ),
    ModelFamily(
        name="liftdesc",
        public_name="LIFTDesc",
        kind="patch",
        network=LIFTDescriptorNet,
        config=DescriptorConfig,
        input=InputConvention(channels=1),
        paper="Yi, Trulls, Lepetit, Fua: LIFT: Learned Invariant Feature Transform, ECCV 2016",
        summary="LIFT's released descriptor alone (CNN3 on 64 x 64 patches of 6 x KeyPoint.size, 128-D, raw output), "
                "for any detector's keypoints. Official weights: academic use only, patented (a warning is emitted).",
        variants=(Variant("liftdesc-picc", "the official LIFT descriptor trained on Piccadilly "
                          "(new-CNN3-picc-iter-56k)", OFFICIAL_DESCRIPTOR),),
    ),
)
