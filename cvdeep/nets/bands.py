"""Row bands: the full-resolution stages of a dense network, run over horizontal bands of rows.

The peak memory of a dense network grows with the image: at 12 MP a single 64-channel float
map takes 3 GB. The stages that work at full resolution are local (convolutions, pooling,
pointwise layers; nothing that takes a statistic of the whole map), so they can run over
bands of rows, each read with a halo of extra rows on both sides at least as tall as the
stage's receptive radius, and cropped back to the band. Every output row then sees exactly
the input rows it sees on the whole image, and oneDNN computes a convolution row the same
way whatever the band height: the results are the same, bit for bit (tests compare small
bands against one band). A band spans the full width, so columns never need a halo.

``map_bands`` yields the cropped outputs band by band (for stages whose output is consumed
at once, such as a score map's contribution); ``run_banded`` assembles them into whole maps.
``resize_rows`` is a bilinear resize that computes only some output rows, for stages that
add an upsampled coarse map to a full-resolution band.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from ..ops.reference import Positions

BAND_PIXELS = 1 << 19
"""Input pixels per band (without its halo) unless a network sets its own: 512 K pixels, about
128 rows of a 4000-pixel-wide photo; each float channel of a band then takes 2 MB."""


@functools.cache
def _libc_function(name: str) -> Any:
    """A glibc function by name, or None elsewhere (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, or nothing elsewhere."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: None if trim(0) else None


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None elsewhere."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
LARGE_IMAGE_PIXELS = 4 << 20
"""Images above this many pixels extract memory-first (``extraction_allocation``) unless a network
sets its own ``large_image_pixels``."""
_LARGE_IMAGE_THRESHOLD = 1 << 20
_STEADY_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, where the dynamic threshold settles
_KEPT_HEAP_BYTES = 1 << 30  # below this much free memory at its top, glibc keeps the heap as it is
_trim_bands = False  # whether release_freed_memory trims: only while a large image is extracted


@contextmanager
def extraction_allocation(pixels: int, large: int = LARGE_IMAGE_PIXELS) -> Iterator[None]:
    """How glibc serves the buffers of one extraction of an image of ``pixels`` pixels.

    Up to ``large`` pixels (4 MP unless the network sets its ``large_image_pixels``; most calls,
    repeated frame after frame) the heap keeps what it has: buffers up to
    32 MB come from it (the mmap threshold fixed where the dynamic one settles) and freed pages are
    not returned (trim threshold 1 GB, no trim after bands), so the next call reuses them. Returning
    them made every call fault its pages in again: ALIKED-N16 at 640 x 480 spent 358 ms instead of
    257 (one thread). The steady RSS is then the peak of the largest such call.

    Above, glibc serves every buffer above 1 MB by mmap and each band's freed pages go back
    (``release_freed_memory``): the dynamic threshold otherwise rises to 32 MB, and the freed band
    buffers of 1-32 MB stay on a fragmented heap: DISK on a 12 MP photo peaked at 4.3 GB with
    OpenMP's default pool and at 2.0 GB with this (measured; ``MALLOC_ARENA_MAX=1`` did not help).
    Afterwards the threshold is back at 32 MB. Nothing happens outside glibc.
    """
    global _trim_bands
    mallopt = _mallopt()
    if mallopt is None:
        yield
        return
    memory_first = pixels > large
    mallopt(_M_MMAP_THRESHOLD, _LARGE_IMAGE_THRESHOLD if memory_first else _STEADY_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _KEPT_HEAP_BYTES)
    _trim_bands = memory_first
    try:
        yield
    finally:
        _trim_bands = False
        if memory_first:
            mallopt(_M_MMAP_THRESHOLD, _STEADY_THRESHOLD)


_trim = _malloc_trim()


def release_freed_memory() -> None:
    """While a large image is extracted (``extraction_allocation``), return the heap pages freed by
    the last band to the system (glibc ``malloc_trim``, about a millisecond); otherwise nothing.

    Band temporaries of a few MB to a few tens of MB come from the heap (glibc serves them below
    its 32 MB mmap threshold), and a heap fragmented by bands of slightly different sizes keeps
    its freed pages resident: DISK's 12 MP peak varied between 2.3 and 4.5 GB from run to run.
    Trimming after each band keeps the peak at what the bands really hold."""
    if _trim_bands:
        _trim()


Stage = Callable[[torch.Tensor, int, int], Sequence[torch.Tensor]]
"""``stage(rows, lo, hi)``: outputs of a network stage on input rows ``[lo, hi)`` (halo included)."""


def band_height(width: int, pixels: int, align: int = 1) -> int:
    """Rows per band: about ``pixels`` pixels of a ``width``-pixel-wide map, a multiple of
    ``align``, at least ``align``."""
    rows = max(1, pixels // max(width, 1))
    return max(align, rows - rows % align)


RowSource = Callable[[int, int], torch.Tensor]
"""``source(lo, hi)``: rows ``[lo, hi)`` of a map that is computed on demand rather than stored."""


def row_source(stored: torch.Tensor) -> RowSource:
    """The ``RowSource`` of a stored (..., H, W) map: views of its rows."""
    return lambda lo, hi: stored[..., lo:hi, :]


def no_rows(lo: int, hi: int) -> Any:
    """The source of a stage that reads its own input (the stage ignores its first argument): None,
    typed ``Any`` so it stands for a ``RowSource``; ``size`` then gives the map's size."""
    return None


def map_bands(
    stage: Stage, source: torch.Tensor | RowSource, *, halo: int, align: int = 1, pixels: int = BAND_PIXELS,
    size: tuple[int, int] | None = None, strides: Sequence[int] | None = None,
) -> Iterator[tuple[int, int, list[torch.Tensor]]]:
    """Run ``stage`` over the row bands of ``source``; yields ``(top, bottom, outputs)``.

    ``source`` is a (1, C, H, W) map or a ``RowSource`` of a map of ``size`` (H, W). Each band
    ``[top, bottom)`` is read as rows ``[lo, hi)`` = the band widened by ``halo`` rows on both
    sides (clipped to the map), and every output of the stage is cropped back to the band. An
    output may be ``s`` times smaller than its input rows (a stage ending in pooling): ``s`` is
    read from its height, or given in ``strides`` (then the last band keeps whatever rows its
    output has, as floor-pooling the whole map would). ``halo`` and the band height are
    multiples of ``align`` (give the largest pooling factor); without ``strides`` so must ``H`` be.
    """
    if isinstance(source, torch.Tensor):
        height, width = source.shape[-2:]
        read = row_source(source)
    elif size is None:
        raise ValueError("a RowSource needs the size of its map")
    else:
        (height, width), read = size, source
    if halo % align or (strides is None and height % align):
        raise ValueError(f"halo {halo} and height {height} must be multiples of the alignment {align}")
    rows = band_height(width, pixels, align)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        lo, hi = max(0, top - halo), min(height, bottom + halo)
        outputs = []
        for index, output in enumerate(stage(read(lo, hi), lo, hi)):
            if strides is None:
                stride = (hi - lo) // output.shape[-2]
                if stride * output.shape[-2] != hi - lo:
                    raise ValueError(
                        f"a stage output of {output.shape[-2]} rows does not divide its {hi - lo} input rows"
                    )
            else:
                stride = strides[index]
            end = None if bottom == height and strides is not None else (bottom - lo) // stride
            outputs.append(output[..., (top - lo) // stride : end, :])
        yield top, bottom, outputs
        del outputs
        release_freed_memory()


def _empty_like_layout(band: torch.Tensor, height: int) -> torch.Tensor:
    """An uninitialised map of ``height`` rows with the band's channels, dtype, device and layout."""
    shape = (*band.shape[:-2], height, band.shape[-1])
    channels_last = band.dim() == 4 and band.shape[1] > 1 and band.is_contiguous(memory_format=torch.channels_last) \
        and not band.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=band.dtype, device=band.device, memory_format=layout)


def run_banded(stage: Stage, source: torch.Tensor | RowSource, *, halo: int, align: int = 1, pixels: int = BAND_PIXELS,
               size: tuple[int, int] | None = None, strides: Sequence[int] | None = None) -> list[torch.Tensor]:
    """The stage's outputs on the whole map, computed band by band (see ``map_bands``) and
    written into maps allocated once (``H // stride`` rows), in the layout the stage returns;
    a map that fits one band is the stage's own output (no copy)."""
    height = source.shape[-2] if isinstance(source, torch.Tensor) else size[0]  # type: ignore[index]
    maps: list[torch.Tensor] = []
    found: list[int] = []
    for top, bottom, outputs in map_bands(stage, source, halo=halo, align=align, pixels=pixels, size=size,
                                          strides=strides):
        if top == 0 and bottom == height:
            return list(outputs)
        if not maps:
            for index, output in enumerate(outputs):
                stride = strides[index] if strides is not None else (bottom - top) // output.shape[-2]
                found.append(stride)
                maps.append(_empty_like_layout(output, height // stride))
        for full, output, stride in zip(maps, outputs, found):
            full[..., top // stride : top // stride + output.shape[-2], :] = output
    return maps


def source_positions(
    size_in: int, size_out: int, start: int, stop: int, align_corners: bool, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where output positions ``[start, stop)`` of a bilinear resize from ``size_in`` to ``size_out``
    read: (lower index, upper index, weight of the upper one), as ``F.interpolate`` computes them.

    ``align_corners=True``: source ``p (in - 1) / (out - 1)``; ``False``: ``(p + 0.5) in / out - 0.5``
    clamped at 0. The upper index is clamped to the last position.
    """
    out = torch.arange(start, stop, device=device, dtype=torch.float32)
    if align_corners:
        scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        source = out * scale
    else:
        source = ((out + 0.5) * (size_in / size_out) - 0.5).clamp_(min=0.0)
    lower = source.long().clamp_(max=size_in - 1)
    upper = (lower + 1).clamp_(max=size_in - 1)
    return lower, upper, source - lower


def resize_rows(x: torch.Tensor, size: tuple[int, int], start: int, stop: int, align_corners: bool,
                rows_of: tuple[int, int] | None = None) -> torch.Tensor:
    """Rows ``[start, stop)`` of the bilinear resize of a map (1, C, h, w) to ``size`` (H, W).

    Interpolates along rows (reading only the input rows these output rows need), then along
    columns with ``F.interpolate`` (rows unchanged); a band of a large upsampled map costs a
    band's memory. It agrees with ``F.interpolate`` of the whole map up to float rounding (the
    order of the two passes), and with itself bit for bit whatever the bands. ``x`` is the
    whole map, or only its rows from ``rows_of[0]`` on when ``rows_of = (first row, h)`` (they
    must include the rows ``source_positions`` reads).
    """
    height, width = size
    first, source_height = rows_of if rows_of is not None else (0, x.shape[-2])
    top, bottom, weight = source_positions(source_height, height, start, stop, align_corners, x.device)
    rows = torch.lerp(x.index_select(-2, top - first), x.index_select(-2, bottom - first),
                      weight.to(x.dtype).view(-1, 1))
    return F.interpolate(rows, size=(stop - start, width), mode="bilinear", align_corners=align_corners)


def add_resized(target: torch.Tensor, source: torch.Tensor, pixels: int, align_corners: bool) -> torch.Tensor:
    """``target`` (1, C, H, W) += the bilinear resize of ``source`` (1, C, h, w) to (H, W), in place and
    band by band (about ``pixels`` pixels of the target at a time), so the resized map never exists
    whole: D2-Net's multi-scale accumulation. Returns ``target``."""
    size = (target.shape[-2], target.shape[-1])
    rows = band_height(size[1], pixels)
    for top in range(0, size[0], rows):
        bottom = min(size[0], top + rows)
        target[..., top:bottom, :] += resize_rows(source, size, top, bottom, align_corners=align_corners)
    return target


def resize_positions(size_in: tuple[int, int], size_out: tuple[int, int], align_corners: bool,
                     device: torch.device | None = None) -> tuple[Positions, Positions]:
    """``source_positions`` of every output row and every output column of a resize (for
    ``cvdeep.ops.sample_levels``)."""
    rows = source_positions(size_in[0], size_out[0], 0, size_out[0], align_corners, device)
    columns = source_positions(size_in[1], size_out[1], 0, size_out[1], align_corners, device)
    return rows, columns
