"""SuperPoint (DeTone et al., CVPRW 2018): a VGG encoder with an interest-point head and a descriptor head.

Two official layouts load unchanged:

- ``"magicleap"``: magicleap/SuperGluePretrainedNetwork's ``SuperPointNet`` (``superpoint_v1.pth``):
  convs named ``conv1a`` .. ``conv4b``, ``convPa``/``convPb`` (detector), ``convDa``/``convDb`` (descriptor).
- ``"rpautrat"``: rpautrat/SuperPoint's PyTorch port of its TF re-training (``superpoint_v6_from_tf.pth``):
  ``backbone.i.j``, ``detector.j``, ``descriptor.j`` blocks of conv -> ReLU -> BatchNorm(eps 1e-3),
  the last conv of each head without ReLU.

Post-processing as published: 65-way softmax per 8x8 cell, dustbin dropped, cells unfolded to
pixels; the official iterative max-pool NMS (radius 4), threshold 0.005, 4-pixel border; descriptors sampled bilinearly
from the L2-normalised dense map and normalised again. The border is measured from the real image edge
(the Feature2D layer removes it from ``valid``), where the official code measures it on the score map
padded to a multiple of 8; a pixel of the border strip therefore no longer suppresses its neighbours.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Renamed, Variant, param
from ..weights import TRAINED_LICENSE, WeightSpec
from .bands import run_banded
from .base import Extractor, Features, iterative_nms, mask_scores, soft_nms_keypoints

_CELL = 8
_HALO = 48  # receptive radius of a 1/8 cell of the heads, in input pixels (~45), rounded up to the cell
_ENCODER_CHANNELS = (64, 64, 128, 128)
_HEAD_CHANNELS = 256


def _vgg_block(in_channels: int, out_channels: int, kernel_size: int, relu: bool = True) -> nn.Sequential:
    """rpautrat's block: conv, ReLU (or nothing), BatchNorm with TF's epsilon."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)),
        ("activation", nn.ReLU(inplace=True) if relu else nn.Identity()),
        ("bn", nn.BatchNorm2d(out_channels, eps=1e-3)),
    ]))


def cell_logits_to_scores(logits: torch.Tensor) -> torch.Tensor:
    """(B, 65, h, w) cell logits -> (B, 1, 8h, 8w) pixel probabilities (softmax, dustbin dropped, cells unfolded)."""
    probabilities = F.softmax(logits, dim=1)[:, :-1]
    return F.pixel_shuffle(probabilities, _CELL)


@dataclass
class SuperPointConfig(DetectorConfig):
    """The published settings: NMS radius 4, threshold 0.005, 4-pixel border, every keypoint
    (``nfeatures=0``; a matching pipeline should cap it, as LightGlue's examples do at 2048)."""

    renamed = {"remove_borders": Renamed("border")}
    detection_threshold: float = param(0.005, "minimum keypoint probability", low=0.0, high=1.0)
    nms_radius: int = param(4, "NMS radius in pixels (the official iterative max-pool NMS)", low=0)
    border: int = param(4, "no keypoint within this many pixels of the image edge", low=0)


