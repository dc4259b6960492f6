"""The networks and their published post-processing as traceable graphs for ONNX export.

Each graph reuses a loaded cvdeep network's weights and recomputes what its ``extract`` (or
``describe``, or ``LightGlue.forward``) computes, in operations every ONNX runtime has: the
compiled cvdeep kernels (NMS, soft-argmax, deformable convolution) and the CPU shortcuts of
the eager code (row tables, ``fold``) become max-pooling, ``TopK`` and gathers
(``cvdeep.export.graph_ops``). The detection parameters (``nfeatures``, ``detection_threshold``,
``nms_radius``, ``border``) are constants of the exported file.

Detector graphs take ``image`` (1, C, H, W) float32 in [0, 1] (RGB for 3 channels; the caller
converts colour as the family's ``InputConvention`` says, exactly as ``cvdeep.Feature2D`` does)
and, when built with ``mask_input=True``, ``mask`` (1, 1, H, W) uint8 (non-zero where keypoints
may be). They pad the image themselves (bottom/right, replicated) to the family's stride, so
any H, W is accepted. Their outputs take the layout of the OpenCV 5 class that reads them
(``OUTPUT_LAYOUTS``; see docs/ONNX.md).

``precision="fp16"`` runs the convolutional network in float16; coordinates, detection,
sampling and the deformable convolutions' sampling stay float32.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..declaration import DetectorConfig
from ..errors import Error
from . import graph_ops as G

if TYPE_CHECKING:
    from ..nets.aliked import ALIKED, DeformableConv2d
    from ..nets.disk import DISK, UpBlock
    from ..nets.lightglue import LightGlue, SelfBlock, TransformerLayer
    from ..nets.superpoint import SuperPoint
    from ..nets.xfeat import BasicLayer, XFeat

OUTPUT_LAYOUTS: dict[str, tuple[str, ...]] = {
    # cv2.ALIKED: keypoints (N, 2) float32 in [-1, 1] (x = 2 u / W - 1 for pixel u), descriptors (N, D), scores (N,)
    "opencv-aliked": ("keypoints", "descriptors", "scores"),
    # cv2.DISK: keypoints (1, N, 2) int64 pixels, scores (1, N), descriptors (1, N, D)
    "opencv-disk": ("keypoints", "scores", "descriptors"),
    # OpenCV 5.x's SuperPoint extractor (features module): keypoints (N, 2) float32 pixels, descriptors (N, D),
    # scores (N,)
    "pixels": ("keypoints", "descriptors", "scores"),
    # describe graphs: image + keypoints (N, 2) float32 pixels -> descriptors (N, D)
    "describe": ("descriptors",),
    # cv2.LightGlueMatcher: matches0 (K, 2) int64 (query, train), mscores0 (K,) float32
    "opencv-lightglue": ("matches0", "mscores0"),
}


def _selu(x: torch.Tensor) -> torch.Tensor:
    return F.selu(x)


class DetectorGraph(nn.Module):
    """image (+ mask) -> (keypoints (N, 2) pixels, scores (N,), descriptors (N, D)) in a layout.

    Subclasses implement ``detect_padded(image, valid, height, width)`` and
    ``describe_padded(image, keypoints)`` on the padded image.
    """

    stride: int = 1
    minimum: int = 1  # smallest padded side

    def __init__(self, network: nn.Module, config: DetectorConfig, layout: str, half: bool, channels: int) -> None:
        super().__init__()
        if layout not in ("opencv-aliked", "opencv-disk", "pixels"):
            raise ValueError(f"unknown detector layout {layout!r}")
        if config.nms != "hard":
            raise Error(f"ONNX export: nms={config.nms!r} is not exportable (its greedy loop has no fixed depth); "
                        "use nms='hard', the published detection")
        self.net = network
        self.config = config
        self.layout = layout
        self.fp16 = half  # not ``half``: that name is nn.Module's method
        self.channels = channels

    def pad(self, image: torch.Tensor) -> torch.Tensor:
        """Replicate the last row/column so both sides are multiples of ``stride`` and >= ``minimum``."""
        if self.stride == 1 and self.minimum == 1:
            return image
        height, width = image.shape[-2], image.shape[-1]
        padded_height = G.larger(G.round_up(height, self.stride), self.minimum)
        padded_width = G.larger(G.round_up(width, self.stride), self.minimum)
        # replication as a gather of clamped row and column indices: a Pad with computed pads would hide
        # the channel count from the exporter, which instance normalisation needs
        # torch.arange takes the 0-d tensor of a traced size; its stub only lists numbers
        rows = G.clip(torch.arange(padded_height, device=image.device), 0, height - 1)  # type: ignore[arg-type]
        columns = G.clip(torch.arange(padded_width, device=image.device), 0, width - 1)  # type: ignore[arg-type]
        return image.index_select(2, rows).index_select(3, columns)

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        height, width = image.shape[-2], image.shape[-1]
        padded = self.pad(image)
        padded_height, padded_width = padded.shape[-2], padded.shape[-1]
        valid = G.valid_region(height, width, padded_height, padded_width, self.config.border, image.device)
        if mask is not None:
            user = F.pad(mask[0, 0], [0, padded_width - width, 0, padded_height - height], value=0)
            valid = valid & (user > 0)
        if self.fp16:
            padded = padded.half()
        keypoints, scores, descriptors = self.detect_padded(padded, valid, height, width)
        return self.format(keypoints, scores, descriptors.float(), height, width)

    def detect_padded(self, image: torch.Tensor, valid: torch.Tensor, height: G.Size, width: G.Size
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe_padded(self, image: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def format(self, keypoints: torch.Tensor, scores: torch.Tensor, descriptors: torch.Tensor,
               height: G.Size, width: G.Size) -> tuple[torch.Tensor, ...]:
        """Outputs in ``OUTPUT_LAYOUTS[self.layout]`` order."""
        if self.layout == "opencv-aliked":
            size = torch.stack([G.as_long(width), G.as_long(height)]).float()
            return keypoints * (2.0 / size) - 1.0, descriptors, scores
        if self.layout == "opencv-disk":
            return torch.round(keypoints).long()[None], scores[None], descriptors[None]
        return keypoints, descriptors, scores


class DescribeGraph(nn.Module):
    """image (1, C, H, W) + keypoints (N, 2) float32 pixels -> descriptors (N, D): ``Extractor.describe``."""

    def __init__(self, detector: DetectorGraph) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        padded = self.detector.pad(image)
        if self.detector.fp16:
            padded = padded.half()
        return self.detector.describe_padded(padded, keypoints.float()).float()


# --- ALIKED ------------------------------------------------------------------------------------


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` in eval mode, computed in float32."""
    # ALIKED's batch norms are affine and keep running statistics
    assert bn.weight is not None and bn.bias is not None
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
    bias = bn.bias.float() - bn.running_mean.float() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.float() * scale
    return (conv.weight.float() * scale.reshape(-1, 1, 1, 1)).detach(), bias.detach()


