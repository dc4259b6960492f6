"""TR (Wang et al., CVPR 2023) and D2-Net's training on one light describe-and-detect network.

TR trains a D2-Net-style network (one dense map both describes and detects) with
transformation-predictive, negative-free learning; the paper's "Ours(VGG)" row is D2-Net's VGG16
trained that way, compared with D2-Net's own loss. cvdeep repeats that comparison on a network a
2-core CPU can train: ``TRNet``, trained with TR and with D2-Net's soft-detection-weighted
triplet loss on the same photos, steps and seed (``cvdeep train tr --loss tr|d2``,
``cvdeep.train.tr``). Two files ship: ``d2-cvdeep`` (D2-Net's loss from scratch) and ``tr-cvdeep``
(TR's loss for 2000 steps from ``d2-cvdeep``: from scratch TR reached MMA@3 21.4, from this start
46.9 with D2-Net's detection and 58.0 with the default multi-level detection; docs/RESULTS.md).

Network (gray input, stride 4, 128-D): a VGG-style encoder of 3x3 convolutions, each followed
by BatchNorm and ReLU except the last,

    1 -> 32 -> 32 | max-pool 2 | 32 -> 64 -> 64 | max-pool 2 | 64 -> 128 -> 128 -> 128 (no BN, no ReLU)

on the image standardised as (I - 0.5) / 0.25. It keeps D2-Net's shape (VGG blocks, two 2x2
poolings before the describe-and-detect map, stride 4, the last convolution without ReLU during
training, as D2-Net's conv4_3) at a quarter of D2-Net's channel widths (VGG16: 64, 128, 256, 512)
and 7 instead of 10 convolutions: 0.43 M parameters against 7.6 M, 1.71 GMAC per 192 x 192 crop
against ~20, a 40 px receptive field. Why these widths: as in VGG, each stage doubles the channels
where the resolution halves, so every 3x3 layer after the first costs about the same (0.17-0.34
GMAC at 192 x 192); doubling all widths would make a training step about four times slower (on
the 2-core CPU this project trains on, one step of 4 pairs of 192 x 192 crops already takes
~1.5 s in bf16, ~2.3 s in fp32, with 1 thread), while halving them leaves 16 channels at full
resolution, fewer than the orientations x scales of gradient filters a first VGG block learns. 128
channels keep the descriptor at the size of SIFT, HardNet and R2D2.

Inference detects in one of two ways (``detection``); descriptors are always y sampled bilinearly
at the keypoints and L2-normalised (y: cell p at pixel 4p + 1.5).

- ``"multilevel"`` (the default): ASLFeat's multi-level peakiness detection
  (``cvdeep.nets.peakiness``) on the outputs of the second and fourth convolutions before their
  BatchNorm (strides 1 and 2, dilations 3 and 2, weights 1 and 2): keypoints at full resolution.
  ASLFeat also adds y itself (stride 4, weight 3); that third level was left out because its
  bilinearly resized score has its maxima on the stride-4 cells, which is what the detection is
  meant to avoid: on synthetic warps of large training photos (``load_warped``, 1000 px, never the
  evaluation pairs) tr-cvdeep reached MMA@3 77.7 with the two early levels, 65.4 with all three
  and 59.6 with D2-Net's detection (SIFT 77.1). Measured afterwards on the evaluation pairs: MMA@3
  58.0 against 46.9 (SIFT 50.6), repeatability 58.8 against 37.0 (docs/RESULTS.md). The paper's
  best TR rows are trained on ASLFeat's network, whose detection this is.
- ``"d2"``: D2-Net's (``cvdeep.nets.describe_detect``) on y (stride-4 cells, quadratic fit), or
  with ``upsampled`` on y of the image at twice its size plus y of the image resized to that map,
  D2-Net's multi-scale sum over scales 1 and 2 with detection at the finer one (keypoints on a
  2 px grid, cell q at 2q + 0.5; about five times the time). ``upsampled`` was an earlier attempt
  at the weak localisation of stride-4 keypoints: better on synthetic warps of <= 640 px photos,
  worse on the evaluation pairs (MMA@3 46.9 -> 42.0), so it stays off. The map is passed through
  a ReLU for detection (channel maximum, spatial maximum, edge test, sub-pixel refinement; the
  score of a keypoint is its activation ReLU(y)^k).

Training runs one scale and uses exactly these two maps of y: the soft detection score is
computed on ReLU(y) (``cvdeep.ops.soft_detection_score`` applies the ReLU) and both losses
normalise y itself. (D2-Net's released inference code describes with ReLU(y) while its
training loss normalises y; cvdeep keeps the training form at inference.) A keypoint counts as
inside the image, the user's mask and the border only when the four pixels around its sub-pixel
position are all valid.

Selection: ``nms="hard"`` keeps every detection above ``detection_threshold`` (in the units of the
detection's score: peakiness, or ReLU(y)^k) with the NMS window of ``nms_radius`` cells of the
detection map (pixels for "multilevel"; the papers' 3x3 maxima by default); ``nms="soft"`` runs
greedy Gaussian soft-NMS (``soft_nms_sigma`` px) over the 3x3 detections, as every detector does
(``cvdeep.nets.multiscale.merge_levels``).

Sources (facts only, no code copied): Z. Wang, C. Wu, Y. Yang, Z. Li, "Learning
Transformation-Predictive Representations for Detection and Description of Local Features", CVPR
2023 (the authors' slides and the abstract); M. Dusmanu et al., "D2-Net: A Trainable CNN for Joint
Description and Detection of Local Features", CVPR 2019, and mihaidusmanu/d2-net (Clear BSD);
Z. Luo et al., "ASLFeat: Learning Local Features of Accurate Shape and Localization", CVPR 2020,
and lzx551402/ASLFeat (MIT).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Variant, param
from ..errors import Error
from ..weights import TRAINED_LICENSE, WeightSpec
from . import describe_detect, peakiness
from .bands import add_resized, run_banded
from .base import Extractor, Features, valid_at
from .multiscale import level_nms_radius, merge_levels

STRIDE = 4
POOLINGS = 2  # feature cell p of y sits at image pixel 4p + 1.5
WIDTHS = (32, 64, 128)
"""Channels of the three stages (two, two and three 3x3 convolutions)."""
_MEAN, _STD = 0.5, 0.25  # fixed standardisation of the [0, 1] gray input
_HALO = 32  # input rows a band reads beyond its edges: the encoder's receptive radius is 22 px
_LEVEL_BYTES_PER_PIXEL = 4 * (WIDTHS[0] + WIDTHS[1] // 4)  # float32 levels at strides 1 and 2


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (no bias: BatchNorm follows), BatchNorm, ReLU."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)),
        ("bn", nn.BatchNorm2d(out_channels)),
        ("relu", nn.ReLU(inplace=True)),
    ]))


@dataclass
class TRConfig(DetectorConfig):
    """D2-Net's single-scale extraction: every hard detection, 3x3 maxima."""

    detection_threshold: float = param(0.0, "minimum activation ReLU(y) of a keypoint's channel at its cell", low=0.0)
    nms_radius: int = param(1, "spatial NMS radius in cells of the detection map (4 px, 2 px when upsampled, "
                               "1 px with multilevel detection); 1 is the papers' 3x3 maxima", low=0)
    upsampled: bool = param(False, "detect and describe on y of the image at twice its size plus y of the image "
                                   "(upsampled): D2-Net's multi-scale sum over scales 1 and 2, keypoints on a 2 px "
                                   "grid, about 5x the time; better on small images, worse on large ones "
                                   "(docs/RESULTS.md)")
    detection: str = param("multilevel", "'multilevel': ASLFeat's multi-level peakiness detection on the second and "
                                         "fourth convolutions (full-resolution keypoints, nms_radius in pixels); "
                                         "'d2': D2-Net's hard detection on the descriptor map (stride-4 cells, "
                                         "quadratic fit)", choices=("multilevel", "d2"))


