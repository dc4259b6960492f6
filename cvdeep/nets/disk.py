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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .base import Extractor, Features, mask_scores

_KERNEL = 5
_DOWN = (16, 32, 64, 64, 64)
_UP = (64, 64, 64, 129)  # the last one: 128 descriptor channels + 1 heatmap channel


class GatedConv(nn.Sequential):
    """InstanceNorm -> PReLU -> (dropout slot) -> 5x5 'same' conv; official keys ``1.weight``, ``3.*``."""

    def __init__(self, in_channels: int, out_channels: int, gated: bool = True):
        super().__init__(
            nn.InstanceNorm2d(in_channels) if gated else nn.Identity(),
            nn.PReLU(in_channels) if gated else nn.Identity(),
            nn.Identity(),  # dropout in training, absent at inference
            nn.Conv2d(in_channels, out_channels, _KERNEL, padding=_KERNEL // 2),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the convolution."""
        return self[1](self[0](x))


class UpBlock(nn.Module):
    """Bilinear x2 upsampling, concatenation with the skip connection, GatedConv."""

    def __init__(self, bottom: int, horizontal: int, out_channels: int):
        super().__init__()
        self.conv = GatedConv(bottom + horizontal, out_channels)

    def conv_input(self, bottom: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(bottom, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv.gate(torch.cat([upsampled, horizontal], dim=1))

    def forward(self, bottom: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
        return self.conv[3](self.conv_input(bottom, horizontal))


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

    def head_input(self, image: torch.Tensor) -> torch.Tensor:
        """The gated full-resolution input of the last convolution, (B, 80, H, W)."""
        features = [image]
        for block in self.path_down:
            features.append(block(features[-1]))
        bottom = features[-1]
        skips = features[-2::-1]
        for block, skip in zip(self.path_up[:-1], skips):
            bottom = block(bottom, skip)
        return self.path_up[-1].conv_input(bottom, skips[len(self.path_up) - 1])

    @property
    def head(self) -> nn.Conv2d:
        return self.path_up[-1].conv[3]


class DISK(Extractor):
    """DISK: dense 128-D descriptors and a detection heatmap at full resolution."""

    input_channels = 3
    stride = 16  # four 2x poolings
    descriptor_size = 128
    keypoint_size = float(_KERNEL)  # no scale is estimated; the NMS window of the published setting
    default_config = {"max_keypoints": -1, "detection_threshold": 0.0, "nms_radius": 2}

    def __init__(self) -> None:
        super().__init__()
        self.unet = ThinUnet()

    def load_pretrained(self, checkpoint: Any) -> None:
        """The official file holds ``{"extractor": state_dict}``; a bare state_dict is accepted too."""
        if isinstance(checkpoint, dict) and "extractor" in checkpoint:
            checkpoint = checkpoint["extractor"]
        super().load_pretrained(checkpoint)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB in [0, 1] -> heatmap logits (B, 1, H, W), descriptors (B, 128, H, W), not normalised."""
        head = self.unet.head
        output = F.conv2d(self._head_input(image), head.weight, head.bias, padding=_KERNEL // 2)
        return output[:, self.descriptor_size :], output[:, : self.descriptor_size]

    def _head_input(self, image: torch.Tensor) -> torch.Tensor:
        # oneDNN convolutions run fastest on NHWC; every later tensor inherits the layout
        return self.unet.head_input(image.contiguous(memory_format=torch.channels_last))

    def _heatmap(self, head_input: torch.Tensor) -> torch.Tensor:
        head = self.unet.head
        d = self.descriptor_size
        return F.conv2d(head_input, head.weight[d:], head.bias[d:], padding=_KERNEL // 2)

    def _descriptors_at(self, head_input: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """The descriptor channels of the last convolution at (N, 2) integer (x, y) pixels, not normalised.

        Gathers each keypoint's 5x5x80 input window (zero outside the image, as the
        'same' padding) and multiplies by the weights: N x 2000 x 128 multiply-adds
        instead of H x W x 2000 x 128.
        """
        head = self.unet.head
        d = self.descriptor_size
        _, channels, height, width = head_input.shape
        reach = torch.arange(-(_KERNEL // 2), _KERNEL // 2 + 1, device=pixels.device)
        ys = (pixels[:, 1, None] + reach)[:, :, None].expand(-1, -1, _KERNEL)  # (N, 5, 5): row of tap (ky, kx)
        xs = (pixels[:, 0, None] + reach)[:, None, :].expand(-1, _KERNEL, -1)
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        rows = head_input[0].permute(1, 2, 0)  # (H, W, C), a view when head_input is channels_last
        windows = rows[ys.clamp(0, height - 1), xs.clamp(0, width - 1)]  # (N, 5, 5, C)
        windows = windows * inside[..., None].to(windows.dtype)
        weight = head.weight[:d].permute(0, 2, 3, 1).reshape(d, -1)  # (128, 5*5*C) in the same (ky, kx, c) order
        return torch.addmm(head.bias[:d], windows.reshape(len(pixels), -1), weight.t())

    def extract(self, image: torch.Tensor, valid: torch.Tensor, **config: Any) -> Features:
        config = {**self.default_config, **config}
        head_input = self._head_input(image)
        heatmap = mask_scores(self._heatmap(head_input), valid)
        keypoints, scores = ops.nms(
            heatmap, int(config["nms_radius"]), float(config["detection_threshold"]), int(config["max_keypoints"])
        )
        keypoints, scores = keypoints[0], scores[0]
        descriptors = F.normalize(self._descriptors_at(head_input, keypoints), dim=1)
        return {"keypoints": keypoints.to(image.dtype), "scores": scores, "descriptors": descriptors}

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
        dense = self._descriptors_at(self._head_input(image), unique)[inverse].view(len(xy), 4, -1)
        return F.normalize((weights[..., None] * dense).sum(dim=1), dim=1)