class ALIKEDGraph(DetectorGraph):
    """ALIKED: the backbone (deformable blocks as gathers), DKD detection and the SDDH head."""

    net: ALIKED

    def __init__(self, network: ALIKED, config: DetectorConfig, layout: str, half: bool, channels: int = 3) -> None:
        super().__init__(network, config, layout, half, channels)
        dtype = torch.float16 if half else torch.float32
        self.blocks: list[list[nn.Conv2d | None]] = []  # per block and position: the offset convolution or None
        for index, block in enumerate((network.block1, network.block2, network.block3, network.block4), 1):
            deformable = index >= 3
            convs: list[nn.Conv2d | None] = []
            for position, (conv, bn) in enumerate(((block.conv1, block.bn1), (block.conv2, block.bn2)), 1):
                # ALIKED builds blocks 3 and 4 with DeformableConv2d, blocks 1 and 2 with nn.Conv2d
                deformable_conv = cast("DeformableConv2d", conv) if deformable else None
                plain = deformable_conv.regular_conv if deformable_conv is not None else cast(nn.Conv2d, conv)
                weight, bias = _fold(plain, bn)
                # deformable convolutions run in float32 (sampling positions need it)
                self.register_buffer(f"b{index}c{position}_w", weight if deformable else weight.to(dtype),
                                     persistent=False)
                self.register_buffer(f"b{index}c{position}_b", bias if deformable else bias.to(dtype),
                                     persistent=False)
                convs.append(deformable_conv.offset_conv if deformable_conv is not None else None)
            self.blocks.append(convs)
        self.dtype_ = dtype

    def _conv(self, x: torch.Tensor, block: int, position: int) -> torch.Tensor:
        weight = getattr(self, f"b{block}c{position}_w")
        bias = getattr(self, f"b{block}c{position}_b")
        offset_conv = self.blocks[block - 1][position - 1]
        if offset_conv is None:
            return F.conv2d(x, weight, bias, padding=1)
        limit = G.as_long(G.larger(x.shape[-2], x.shape[-1])).to(x.dtype) / 4.0
        offset = offset_conv(x)
        offset = torch.minimum(torch.maximum(offset, -limit), limit)
        return G.deform_conv3x3(x, offset, weight, bias)

    def _block(self, x: torch.Tensor, index: int) -> torch.Tensor:
        out = _selu(self._conv(x, index, 1))
        out = self._conv(out, index, 2)
        if index == 1:
            return _selu(out)
        block = (self.net.block2, self.net.block3, self.net.block4)[index - 2]  # the residual blocks
        return _selu(out + F.conv2d(x, block.downsample.weight, block.downsample.bias))

    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(table (dim, H*W): the unnormalised concatenation of the four levels at full resolution,
        scores (1, 1, H, W)) of an unpadded (1, 3, H, W) image: ``ALIKED.forward`` unnormalised, built whole."""
        net = self.net
        height, width = image.shape[-2], image.shape[-1]
        pad_h, pad_w = (32 - height % 32) % 32, (32 - width % 32) % 32
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(image, [left, pad_w - left, top, pad_h - top], mode="replicate")
        x1 = self._block(x, 1)
        x2 = self._block(F.avg_pool2d(x1, 2), 2)
        x3 = self._block(F.avg_pool2d(x2, 4), 3)
        x4 = self._block(F.avg_pool2d(x3, 4), 4)
        convs = (net.conv1, net.conv2, net.conv3, net.conv4)
        levels = [_selu(F.conv2d(level, conv.weight)) for conv, level in zip(convs, (x1, x2, x3, x4))]
        full_size = (x1.shape[-2], x1.shape[-1])
        head = net.score_head
        first = cast(nn.Conv2d, head[0]).weight.split(levels[0].shape[1], dim=1)
        score = F.conv2d(levels[0], first[0])
        for level, weight in zip(levels[1:], first[1:]):
            score = score + F.interpolate(F.conv2d(level, weight), size=full_size, mode="bilinear", align_corners=True)
        for layer in cast(nn.Sequential, head[1:]):  # a slice of a Sequential is one
            score = _selu(score) if isinstance(layer, nn.SELU) else layer(score)
        scores = torch.sigmoid(score.float())[:, :, top : top + height, left : left + width]
        full = [levels[0]] + [F.interpolate(level, size=full_size, mode="bilinear", align_corners=True)
                              for level in levels[1:]]
        table = torch.cat(full, dim=1)[0, :, top : top + height, left : left + width]
        return table.reshape(table.shape[0], -1).float(), scores

    def detect_padded(self, image: torch.Tensor, valid: torch.Tensor, height: G.Size, width: G.Size
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        table, scores = self.dense(image)
        keypoints, values = self._dkd(scores, valid)
        return keypoints, values, self._sddh(table, keypoints, height, width)

    def describe_padded(self, image: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        table, _ = self.dense(image)
        return self._sddh(table, keypoints, image.shape[-2], image.shape[-1])

    def _dkd(self, scores: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ALIKED.detect`` (hard NMS): candidates, soft-argmax refinement, bilinear scores, best first."""
        config = self.config
        radius = config.nms_radius
        height, width = scores.shape[-2], scores.shape[-1]
        ys, xs = G.pixel_grid(height, width, scores.device)
        inside = valid & (ys >= radius) & (ys < height - radius) & (xs >= radius) & (xs < width - radius)
        keep = G.iterative_nms(scores, radius)[0, 0] & inside
        s = scores[0, 0]
        validf = valid.to(s.dtype)
        mean = (s * validf).sum() / validf.sum()
        threshold, limit = config.detection_threshold, config.nfeatures
        if threshold > 0:
            above = keep & (s > threshold)
            found = above.sum() > 0  # none above the threshold: the maxima above the mean valid score
            chosen = (above & found) | (keep & (s > mean) & ~found)
        elif limit > 0:
            chosen = keep
        else:
            chosen = keep & (s > mean)
        _, index = G.top_candidates(s.reshape(-1), chosen.reshape(-1), limit)
        base_x, base_y = index % width, index // width
        # soft-argmax (temperature 0.1) over the NMS window of the valid-masked scores
        steps = torch.arange(-radius, radius + 1, device=s.device)
        dy = steps.reshape(-1, 1).expand(-1, 2 * radius + 1).reshape(1, -1)
        dx = steps.reshape(1, -1).expand(2 * radius + 1, -1).reshape(1, -1)
        win_x, win_y = base_x[:, None] + dx, base_y[:, None] + dy
        in_image = (win_x >= 0) & (win_x < width) & (win_y >= 0) & (win_y < height)
        refine = torch.where(valid, s, torch.full_like(s, float("-inf"))).reshape(-1)
        patch = refine.index_select(0, (G.clip(win_y, 0, height - 1) * width + G.clip(win_x, 0, width - 1)).reshape(-1))
        patch = patch.reshape(win_x.shape)
        patch = torch.where(in_image, patch, torch.full_like(patch, float("-inf")))
        peak = patch.max(dim=1, keepdim=True).values
        weights = torch.softmax((patch - peak) / 0.1, dim=1)
        kx = base_x.to(s.dtype) + (weights * dx.to(s.dtype)).sum(1)
        ky = base_y.to(s.dtype) + (weights * dy.to(s.dtype)).sum(1)
        values = G.bilinear(s.reshape(1, -1), height, width, ky, kx)[0]
        values, order = G.sort_descending(values)
        return torch.stack([kx, ky], dim=1).index_select(0, order), values

    def _sddh(self, table: torch.Tensor, keypoints: torch.Tensor, height: G.Size, width: G.Size) -> torch.Tensor:
        """SDDH descriptors (N, D) at keypoints (N, 2) pixels; ``table`` is (dim, H*W) unnormalised."""
        head = self.net.desc_head
        k, samples = head.kernel_size, head.samples
        channels = table.shape[0]
        first_layer, _, second_layer = head.offset_conv  # Conv2d, SELU, Conv2d
        first, second = cast(nn.Conv2d, first_layer), cast(nn.Conv2d, second_layer)
        assert first.bias is not None and second.bias is not None  # both built with bias=True
        # the KxK patch whose features predict the offsets (corner as the original: trunc(trunc(x) - K/2 + 1))
        corner = (torch.floor(keypoints) - k / 2 + 1).long()
        cx = G.clip(corner[:, 0], 0, width - 1 - k)
        cy = G.clip(corner[:, 1], 0, height - 1 - k)
        steps = torch.arange(k, device=keypoints.device)
        rows = (cy[:, None, None] + steps[None, :, None]) * width + cx[:, None, None] + steps[None, None, :]
        patch = F.normalize(G.gather_columns(table, rows).t(), dim=1)  # (N*K*K, C)
        patch = patch.reshape(-1, k * k * channels)
        first_weight = first.weight.float().permute(0, 2, 3, 1).reshape(first.out_channels, -1)
        hidden = _selu(patch @ first_weight.t() + first.bias.float())
        offsets = hidden @ second.weight.float().reshape(second.out_channels, -1).t() + second.bias.float()
        limit = G.as_long(G.larger(height, width)).float() / 4.0
        offsets = torch.minimum(torch.maximum(offsets, -limit), limit).reshape(-1, 2, samples)
        xs = (keypoints[:, :1] + offsets[:, 0]).reshape(-1)
        ys = (keypoints[:, 1:] + offsets[:, 1]).reshape(-1)
        # bilinear samples of the L2-normalised map: each corner normalised, then weighted
        y0, x0 = torch.floor(ys), torch.floor(xs)
        wy1, wx1 = ys - y0, xs - x0
        y0, x0 = y0.long(), x0.long()
        sampled = None
        for dy, wy in ((0, 1 - wy1), (1, wy1)):
            for dx, wx in ((0, 1 - wx1), (1, wx1)):
                y, x = y0 + dy, x0 + dx
                inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
                index = G.clip(y, 0, height - 1) * width + G.clip(x, 0, width - 1)
                corner_rows = F.normalize(G.gather_columns(table, index).t(), dim=1)
                term = corner_rows * (wy * wx * inside.float())[:, None]
                sampled = term if sampled is None else sampled + term
        assert sampled is not None  # the loops above ran
        sampled = _selu(sampled @ head.sf_conv.weight.float().reshape(channels, channels).t())
        agg = head.agg_weights.float()
        descriptors = sampled.reshape(-1, samples * channels) @ agg.reshape(-1, agg.shape[-1])
        return F.normalize(descriptors, dim=1)