class SuperPoint(Extractor):
    """What both layouts share: heads -> dense maps, detection, description. ``_heads`` is the network."""

    descriptor_size = 256
    layout_key = ""  # a key only this layout has
    other_layout = ("", "")  # (a key only the other layout has, the registry model that loads it)

    def _heads(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cell logits (B, 65, H/8, W/8), raw descriptors (B, D, H/8, W/8))."""
        raise NotImplementedError

    def load_pretrained(self, checkpoint: Any) -> None:
        other_key, other_model = self.other_layout
        if self.layout_key not in checkpoint and other_key in checkpoint:
            raise ValueError(f"this checkpoint has the other SuperPoint layout; load it with model={other_model!r}")
        self.load_state_dict(checkpoint, strict=True)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1, H, W) in [0, 1] -> scores (B, 1, H, W) and L2-normalised descriptors (B, D, H/8, W/8).

        The encoder runs over row bands of 8-pixel-aligned rows with a ``_HALO``-pixel halo
        (``cvdeep.nets.bands``): the 64-channel full-resolution maps of its first block (3 GB
        each at 12 MP) exist one band at a time; only the 1/8-resolution heads are stored.
        """
        logits, descriptors = run_banded(lambda rows, lo, hi: self._heads(rows), image, halo=_HALO, align=_CELL,
                                         pixels=self.band_pixels)
        return {"scores": cell_logits_to_scores(logits), "descriptors": F.normalize(descriptors, p=2, dim=1)}

    def detect(self, scores: torch.Tensor, valid: torch.Tensor,
               config: SuperPointConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Published detection on a (1, 1, H, W) score map: NMS, threshold, top-k."""
        config = config or SuperPointConfig()
        masked = mask_scores(scores, valid, 0.0)
        if config.nms == "soft":
            keypoints, values = soft_nms_keypoints(masked, config)
            return keypoints.float(), values
        kept = masked.masked_fill(~iterative_nms(masked, config.nms_radius), 0.0)
        # suppression is done; ops.nms thresholds, sorts and truncates
        found, found_scores = ops.nms(kept, 0, config.detection_threshold, config.nfeatures or -1)
        return found[0].float(), found_scores[0]

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: SuperPointConfig | None = None) -> Features:
        dense = self(image)
        keypoints, scores = self.detect(dense["scores"], valid, config)
        descriptors = ops.sample_descriptors(dense["descriptors"][0], keypoints, stride=_CELL)
        return {"keypoints": keypoints, "scores": scores, "descriptors": descriptors}

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: Any = None,
    ) -> torch.Tensor:
        """Descriptors sampled from the 1/8 map; SuperPoint is single-scale and not oriented."""
        return ops.sample_descriptors(self(image)["descriptors"][0], keypoints, stride=_CELL)


class SuperPointMagicLeap(SuperPoint):
    """The released Magic Leap network (``superpoint_v1.pth``)."""

    layout_key = "conv1a.weight"
    other_layout = ("backbone.0.0.conv.weight", "superpoint-open")

    def __init__(self, descriptor_dim: int = 256):
        super().__init__()
        self.descriptor_size = descriptor_dim
        c1, c2, c3, c4 = _ENCODER_CHANNELS
        self.conv1a, self.conv1b = nn.Conv2d(1, c1, 3, padding=1), nn.Conv2d(c1, c1, 3, padding=1)
        self.conv2a, self.conv2b = nn.Conv2d(c1, c2, 3, padding=1), nn.Conv2d(c2, c2, 3, padding=1)
        self.conv3a, self.conv3b = nn.Conv2d(c2, c3, 3, padding=1), nn.Conv2d(c3, c3, 3, padding=1)
        self.conv4a, self.conv4b = nn.Conv2d(c3, c4, 3, padding=1), nn.Conv2d(c4, c4, 3, padding=1)
        self.convPa, self.convPb = (nn.Conv2d(c4, _HEAD_CHANNELS, 3, padding=1),
                                    nn.Conv2d(_HEAD_CHANNELS, _CELL**2 + 1, 1))
        self.convDa, self.convDb = (nn.Conv2d(c4, _HEAD_CHANNELS, 3, padding=1),
                                    nn.Conv2d(_HEAD_CHANNELS, descriptor_dim, 1))

    def _heads(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image
        stages = ((self.conv1a, self.conv1b), (self.conv2a, self.conv2b),
                  (self.conv3a, self.conv3b), (self.conv4a, self.conv4b))
        for index, (first, second) in enumerate(stages):
            x = F.relu(second(F.relu(first(x))))
            if index < len(stages) - 1:
                x = F.max_pool2d(x, 2, 2)
        return self.convPb(F.relu(self.convPa(x))), self.convDb(F.relu(self.convDa(x)))


class SuperPointOpen(SuperPoint):
    """rpautrat's MIT re-training (``superpoint_v6_from_tf.pth``): BatchNorm after every conv."""

    layout_key = "backbone.0.0.conv.weight"
    other_layout = ("conv1a.weight", "superpoint-v1")

    def __init__(self, descriptor_dim: int = 256):
        super().__init__()
        self.descriptor_size = descriptor_dim
        channels = (1, *_ENCODER_CHANNELS)
        stages = []
        for index in range(1, len(channels)):
            layers: list[nn.Module] = [_vgg_block(channels[index - 1], channels[index], 3),
                                       _vgg_block(channels[index], channels[index], 3)]
            if index < len(channels) - 1:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            stages.append(nn.Sequential(*layers))
        self.backbone = nn.Sequential(*stages)
        self.detector = nn.Sequential(_vgg_block(channels[-1], _HEAD_CHANNELS, 3),
                                      _vgg_block(_HEAD_CHANNELS, _CELL**2 + 1, 1, relu=False))
        self.descriptor = nn.Sequential(_vgg_block(channels[-1], _HEAD_CHANNELS, 3),
                                        _vgg_block(_HEAD_CHANNELS, descriptor_dim, 1, relu=False))

    def _heads(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(image)
        return self.detector(features), self.descriptor(features)


_SUPERPOINT_PAPER = ("DeTone, Malisiewicz, Rabinovich: SuperPoint: Self-Supervised Interest Point Detection and "
                     "Description, CVPRW 2018")

FAMILIES = (
    ModelFamily(
        name="superpoint",
        public_name="SuperPoint",
        kind="detector",
        network=SuperPointMagicLeap,
        config=SuperPointConfig,
        # Magic Leap's demo reads images with cv2.imread(path, 0): luminance rounded to 8 bits
        input=InputConvention(channels=1, stride=_CELL),
        paper=_SUPERPOINT_PAPER,
        summary="SuperPoint: self-supervised interest points and 256-D descriptors from one VGG-style encoder.",
        variants=(
            Variant(
                "superpoint-v1",
                "SuperPoint, Magic Leap's released model (non-commercial)",
                WeightSpec(
                    name="superpoint-v1", filename="superpoint/superpoint_v1.pth", sha256=None,
                    license="Magic Leap SuperGlue/SuperPoint license (academic or non-profit, non-commercial use only)",
                    source="magicleap/SuperGluePretrainedNetwork models/weights/superpoint_v1.pth",
                    urls=("https://github.com/magicleap/SuperGluePretrainedNetwork/raw/master/models/weights/"
                          "superpoint_v1.pth",),
                    noncommercial=True,
                ),
            ),
            Variant(
                "superpoint-open",
                "SuperPoint re-trained by R. Pautrat (TF v6 port, BatchNorm), MIT",
                WeightSpec(
                    name="superpoint-open", filename="superpoint/superpoint_v6_from_tf.pth", sha256=None,
                    license="MIT", source="rpautrat/SuperPoint weights/superpoint_v6_from_tf.pth",
                    urls=("https://github.com/rpautrat/SuperPoint/raw/master/weights/superpoint_v6_from_tf.pth",),
                ),
                network=SuperPointOpen,
                # rpautrat's superpoint_pytorch.py turns RGB into gray as 0.299 R + 0.587 G + 0.114 B in float
                input=InputConvention(channels=1, gray="luminance_float", stride=_CELL),
            ),
            Variant(
                "superpoint-cvdeep",
                "SuperPoint trained by cvdeep with the paper's recipe (Synthetic Shapes, homographic adaptation of "
                "unlabeled photos, joint training); the SuperPointOpen layout (docs/models/superpoint-cvdeep.md)",
                WeightSpec(name="superpoint-cvdeep", filename="superpoint-cvdeep.pt", license=TRAINED_LICENSE,
                           sha256="6e95b948fc6996e099cf29dcd58cf94de71bcde3661a38d36ffa9ca1d27db00b",
                           source="trained by cvdeep: docs/models/superpoint-cvdeep.md", packaged=True,
                           noncommercial=True),
                network=SuperPointOpen,
                trained_by_cvdeep=True,
            ),
        ),
    ),
)
