"""Square patches around keypoints, scaled and rotated as OpenCV's ``KeyPoint`` says.

One ``grid_sample`` call per pyramid level samples every keypoint at once. Patches that
shrink the image by more than 2x read from an area-averaged (2x2 box) pyramid level,
so that a patch of a large keypoint is not an aliased subsampling of the image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import Error

NO_ANGLE = -1.0
"""OpenCV's ``KeyPoint.angle`` for "orientation not computed"; such patches are not rotated."""


def _check_inputs(image: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor,
                  angles: torch.Tensor | None, patch_size: int, scale_factor: float) -> torch.Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1 or not image.is_floating_point():
        raise Error(f"extract_patches: image must be a float (C, H, W) or (1, C, H, W) tensor, got "
                    f"{image.dtype} of shape {tuple(image.shape)}")
    count = keypoints.shape[0] if keypoints.dim() == 2 else -1
    if keypoints.dim() != 2 or keypoints.shape[1] != 2:
        raise Error(f"extract_patches: keypoints must be (N, 2) x, y pixels, got shape {tuple(keypoints.shape)}")
    if sizes.shape != (count,):
        raise Error(f"extract_patches: sizes must be ({count},) like the keypoints, got {tuple(sizes.shape)}")
    if angles is not None and angles.shape != (count,):
        raise Error(f"extract_patches: angles must be None or ({count},), got {tuple(angles.shape)}")
    if count and not bool(torch.isfinite(sizes).all() and (sizes > 0).all()):
        raise Error("extract_patches: every KeyPoint.size must be a finite diameter > 0 pixels; "
                    f"got sizes from {float(sizes.min())} to {float(sizes.max())}")
    if int(patch_size) != patch_size or patch_size < 1:
        raise Error(f"extract_patches: patch_size must be a positive integer, got {patch_size!r}")
    if not (math.isfinite(scale_factor) and scale_factor > 0):
        raise Error(f"extract_patches: scale_factor must be a finite number > 0, got {scale_factor!r}")
    return image


def _area_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Level ``l`` averages 2^l x 2^l blocks; its pixel ``j`` is centred on ``2^l j + (2^l - 1) / 2``."""
    pyramid = [image]
    for _ in range(levels):
        previous = pyramid[-1]
        if min(previous.shape[-2:]) < 2:
            break
        pyramid.append(F.avg_pool2d(previous, 2, ceil_mode=True))
    return pyramid


def extract_patches(
    image: torch.Tensor,
    keypoints: torch.Tensor,
    sizes: torch.Tensor,
    angles: torch.Tensor | None,
    patch_size: int,
    scale_factor: float,
    rotate: bool = True,
) -> torch.Tensor:
    """Patches ``(N, C, patch_size, patch_size)`` centred on ``keypoints`` (N, 2) of ``image``.

    A patch covers a square of side ``scale_factor * size`` input pixels (``size`` is
    ``KeyPoint.size``, a diameter). With ``rotate`` and an angle other than -1, the patch's
    x axis points along ``angle`` degrees measured clockwise on screen from the image x
    axis (OpenCV's convention, y pointing down): patch pixel offset ``(u, v)`` reads image
    offset ``R(angle) (u, v)``, so a SIFT keypoint's dominant gradient lies along the patch
    x axis. Outside the image the border pixels are repeated.
    """
    image = _check_inputs(image, keypoints, sizes, angles, patch_size, scale_factor)
    count, channels = keypoints.shape[0], image.shape[1]
    patches = image.new_empty((count, channels, patch_size, patch_size))
    if count == 0:
        return patches
    dtype = torch.float32 if image.dtype in (torch.float16, torch.bfloat16) else image.dtype
    xy = keypoints.to(dtype)
    step = sizes.to(dtype) * (float(scale_factor) / patch_size)  # input pixels between patch pixels
    if rotate and angles is not None:
        radians = torch.deg2rad(angles.to(dtype))
        oriented = angles != NO_ANGLE
        cos = torch.where(oriented, torch.cos(radians), torch.ones_like(radians))
        sin = torch.where(oriented, torch.sin(radians), torch.zeros_like(radians))
    else:
        cos, sin = torch.ones_like(step), torch.zeros_like(step)

    # Patch pixel (u, v), offsets from the patch centre, as rows (u, v, 1).
    offsets = torch.arange(patch_size, device=xy.device, dtype=dtype) - (patch_size - 1) / 2.0
    v, u = torch.meshgrid(offsets, offsets, indexing="ij")
    uv1 = torch.stack((u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)), dim=1)  # (P*P, 3)

    # Pyramid level per keypoint: the largest 2^l not above the sampling step.
    wanted = torch.floor(torch.log2(step.clamp(min=1.0))).long()
    pyramid = _area_pyramid(image.to(dtype), int(wanted.max()))
    level_of = wanted.clamp(max=len(pyramid) - 1)
    for level, source in enumerate(pyramid):
        chosen = torch.nonzero(level_of == level).squeeze(1)
        if chosen.numel() == 0:
            continue
        # Image pixel x = cx + step (cos u - sin v) is pixel (x - (f - 1) / 2) / f of this level,
        # and grid_sample (align_corners=False) reads pixel x of a width-W map at (2x + 1) / W - 1.
        factor = float(2**level)
        height, width = source.shape[-2:]
        sx, sy = 2.0 / (factor * width), 2.0 / (factor * height)
        c, s, k = (step * cos)[chosen], (step * sin)[chosen], (factor - 1) / 2
        x0, y0 = xy[chosen, 0], xy[chosen, 1]
        affine = torch.stack((
            torch.stack((sx * c, -sx * s, sx * (x0 - k) + 1.0 / width - 1.0), dim=1),
            torch.stack((sy * s, sy * c, sy * (y0 - k) + 1.0 / height - 1.0), dim=1),
        ), dim=1)  # (n, 2, 3): (u, v, 1) -> normalised (x, y)
        # One matrix product for all keypoints: grid[p, i] = affine[i] @ uv1[p], laid out (1, P*P, n, 2).
        grid = torch.mm(uv1, affine.reshape(-1, 3).t()).view(1, -1, chosen.numel(), 2)
        sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        sampled = sampled[0].permute(2, 0, 1).reshape(-1, channels, patch_size, patch_size)  # (n, C, P, P)
        if chosen.numel() == count:
            return sampled.to(patches.dtype)
        patches.index_copy_(0, chosen, sampled.to(patches.dtype))
    return patches
