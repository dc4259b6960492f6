"""Random homographies as SuperPoint's homographic adaptation draws them, and the warps built on them.

Every training method of cvdeep that learns from synthetic views (SuperPoint's homographic
adaptation, the patch pairs of the descriptors, later LIFT / LF-Net style detector training)
shares these functions, so they keep one convention:

- **Pixels.** Points are ``(x, y)`` in OpenCV's convention: the centre of pixel ``(row i,
  column j)`` is ``x = j, y = i``. The first and last pixel centres of a ``W``-wide image
  are ``x = 0`` and ``x = W - 1``.
- **Direction.** A homography ``H`` (3x3 float64) maps a pixel of the *source* image to the
  *warped* image: ``warped(H @ p) = source(p)``, exactly what ``cv2.warpPerspective(src, H,
  dsize)`` computes.
- **Sign.** A homography is used with its sign: a point whose homogeneous ``w`` is <= 0 lies
  behind the horizon and has no image (NaN from ``warp_points``, invalid in ``valid_mask``,
  0 in ``warp_image_tensor``). Sampled homographies, and those of ``cv2.findHomography`` or
  the HPatches / Oxford files, have ``w > 0`` over the image; pass ``-H`` if yours has not.
- **Sizes** of images are given as ``(width, height)`` (OpenCV's ``dsize`` order) in
  ``out_size`` / ``source_size`` arguments; ``sample_homography`` takes ``height, width``.

How a homography is drawn (``sample_warp``). As in SuperPoint, the warped image shows a
quadrilateral *region* of the source, mapped onto the whole warped image. The region
starts as a centred rectangle whose sides are ``patch_ratio`` times the image's, and is
then changed, in this order:

1. *perspective*: the x of the left corners moves by ``d_left``, the x of the right corners
   by ``d_right``, and the left edge shortens by ``2 d_y`` while the right edge lengthens by
   ``2 d_y`` (a turn about a vertical axis). Each ``d`` is a normal draw of standard deviation
   ``perspective / 2`` truncated at two deviations (so ``|d| <= perspective``), in units of
   the image width (x) or height (y);
2. *scale* about the region's centroid, log-uniform in ``scale_range`` (a region scale
   ``s`` makes the content of the warped image ``1 / (patch_ratio * s)`` times larger);
3. *in-plane rotation* about the centroid, uniform in ``[-max_angle_deg, max_angle_deg]``
   (positive = clockwise on screen, OpenCV's angle sense; the content of the warped image
   appears turned by the opposite angle);
4. *translation*, uniform over the room left inside the image.

With ``allow_artifacts=False`` the region stays inside the source image (pixel centres
``[0, W-1] x [0, H-1]``), so every warped pixel sees the source: the perspective amplitude
is clipped to the margin ``(1 - patch_ratio) / 2``, the scale is drawn from
``[scale_range[0], min(scale_range[1], largest scale that fits)]``, and the angle is drawn
among ``angle_candidates`` uniform candidates that fit (0 when none does). With
``allow_artifacts=True`` none of these limits apply and the translation may exceed the
room by ``translation_overflow`` (fraction of the image side); ``valid_mask`` then tells
where the warped image sees the source.

Differences from SuperPoint's ``sample_homography`` (same parameter meanings): the scale is
log-uniform in a range instead of a truncated normal around 1, the rotation comes before the
translation (so a translation to the border does not forbid rotations), rotation and
perspective work in pixels (no shear on non-square images), and the returned matrix maps
source to warped (SuperPoint's maps warped to source).

Sources read for facts (no code copied): rpautrat/SuperPoint (MIT licence),
``superpoint/models/homographies.py`` (``sample_homography``: the region construction,
parameter meanings and defaults) and ``superpoint/configs/superpoint_coco.yaml`` (the
``warped_pair`` values); DeTone, Malisiewicz and Rabinovich, "SuperPoint: Self-Supervised
Interest Point Detection and Description", CVPR Workshops 2018.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Error

NO_ANGLE = -1.0
"""OpenCV's ``KeyPoint.angle`` for "orientation not computed"; it is kept as is by ``warp_keypoints``."""