class TRNet(Extractor):
    """The describe-and-detect network of the module docstring; ``forward`` gives the raw map y."""

    keypoint_size = 12.0  # the 3x3-cell detection window, 4 px per cell
    levels_kept_bytes = 256 << 20  # level_scores: the largest pair of levels kept from one encoder pass
    filters: torch.Tensor  # hessian_filters(), a non-persistent buffer

    def __init__(self, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise Error(f"TRNet: widths got {widths!r}; expected three positive channel counts")
        first, second, third = widths
        self.descriptor_size = third
        self.encoder = nn.Sequential(
            _block(1, first), _block(first, first), nn.MaxPool2d(2, 2),
            _block(first, second), _block(second, second), nn.MaxPool2d(2, 2),
            _block(second, third), _block(third, third), nn.Conv2d(third, third, 3, padding=1),
        )
        self.register_buffer("filters", describe_detect.hessian_filters(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) gray in [0, 1], H and W multiples of 4 -> (B, D, H/4, W/4) raw map y (signed).

        In eval mode one image runs over row bands (``cvdeep.nets.bands``): the encoder is local
        there (BatchNorm uses its running statistics), so its full-resolution maps exist one band
        at a time and the result is that of the whole image. Training batches run whole.
        """
        standardised = (image - _MEAN) / _STD
        if self.training or image.shape[0] != 1:
            return self.encoder(standardised)
        return run_banded(lambda rows, lo, hi: (self.encoder(rows),), standardised, halo=_HALO, align=STRIDE,
                          pixels=self.band_pixels)[0]

    def _encode_levels(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """y of standardised input rows and the outputs of the second and fourth convolutions
        before their BatchNorm (strides 1 and 2): the levels of the multi-level detection."""
        captured = []
        x = rows
        for index, layer in enumerate(self.encoder):
            if index in (1, 4) and isinstance(layer, nn.Sequential):  # the 2nd and 4th _block
                convolution, normalise_and_rectify = layer[0], layer[1:]  # conv | BatchNorm, ReLU
                x = convolution(x)
                captured.append(x)
                x = normalise_and_rectify(x)
            else:
                x = layer(x)
        return x, captured[0], captured[1]

    def level_scores(self, image: torch.Tensor) -> tuple[torch.Tensor, list[peakiness.Level]]:
        """(1, 1, H, W) image -> y (1, D, H/4, W/4) and the peakiness scores of the second and fourth
        convolutions (``cvdeep.nets.peakiness``: dilations 3 and 2, weights 1 and 2, as ASLFeat).

        The encoder runs over row bands. When the two levels fit in ``levels_kept_bytes`` (192
        bytes a pixel: up to about 1.4 MP by default) they are kept whole from one pass; a larger
        image runs twice over the bands, never storing a full-resolution level: the first pass
        keeps y and each level's row maxima, the second recomputes the levels band by band and
        scores them with the whole level's maximum (the band's halo of 32 input rows covers the
        levels' receptive fields plus the dilated neighbourhoods), so the scores are the same.
        """
        standardised = (image - _MEAN) / _STD
        height, width = image.shape[-2:]
        settings = ((3, 1, 1.0), (2, 2, 2.0))  # (dilation, stride, weight) of the two levels
        if _LEVEL_BYTES_PER_PIXEL * height * width <= self.levels_kept_bytes:
            y, *features = run_banded(lambda rows, lo, hi: self._encode_levels(rows), standardised, halo=_HALO,
                                      align=STRIDE, pixels=self.band_pixels)
            scores = [peakiness.level_score(level, dilation) for level, (dilation, _, _) in zip(features, settings)]
        else:
            def maxima(rows: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
                y, *features = self._encode_levels(rows)
                return (y, *(level.amax(dim=(1, 3), keepdim=True) for level in features))

            y, *row_maxima = run_banded(maxima, standardised, halo=_HALO, align=STRIDE, pixels=self.band_pixels)
            tops = [rows.amax() for rows in row_maxima]

            def score(rows: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
                _, *features = self._encode_levels(rows)
                return tuple(map_ for level, top, (dilation, _, _) in zip(features, tops, settings)
                             for map_ in peakiness.level_score(level, dilation, top))

            flat = run_banded(score, standardised, halo=_HALO, align=STRIDE, pixels=self.band_pixels)
            scores = [(flat[0], flat[1]), (flat[2], flat[3])]
        return y, [peakiness.Level(masked, raw, stride, weight)
                   for (masked, raw), (_, stride, weight) in zip(scores, settings)]

    def dense_map(self, image: torch.Tensor, config: TRConfig) -> tuple[torch.Tensor, int]:
        """The signed (1, D, h, w) map extraction detects and describes on, and its stride in input
        pixels (cell p at pixel stride * p + (stride - 1) / 2): y of the image (stride 4), or with
        ``config.upsampled`` y of the image at twice its size (bilinear) plus y of the image resized
        to it (stride 2: cell q at 2q + 0.5 either way, so the two maps align exactly)."""
        raw = self(image)
        if not config.upsampled:
            return raw, STRIDE
        doubled = self(F.interpolate(image, scale_factor=2.0, mode="bilinear", align_corners=False))
        return add_resized(doubled, raw, self.band_pixels, align_corners=False), STRIDE // 2

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: TRConfig | None = None) -> Features:
        """Keypoints (N, 2) in input pixels, scores (N,) descending, unit descriptors (N, D); see the
        module docstring."""
        config = config or TRConfig()
        if config.detection == "multilevel":
            return self._extract_multilevel(image, valid, config)
        raw, stride = self.dense_map(image, config)
        activation = F.relu(raw)
        detected, steps = describe_detect.hard_detection(activation, self.filters.to(raw.dtype),
                                                         level_nms_radius(config))
        cells, scores = describe_detect.refine(activation, detected, steps)
        keypoints = cells * stride + (stride - 1) / 2  # dense_map's pixel convention
        inside = valid_at(valid, keypoints)
        level = {"keypoints": keypoints[inside], "scores": scores[inside]}
        selected = merge_levels([level], config)
        selected["descriptors"] = ops.sample_descriptors(raw[0], selected["keypoints"], stride=float(stride))
        return selected

    def _extract_multilevel(self, image: torch.Tensor, valid: torch.Tensor, config: TRConfig) -> Features:
        """``extract`` with ASLFeat's multi-level detection on the second and fourth convolutions
        (strides 1 and 2, dilations 3 and 2, weights 1 and 2, as ASLFeat; its third level, y at
        stride 4 with weight 3, is left out: see the module docstring) and descriptors sampled from y."""
        if config.upsampled:
            raise Error("TR: upsampled=True applies to detection='d2' (D2-Net's detection on the doubled image); "
                        "detection='multilevel' (the default) detects at full resolution already: pass "
                        "detection='d2' with upsampled=True, or leave upsampled off")
        raw, levels = self.level_scores(image)
        height, width = image.shape[-2:]
        keypoints, scores = peakiness.detect(levels, (height, width), valid, level_nms_radius(config))
        inside = valid_at(valid, keypoints)
        selected = merge_levels([{"keypoints": keypoints[inside], "scores": scores[inside]}], config)
        selected["descriptors"] = ops.sample_descriptors(raw[0], selected["keypoints"], stride=float(STRIDE))
        return selected

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: TRConfig | None = None,
    ) -> torch.Tensor:
        """(N, D) unit descriptors at (N, 2) image keypoints: ``dense_map`` sampled bilinearly, as
        ``extract`` describes (sizes, angles and octaves are unused)."""
        raw, stride = self.dense_map(image, config or TRConfig())
        return ops.sample_descriptors(raw[0], keypoints, stride=float(stride))


def _trained(name: str, description: str, sha256: str) -> Variant:
    return Variant(
        name,
        description,
        WeightSpec(name=name, filename=f"{name}.pt", sha256=sha256, license=TRAINED_LICENSE,
                   source=f"trained by cvdeep: docs/models/{name}.md", packaged=True, noncommercial=True),
        trained_by_cvdeep=True,
    )


FAMILIES = (
    ModelFamily(
        name="tr",
        public_name="TR",
        kind="detector",
        network=TRNet,
        config=TRConfig,
        input=InputConvention(channels=1, gray="luminance", stride=STRIDE),
        paper="Wang, Wu, Yang, Li: Learning Transformation-Predictive Representations for Detection and Description "
              "of Local Features, CVPR 2023 (on D2-Net's describe-and-detect scheme: Dusmanu et al., CVPR 2019)",
        summary="TR vs D2-Net training: one light VGG-style describe-and-detect network (gray, 128-D descriptors "
                "at stride 4, ASLFeat's multi-level detection or D2-Net's), trained by cvdeep with each loss.",
        variants=(
            _trained("tr-cvdeep", "TRNet trained by cvdeep with TR's transformation-predictive loss (EMA target, "
                                  "predictor, soft labels, curriculum; no negatives) on unlabeled photos, starting "
                                  "from d2-cvdeep",
                     "282540994dd4b09fa887acdae3713cc75e189491411325cfbf7d26d7acf27b40"),
            _trained("d2-cvdeep", "TRNet trained by cvdeep from scratch with D2-Net's soft-detection-weighted "
                                  "triplet loss on unlabeled photos",
                     "2b9158462f9cb44cdb3d10fe1eaad092fb7dbcb31bb0959464978f23d6accb72"),
        ),
    ),
)