# --- DISK --------------------------------------------------------------------------------------


class DISKGraph(DetectorGraph):
    """DISK: the U-Net, the heatmap channel densely, the descriptor channels at the keypoints only."""

    stride = 16
    minimum = 32
    net: DISK

    def _gated(self, image: torch.Tensor) -> torch.Tensor:
        """The gated full-resolution input (1, 80, H, W) of the last convolution."""
        unet = self.net.unet
        features = [image]
        for block in unet.path_down:
            features.append(block(features[-1]))
        bottom = features[-1]
        skips = features[-2::-1]
        for block, skip in zip(unet.path_up[:-1], skips):
            bottom = block(bottom, skip)
        last = cast("UpBlock", unet.path_up[-1])
        upsampled = F.interpolate(bottom, scale_factor=2.0, mode="bilinear", align_corners=False)
        gated = torch.cat([upsampled, skips[len(unet.path_up) - 1]], dim=1)
        return last.conv[1](last.conv[0](gated)).float()

    def _descriptors(self, table: torch.Tensor, height: G.Size, width: G.Size, xs: torch.Tensor,
                     ys: torch.Tensor) -> torch.Tensor:
        """Descriptor channels of the last 5x5 convolution at integer pixels (N,), not normalised."""
        head = self.net.unet.head
        d = self.net.descriptor_size
        assert head.bias is not None  # DISK's last convolution has one
        windows = G.window_rows(table, height, width, xs, ys, head.kernel_size[0])
        weight = head.weight[:d].float().permute(0, 2, 3, 1).reshape(d, -1)
        return windows @ weight.t() + head.bias[:d].float()

    def detect_padded(self, image: torch.Tensor, valid: torch.Tensor, height: G.Size, width: G.Size
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        config = self.config
        head = self.net.unet.head
        d = self.net.descriptor_size
        assert head.bias is not None  # DISK's last convolution has one
        gated = self._gated(image)
        padded_height, padded_width = gated.shape[-2], gated.shape[-1]
        heatmap = F.conv2d(gated, head.weight[d : d + 1].float(), head.bias[d : d + 1].float(),
                           padding=head.padding)
        heatmap = torch.where(valid[None, None], heatmap, torch.full_like(heatmap, float("-inf")))
        keep = (heatmap == G.window_max(heatmap, config.nms_radius)) & (heatmap > config.detection_threshold)
        values, index = G.top_candidates(heatmap.reshape(-1), keep.reshape(-1), config.nfeatures)
        xs, ys = index % padded_width, index // padded_width
        table = gated.reshape(gated.shape[1], -1)
        descriptors = F.normalize(self._descriptors(table, padded_height, padded_width, xs, ys), dim=1)
        return torch.stack([xs, ys], dim=1).float(), values, descriptors

    def describe_padded(self, image: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """``DISK.describe``: the descriptor map interpolated bilinearly between the four
        surrounding pixels (positions clamped to the image), then L2-normalised."""
        gated = self._gated(image)
        height, width = gated.shape[-2], gated.shape[-1]
        table = gated.reshape(gated.shape[1], -1)
        x = G.clip(keypoints[:, 0], 0, width - 1)
        y = G.clip(keypoints[:, 1], 0, height - 1)
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = x - x0, y - y0
        x0, y0 = x0.long(), y0.long()
        total = None
        corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
        for dx, dy, weight in corners:
            xs, ys = G.clip(x0 + dx, 0, width - 1), G.clip(y0 + dy, 0, height - 1)
            term = self._descriptors(table, height, width, xs, ys) * weight[:, None]
            total = term if total is None else total + term
        assert total is not None  # the loop above ran
        return F.normalize(total, dim=1)


# --- XFeat -------------------------------------------------------------------------------------


class XFeatGraph(DetectorGraph):
    """XFeat: the network as is (folded batch norms), the authors' detection and bicubic descriptors."""

    stride = 32
    net: XFeat
    unshuffle: torch.Tensor  # buffer

    @staticmethod
    def _layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One module of the network: a folded BasicLayer or a plain convolution, as ``Conv`` (+ ``Relu``)."""
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
        if isinstance(layer, nn.Sigmoid):
            return torch.sigmoid(x)
        if hasattr(layer, "folded_weight"):
            basic = cast("BasicLayer", layer)  # the only layer with folded weights
            conv = cast(nn.Conv2d, basic.layer[0])
            weight = cast(torch.Tensor, basic.folded_weight)  # set: an XFeat in eval mode is folded
            return F.relu(F.conv2d(x, weight, basic.folded_bias, conv.stride, conv.padding))
        return layer(x)

    def __init__(self, network: XFeat, config: DetectorConfig, layout: str, half: bool, channels: int = 1) -> None:
        super().__init__(network, config, layout, half, channels)
        # pixel_unshuffle(x, 8) of one channel as an 8x8 stride-8 convolution with one-hot kernels: channel
        # dy * 8 + dx of cell (i, j) is pixel (8i + dy, 8j + dx). The exporter writes pixel_unshuffle as a
        # 6-D transpose, which OpenCV's DNN computes wrongly; a convolution runs everywhere, exactly.
        self.register_buffer("unshuffle", torch.eye(64).reshape(64, 1, 8, 8), persistent=False)

    def _run(self, layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = self._layer(layer, x)
        return x

    def _network(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``XFeat.forward`` with every 1x1 layer as a convolution (the eager code's NHWC matrix
        products become transposed ``MatMul``s that OpenCV's DNN mis-reads)."""
        net = self.net
        x = net.norm(image)
        x1 = self._run(net.block1, x)
        x2 = self._run(net.block2, x1 + self._run(net.skip1, x))
        x3 = self._run(net.block3, x2)
        x4 = self._run(net.block4, x3)
        x5 = self._run(net.block5, x4)
        size = (x3.shape[-2], x3.shape[-1])
        fused = x3 + F.interpolate(x4, size=size, mode="bilinear", align_corners=False)
        fused = fused + F.interpolate(x5, size=size, mode="bilinear", align_corners=False)
        descriptors = self._run(net.block_fusion, fused)
        reliability = self._run(net.heatmap_head, descriptors)
        logits = self._run(net.keypoint_head, F.conv2d(x, self.unshuffle.to(x.dtype), stride=8))
        return descriptors, logits, reliability

    @staticmethod
    def _authors_position(p: torch.Tensor, size: G.Size, map_size: G.Size) -> torch.Tensor:
        """Pixel ``p`` of an image of ``size`` on a map of ``map_size``, as the authors' grid
        ``2 p / (size - 1) - 1`` read with ``align_corners=False`` places it."""
        return p * (G.as_long(map_size).float() / (G.as_long(size).float() - 1.0)) - 0.5

    def _sample(self, maps: torch.Tensor, keypoints: torch.Tensor, height: G.Size, width: G.Size,
                mode: str) -> torch.Tensor:
        map_height, map_width = maps.shape[-2], maps.shape[-1]
        table = maps[0].reshape(maps.shape[1], -1)
        xs = self._authors_position(keypoints[:, 0], width, map_width)
        ys = self._authors_position(keypoints[:, 1], height, map_height)
        sample = G.bicubic if mode == "bicubic" else G.bilinear
        return sample(table, map_height, map_width, ys, xs).t()

    def _describe_maps(self, descriptors: torch.Tensor, keypoints: torch.Tensor, height: G.Size,
                       width: G.Size) -> torch.Tensor:
        dense = F.normalize(descriptors.float(), dim=1)
        return F.normalize(self._sample(dense, keypoints, height, width, "bicubic"), dim=1)

    def detect_padded(self, image: torch.Tensor, valid: torch.Tensor, height: G.Size, width: G.Size
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        config = self.config
        padded_height, padded_width = image.shape[-2], image.shape[-1]
        descriptors, logits, reliability = self._network(image)
        heatmap = F.pixel_shuffle(torch.softmax(logits.float(), dim=1)[:, :-1], 8)
        heatmap = torch.where(valid[None, None], heatmap, torch.full_like(heatmap, float("-inf")))
        keep = (heatmap == G.window_max(heatmap, config.nms_radius)) & (heatmap > config.detection_threshold)
        heat, index = G.top_candidates(heatmap.reshape(-1), keep.reshape(-1), 0)
        xs, ys = index % padded_width, index // padded_width
        # the authors' nearest read of the heatmap falls off the map on the last row and column
        heat = torch.where((xs == padded_width - 1) | (ys == padded_height - 1), torch.zeros_like(heat), heat)
        keypoints = torch.stack([xs, ys], dim=1).float()
        scores = heat * self._sample(reliability.float(), keypoints, padded_height, padded_width, "bilinear")[:, 0]
        scores, order = G.top_candidates(scores, scores > 0, config.nfeatures)
        keypoints = keypoints.index_select(0, order)
        return keypoints, scores, self._describe_maps(descriptors, keypoints, padded_height, padded_width)

    def describe_padded(self, image: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        descriptors = self._network(image)[0]
        return self._describe_maps(descriptors, keypoints, image.shape[-2], image.shape[-1])


# --- SuperPoint --------------------------------------------------------------------------------


class SuperPointGraph(DetectorGraph):
    """SuperPoint: the network, the official NMS, threshold, top-k and bilinear descriptors."""

    stride = 8
    net: SuperPoint

    def _dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, descriptors = self.net._heads(image)
        scores = F.pixel_shuffle(torch.softmax(logits.float(), dim=1)[:, :-1], 8)
        return scores, F.normalize(descriptors.float(), dim=1)

    @staticmethod
    def _sample(descriptors: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """``cvdeep.ops.sample_descriptors`` (cell centres, border padding) -> (N, D), normalised."""
        map_height, map_width = descriptors.shape[-2], descriptors.shape[-1]
        cells = (keypoints + 0.5) / 8.0 - 0.5
        xs = G.clip(cells[:, 0], 0, map_width - 1)
        ys = G.clip(cells[:, 1], 0, map_height - 1)
        table = descriptors[0].reshape(descriptors.shape[1], -1)
        return F.normalize(G.bilinear(table, map_height, map_width, ys, xs).t(), dim=1)

    def detect_padded(self, image: torch.Tensor, valid: torch.Tensor, height: G.Size, width: G.Size
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        config = self.config
        scores, descriptors = self._dense(image)
        padded_width = scores.shape[-1]
        masked = torch.where(valid[None, None], scores, torch.zeros_like(scores))
        kept = torch.where(G.iterative_nms(masked, config.nms_radius), masked, torch.zeros_like(masked))
        values, index = G.top_candidates(kept.reshape(-1), kept.reshape(-1) > config.detection_threshold,
                                         config.nfeatures)
        keypoints = torch.stack([index % padded_width, index // padded_width], dim=1).float()
        return keypoints, values, self._sample(descriptors, keypoints)

    def describe_padded(self, image: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        return self._sample(self._dense(image)[1], keypoints)


DETECTOR_GRAPHS: dict[str, tuple[type[DetectorGraph], str]] = {
    # family -> (graph, output layout)
    "aliked": (ALIKEDGraph, "opencv-aliked"),
    "disk": (DISKGraph, "opencv-disk"),
    "xfeat": (XFeatGraph, "pixels"),
    "superpoint": (SuperPointGraph, "pixels"),
}


# --- LightGlue ---------------------------------------------------------------------------------


class LightGlueGraph(nn.Module):
    """LightGlue at full depth and width (no early exit, no pruning: a static graph).

    Inputs: ``kpts0`` (1, N, 2), ``kpts1`` (1, M, 2) float32 keypoints already normalised as
    LightGlue does (centred on the image, divided by half its longer side: ``(u - w/2) /
    (max(w, h)/2)``), ``desc0`` (1, N, D), ``desc1`` (1, M, D). Outputs: ``matches0`` (K, 2)
    int64 mutual best pairs whose probability exceeds ``filter_threshold``, ``mscores0`` (K,)
    their probabilities, in query order.
    """

    def __init__(self, network: LightGlue, filter_threshold: float, half: bool) -> None:
        super().__init__()
        self.net = network
        self.filter_threshold = float(filter_threshold)
        self.fp16 = half  # not ``half``: that name is nn.Module's method

    def forward(self, kpts0: torch.Tensor, kpts1: torch.Tensor, desc0: torch.Tensor, desc1: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        dtype = torch.float16 if self.fp16 else torch.float32
        x0, x1 = net.input_proj(desc0.to(dtype)), net.input_proj(desc1.to(dtype))
        cos0, sin0 = net.posenc(kpts0.to(dtype))
        cos1, sin1 = net.posenc(kpts1.to(dtype))
        for layer in net.transformers:
            block = cast("TransformerLayer", layer)
            x0 = self._self_attention(block.self_attn, x0, cos0, sin0)
            x1 = self._self_attention(block.self_attn, x1, cos1, sin1)
            x0, x1 = block.cross_attn(x0, x1)
        assignment = net.log_assignment[len(net.transformers) - 1](x0.float(), x1.float())[0]
        best0_values, best0 = assignment.max(dim=1)
        best1 = assignment.max(dim=0).indices
        rows = torch.arange(assignment.shape[0], device=assignment.device)
        probability = torch.exp(best0_values)
        keep = (best1.index_select(0, best0) == rows) & (probability > self.filter_threshold)
        kept = torch.nonzero(keep)[:, 0]
        matches = torch.stack([kept, best0.index_select(0, kept)], dim=1)
        return matches, probability.index_select(0, kept)

    @staticmethod
    def _self_attention(block: SelfBlock, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``SelfBlock.forward`` with the attention written out (softmax(q k^T / sqrt(d)) v)."""
        from ..nets.lightglue import rotate

        qkv = block.Wqkv(x).unflatten(-1, (block.num_heads, -1, 3)).permute(4, 0, 2, 1, 3)
        q, k, v = rotate(qkv[0], cos, sin), rotate(qkv[1], cos, sin), qkv[2]
        scale = q.shape[-1] ** -0.5
        context = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1) @ v
        message = block.out_proj(context.transpose(1, 2).flatten(-2))
        return x + block.ffn(torch.cat((x, message), -1))


def describe_config(config: Any) -> dict[str, Any]:
    """The detection parameters baked into a graph, for the file's metadata."""
    return dataclasses.asdict(config)