@dataclass(frozen=True)
class HomographyConfig:
    """Ranges of the random homographies (see the module docstring for the construction).

    Defaults are the ``warped_pair`` values of SuperPoint's COCO training configuration
    (patch ratio 0.85, perspective 0.2, scale amplitude 0.2, max angle 1.57 rad = 90 deg),
    except ``allow_artifacts`` which is False here so that the default warp never leaves
    the image. With these defaults and no artifacts the effective perspective is at most the
    0.075 margin and rotations are small (a 0.85 region has little room to turn); training
    code that tolerates borders (the patch pairs) sets ``allow_artifacts=True``.
    """

    patch_ratio: float = 0.85
    """Side of the initial region as a fraction of the image side (SuperPoint's ``patch_ratio``)."""
    perspective: float = 0.2
    """Largest corner displacement of the perspective step, fraction of the image side
    (SuperPoint's ``perspective_amplitude_x`` = ``_y``); 0 disables it. Must be below
    ``patch_ratio / 2`` so the region cannot fold."""
    scale_range: tuple[float, float] = (0.8, 1.2)
    """Range of the region scale (log-uniform); ``(1, 1)`` disables scaling. Without artifacts
    the lower bound must be <= 1 (scale 1 always fits)."""
    max_angle_deg: float = 90.0
    """Largest in-plane rotation in degrees, 0..180; 0 disables rotation."""
    translation: bool = True
    """Translate the region uniformly within the room left."""
    allow_artifacts: bool = False
    """Let the region leave the image (the warped image then has empty borders)."""
    translation_overflow: float = 0.0
    """With artifacts: extra translation room, fraction of the image side."""
    angle_candidates: int = 25
    """Without artifacts: how many random angles are tried before falling back to 0."""

    def __post_init__(self) -> None:
        scale_range: tuple[float, ...] = self.scale_range
        try:
            scale_range = tuple(float(v) for v in scale_range)
        except (TypeError, ValueError):
            scale_range = ()
        if len(scale_range) != 2 or not all(math.isfinite(v) and v > 0 for v in scale_range) \
                or scale_range[0] > scale_range[1]:
            raise Error(f"HomographyConfig.scale_range: got {self.scale_range!r}; expected (low, high) "
                        "with 0 < low <= high")
        object.__setattr__(self, "scale_range", scale_range)
        limit = "a number in (0, 1]" if not self.allow_artifacts else "a number > 0"
        if (not _finite(self.patch_ratio) or self.patch_ratio <= 0
                or (not self.allow_artifacts and self.patch_ratio > 1)):
            raise Error(f"HomographyConfig.patch_ratio: got {self.patch_ratio!r}; expected {limit}")
        if not _finite(self.perspective) or not 0 <= self.perspective < self.patch_ratio / 2:
            raise Error(f"HomographyConfig.perspective: got {self.perspective!r}; expected 0 <= perspective < "
                        f"patch_ratio / 2 = {self.patch_ratio / 2:g} (larger values fold the region)")
        if not self.allow_artifacts and scale_range[0] > 1:
            raise Error(f"HomographyConfig.scale_range: got {self.scale_range!r} with allow_artifacts=False; the "
                        "low bound must be <= 1 (only scales <= 1 surely fit inside the image), or allow artifacts")
        if not _finite(self.max_angle_deg) or not 0 <= self.max_angle_deg <= 180:
            raise Error(f"HomographyConfig.max_angle_deg: got {self.max_angle_deg!r}; expected degrees in [0, 180]")
        if not _finite(self.translation_overflow) or self.translation_overflow < 0:
            raise Error(f"HomographyConfig.translation_overflow: got {self.translation_overflow!r}; expected >= 0")
        if self.translation_overflow > 0 and not self.allow_artifacts:
            raise Error("HomographyConfig.translation_overflow: a translation overflow needs allow_artifacts=True")
        if not isinstance(self.angle_candidates, int) or self.angle_candidates < 1:
            raise Error(f"HomographyConfig.angle_candidates: got {self.angle_candidates!r}; expected an integer >= 1")


@dataclass(frozen=True)
class SampledWarp:
    """A drawn homography with the parameters it was built from (for checks and logging)."""

    H: np.ndarray
    """(3, 3) float64, source pixel -> warped pixel."""
    region: np.ndarray
    """(4, 2) float64: the source pixels that land on the warped image's corner pixel centres,
    in the order top-left, top-right, bottom-right, bottom-left of the warped image."""
    perspective: np.ndarray
    """(3,) the perspective draws ``d_left, d_right, d_y`` as fractions of the image side."""
    scale: float
    """Region scale about its centroid."""
    angle_deg: float
    """Region rotation in degrees, clockwise on screen."""
    shift: np.ndarray
    """(2,) region translation in source pixels."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value))


def _check_dims(height: Any, width: Any) -> tuple[int, int]:
    if not all(isinstance(v, (int, np.integer)) and v >= 2 for v in (height, width)):
        raise Error(f"image size: got height={height!r}, width={width!r}; expected integers >= 2")
    return int(height), int(width)


def _check_size(size: Any, name: str) -> tuple[int, int]:
    """``(width, height)`` of positive ints, or Error."""
    try:
        width, height = size
    except (TypeError, ValueError):
        raise Error(f"{name}: got {size!r}; expected (width, height)") from None
    if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in (width, height)):
        raise Error(f"{name}: got {size!r}; expected (width, height) as integers >= 1")
    return int(width), int(height)


def check_homography(H: Any, name: str = "H") -> np.ndarray:
    """``H`` (array-like or tensor) as a finite (3, 3) float64 array, or ``cvdeep.Error``."""
    if isinstance(H, torch.Tensor):
        H = H.detach().cpu().numpy()
    try:
        array = np.asarray(H, dtype=np.float64)
    except (TypeError, ValueError):
        raise Error(f"{name}: got an object of type {type(H).__name__}; expected a finite 3x3 homography") from None
    if array.shape != (3, 3):
        raise Error(f"{name}: got an array of shape {array.shape}; expected a finite 3x3 homography")
    if not np.isfinite(array).all():
        raise Error(f"{name}: got a matrix with NaN or infinite entries; expected a finite 3x3 homography")
    return array


def _check_points(xy: Any, name: str = "xy") -> np.ndarray:
    points = np.asarray(xy, dtype=np.float64)
    if points.ndim == 1 and points.size == 0:
        points = points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise Error(f"{name}: got an array of shape {points.shape}; expected (N, 2) x, y pixel coordinates")
    return points


def _truncated_normal(rng: np.random.Generator, std: float, count: int) -> np.ndarray:
    """Normal draws of deviation ``std`` redrawn until inside ``[-2 std, 2 std]``."""
    values = rng.normal(0.0, std, count)
    outside = np.abs(values) > 2 * std
    while outside.any():
        values[outside] = rng.normal(0.0, std, int(outside.sum()))
        outside = np.abs(values) > 2 * std
    return values


def _inside(corners: np.ndarray, span: np.ndarray, tolerance: float = 1e-6) -> np.ndarray | np.bool_:
    """Whether every corner of (..., 4, 2) lies in [0, span]; shape (...)."""
    return ((corners >= -tolerance) & (corners <= span + tolerance)).all(axis=(-1, -2))


def _largest_fitting_scale(corners: np.ndarray, centre: np.ndarray, span: np.ndarray) -> float:
    offsets = corners - centre
    limits = [np.inf]
    with np.errstate(divide="ignore", invalid="ignore"):
        limits.append(np.where(offsets > 0, (span - centre) / offsets, np.inf).min())
        limits.append(np.where(offsets < 0, -centre / offsets, np.inf).min())
    return float(min(limits))


def _rotation(angle_deg: np.ndarray | float) -> np.ndarray:
    """(..., 2, 2) rotation matrices, clockwise on screen for positive angles (y down)."""
    radians = np.deg2rad(angle_deg)
    cos, sin = np.cos(radians), np.sin(radians)
    return np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)


def homography_from_points(source: Any, target: Any) -> np.ndarray:
    """The (3, 3) float64 homography mapping 4 ``source`` points (4, 2) onto ``target`` (4, 2).

    Solves the 8 linear equations of the direct linear transform on Hartley-normalised
    points, then scales the matrix so that its largest entry is +-1 with the sign that puts
    the source points in front (homogeneous w > 0; see ``warp_points``). ``cvdeep.Error``
    when the points are degenerate (three of them collinear).
    """
    src, dst = _check_points(source, "source"), _check_points(target, "target")
    if src.shape != (4, 2) or dst.shape != (4, 2):
        raise Error(f"homography_from_points: got {src.shape} and {dst.shape}; expected two (4, 2) arrays")

    def normaliser(points: np.ndarray) -> np.ndarray:
        centre = points.mean(axis=0)
        spread = np.sqrt(((points - centre) ** 2).sum(axis=1)).mean()
        factor = math.sqrt(2) / spread if spread > 0 else 1.0
        return np.array([[factor, 0, -factor * centre[0]], [0, factor, -factor * centre[1]], [0, 0, 1]])

    t_src, t_dst = normaliser(src), normaliser(dst)
    a = (np.c_[src, np.ones(4)] @ t_src.T)[:, :2]
    b = (np.c_[dst, np.ones(4)] @ t_dst.T)[:, :2]
    system = np.zeros((8, 8))
    rhs = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(a, b)):
        system[2 * i] = [x, y, 1, 0, 0, 0, -x * u, -y * u]
        system[2 * i + 1] = [0, 0, 0, x, y, 1, -x * v, -y * v]
        rhs[2 * i], rhs[2 * i + 1] = u, v
    degenerate = Error("homography_from_points: the points are degenerate (three of them collinear); "
                       "expected 4 points in general position")
    for points in (a, b):  # normalised: mean distance to the centroid is sqrt(2)
        for triple in ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)):
            p, q, r = points[list(triple)]
            if abs((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])) < 1e-9:
                raise degenerate
    try:
        h = np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:
        raise degenerate from None
    normalised = np.append(h, 1.0).reshape(3, 3)
    H = np.linalg.inv(t_dst) @ normalised @ t_src
    H = H / np.abs(H).max()
    centroid = np.append(src.mean(axis=0), 1.0)
    return H if H[2] @ centroid > 0 else -H  # the source points lie in front (w > 0)


def sample_warp(rng: np.random.Generator, height: int, width: int, config: HomographyConfig | None = None,
                out_size: tuple[int, int] | None = None) -> SampledWarp:
    """Draw a homography for a ``height`` x ``width`` source image, with its parameters.

    ``out_size`` is the warped image's ``(width, height)`` (default: the source's). The
    region (see the module docstring) maps onto the warped image's corner pixel centres.
    Same draws for the same generator state: use ``np.random.default_rng(seed)``.
    """
    if not isinstance(rng, np.random.Generator):
        raise Error(f"rng: got {type(rng).__name__}; expected a numpy.random.Generator (np.random.default_rng(seed))")
    height, width = _check_dims(height, width)
    config = HomographyConfig() if config is None else config
    if not isinstance(config, HomographyConfig):
        raise Error(f"config: got {type(config).__name__}; expected a HomographyConfig")
    out_w, out_h = (width, height) if out_size is None else _check_size(out_size, "out_size")
    span = np.array([width - 1.0, height - 1.0])
    artifacts = config.allow_artifacts

    margin = (1.0 - config.patch_ratio) / 2.0
    low, high = margin, margin + config.patch_ratio
    unit = np.array([[low, low], [high, low], [high, high], [low, high]])  # TL, TR, BR, BL (fractions)
    draws = np.zeros(3)
    amplitude = config.perspective if artifacts else min(config.perspective, margin)
    if amplitude > 0:
        draws = _truncated_normal(rng, amplitude / 2.0, 3)  # d_left, d_right, d_y
        d_left, d_right, d_y = draws
        unit = unit + np.array([[d_left, d_y], [d_right, -d_y], [d_right, d_y], [d_left, -d_y]])
    corners = unit * span

    scale = 1.0
    s_low, s_high = config.scale_range
    if s_high > s_low or s_low != 1.0:
        centre = corners.mean(axis=0)
        if not artifacts:
            s_high = min(s_high, _largest_fitting_scale(corners, centre, span))
        scale = float(np.exp(rng.uniform(np.log(s_low), np.log(s_high)))) if s_high > s_low else s_low
        corners = centre + scale * (corners - centre)

    angle = 0.0
    if config.max_angle_deg > 0:
        centre = corners.mean(axis=0)
        if artifacts:
            angle = float(rng.uniform(-config.max_angle_deg, config.max_angle_deg))
        else:
            candidates = rng.uniform(-config.max_angle_deg, config.max_angle_deg, config.angle_candidates)
            rotated = centre + (corners - centre) @ _rotation(candidates).transpose(0, 2, 1)
            fitting = np.flatnonzero(_inside(rotated, span))
            if fitting.size:
                angle = float(candidates[fitting[rng.integers(fitting.size)]])
        corners = centre + (corners - centre) @ _rotation(np.float64(angle)).T

    shift = np.zeros(2)
    if config.translation:
        room_low, room_high = -corners.min(axis=0), span - corners.max(axis=0)
        if artifacts:
            overflow = config.translation_overflow * span
            room_low, room_high = room_low - overflow, room_high + overflow
        shift = rng.uniform(np.minimum(room_low, room_high), np.maximum(room_low, room_high))
        corners = corners + shift

    target = np.array([[0.0, 0.0], [out_w - 1.0, 0.0], [out_w - 1.0, out_h - 1.0], [0.0, out_h - 1.0]])
    H = homography_from_points(corners, target)
    return SampledWarp(H=H, region=corners, perspective=draws, scale=scale, angle_deg=angle, shift=shift)


def scaled_homography(base: HomographyConfig, strength: float) -> HomographyConfig:
    """``base`` with its amplitudes multiplied by ``strength`` in [0, 1]: perspective, rotation,
    translation overflow and the log of the scale range scale linearly; the patch ratio moves from 1
    (strength 0: the region is A's whole frame) to ``base.patch_ratio`` (strength 1)."""
    if not 0.0 <= strength <= 1.0:
        raise Error(f"strength: got {strength!r}; expected a number in [0, 1]")
    low, high = base.scale_range
    return dataclasses.replace(
        base,
        patch_ratio=1.0 - strength * (1.0 - base.patch_ratio),
        perspective=base.perspective * strength,
        scale_range=(low**strength, high**strength),
        max_angle_deg=base.max_angle_deg * strength,
        translation_overflow=base.translation_overflow * strength if base.allow_artifacts else 0.0,
    )


def sample_homography(rng: np.random.Generator, height: int, width: int, config: HomographyConfig | None = None,
                      out_size: tuple[int, int] | None = None) -> np.ndarray:
    """A random (3, 3) float64 homography from a ``height`` x ``width`` source image to the
    warped image (``out_size`` = ``(width, height)``, default the source's); see ``sample_warp``."""
    return sample_warp(rng, height, width, config, out_size).H


def warp_points(H: Any, xy: Any) -> np.ndarray:
    """Points (N, 2) mapped by ``H``, float64 (N, 2). Points that ``H`` sends behind the
    horizon (homogeneous w <= 0, i.e. no image there) come back as NaN."""
    H = check_homography(H)
    points = _check_points(xy)
    mapped = points @ H[:, :2].T + H[:, 2]
    w = mapped[:, 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = mapped[:, :2] / w
    out[(w <= 0)[:, 0]] = np.nan
    return out


def local_affine(H: Any, xy: Any) -> np.ndarray:
    """Jacobian (N, 2, 2) of the map ``p -> H p`` at the points (N, 2): ``J[n] @ dp`` is the
    warped displacement of a small source displacement ``dp`` at ``xy[n]``. NaN where the
    point goes behind the horizon."""
    H = check_homography(H)
    points = _check_points(xy)
    mapped = points @ H[:, :2].T + H[:, 2]
    w = mapped[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = mapped[:, 0] / w, mapped[:, 1] / w
        jac = np.empty((len(points), 2, 2))
        jac[:, 0, 0] = (H[0, 0] - u * H[2, 0]) / w
        jac[:, 0, 1] = (H[0, 1] - u * H[2, 1]) / w
        jac[:, 1, 0] = (H[1, 0] - v * H[2, 0]) / w
        jac[:, 1, 1] = (H[1, 1] - v * H[2, 1]) / w
    jac[w <= 0] = np.nan
    return jac


def affine_rotation_deg(jacobians: np.ndarray) -> np.ndarray:
    """(N,) angle in degrees (clockwise on screen) of the rotation closest to each (2, 2)
    matrix in the Frobenius sense (its polar factor when the determinant is positive):
    ``atan2(J10 - J01, J00 + J11)``."""
    jac = np.asarray(jacobians, dtype=np.float64)
    return np.rad2deg(np.arctan2(jac[..., 1, 0] - jac[..., 0, 1], jac[..., 0, 0] + jac[..., 1, 1]))


def affine_scale(jacobians: np.ndarray) -> np.ndarray:
    """(N,) ``sqrt(|det J|)``: the isotropic scale with the same area change as each (2, 2) matrix."""
    return np.sqrt(np.abs(np.linalg.det(np.asarray(jacobians, dtype=np.float64))))


def warp_keypoints(H: Any, xy: Any, sizes: Any, angles: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints mapped through ``H``: positions (N, 2), sizes (N,) and angles (N,), float64.

    The size (a diameter in px) is multiplied by ``sqrt(|det J|)`` and the angle (degrees,
    OpenCV convention: clockwise on screen, y down) turned by the rotation closest to the
    Jacobian ``J`` at the keypoint, then wrapped to [0, 360). ``-1`` ("no angle") stays -1.
    NaN where ``H`` sends the point behind the horizon.
    """
    points = _check_points(xy)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1)
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    if sizes.shape != (len(points),) or angles.shape != (len(points),):
        raise Error(f"warp_keypoints: got {len(points)} points, {sizes.size} sizes and {angles.size} angles; "
                    "expected one size and one angle per point")
    jac = local_affine(H, points)
    warped_angles = np.mod(angles + affine_rotation_deg(jac), 360.0)
    warped_angles[warped_angles >= 360.0] = 0.0
    warped_angles = np.where(angles == NO_ANGLE, NO_ANGLE, warped_angles)
    return warp_points(H, points), sizes * affine_scale(jac), warped_angles


def warp_image(image: np.ndarray, H: Any, out_size: tuple[int, int]) -> np.ndarray:
    """``cv2.warpPerspective`` of a NumPy image (uint8 or float32, gray or multi-channel) by
    ``H`` (source -> warped) into ``out_size = (width, height)``: bilinear, zero outside."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.dtype not in (np.uint8, np.float32):
        desc = (f"an array of shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise Error(f"warp_image: got {desc}; expected a uint8 or float32 (H, W) or (H, W, C) array")
    return cv2.warpPerspective(image, check_homography(H), _check_size(out_size, "out_size"), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _batched_homographies(H: Any, batch: int, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(H, dtype=torch.float64, device=device)
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0).expand(batch, 3, 3)
    if tensor.shape != (batch, 3, 3) or not bool(torch.isfinite(tensor).all()):
        raise Error(f"H: got a tensor of shape {tuple(tensor.shape)}; expected finite ({batch}, 3, 3) homographies "
                    "(or one (3, 3) for the whole batch)")
    return tensor


def _source_coordinates(H: torch.Tensor, out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source x, y (B, h, w) float64 of every warped pixel centre, and w > 0 (not behind the horizon)."""
    out_w, out_h = out_size
    inverse = torch.linalg.inv(H)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64, device=H.device),
                            torch.arange(out_w, dtype=torch.float64, device=H.device), indexing="ij")
    pixels = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1).reshape(-1, 3)  # (h*w, 3)
    source = torch.einsum("bij,pj->bpi", inverse, pixels)  # (B, h*w, 3)
    w = source[..., 2]
    ahead = w > 0
    safe = torch.where(ahead, w, torch.ones_like(w))
    x = (source[..., 0] / safe).reshape(-1, out_h, out_w)
    y = (source[..., 1] / safe).reshape(-1, out_h, out_w)
    return x, y, ahead.reshape(-1, out_h, out_w)


def warp_image_tensor(images: torch.Tensor, H: Any, out_size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Differentiable warp of float images (B, C, H, W) by homographies (B, 3, 3) (source ->
    warped; one (3, 3) is used for the whole batch) into ``out_size = (width, height)``.

    ``grid_sample`` with ``align_corners=False`` and zero padding, so it agrees with
    ``warp_image`` (``cv2.warpPerspective``) to within OpenCV's fixed-point rounding. Returns
    (B, C, height, width) of the images' dtype; pixels behind the horizon are 0.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        desc = f"a tensor of shape {tuple(images.shape)} and dtype {images.dtype}" if isinstance(images, torch.Tensor) \
            else type(images).__name__
        raise Error(f"warp_image_tensor: images got {desc}; expected a float (B, C, H, W) tensor")
    if mode not in ("bilinear", "nearest"):
        raise Error(f"warp_image_tensor: mode got {mode!r}; expected 'bilinear' or 'nearest'")
    size = _check_size(out_size, "out_size")
    homographies = _batched_homographies(H, images.shape[0], images.device)
    x, y, ahead = _source_coordinates(homographies, size)
    height, width = images.shape[-2:]
    grid_x = torch.where(ahead, (2 * x + 1) / width - 1, torch.full_like(x, -2.0))
    grid_y = torch.where(ahead, (2 * y + 1) / height - 1, torch.full_like(y, -2.0))
    grid = torch.stack((grid_x, grid_y), dim=-1).to(images.dtype)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def valid_mask(H: Any, source_size: tuple[int, int], out_size: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """Bool (height, width) mask of the warped image (``out_size = (width, height)``): True
    where the warped pixel centre comes from a source point at least ``margin`` px inside the
    source's pixel-centre rectangle ``[0, W-1] x [0, H-1]`` (``source_size = (W, H)``)."""
    homography = torch.from_numpy(check_homography(H)).unsqueeze(0)
    return valid_mask_tensor(homography, source_size, out_size, margin)[0, 0].numpy()


def valid_mask_tensor(H: Any, source_size: tuple[int, int], out_size: tuple[int, int],
                      margin: float = 0.0) -> torch.Tensor:
    """``valid_mask`` for a batch of homographies (B, 3, 3): bool (B, 1, height, width)."""
    src_w, src_h = _check_size(source_size, "source_size")
    size = _check_size(out_size, "out_size")
    if not _finite(margin) or margin < 0:
        raise Error(f"valid_mask: margin got {margin!r}; expected a number of pixels >= 0")
    tensor = torch.as_tensor(H, dtype=torch.float64)
    homographies = _batched_homographies(tensor, tensor.shape[0] if tensor.dim() == 3 else 1, tensor.device)
    x, y, ahead = _source_coordinates(homographies, size)
    inside = (x >= margin) & (x <= src_w - 1 - margin) & (y >= margin) & (y <= src_h - 1 - margin)
    return (inside & ahead).unsqueeze(1)
