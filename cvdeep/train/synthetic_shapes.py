"""SuperPoint's Synthetic Shapes: rendered primitives whose corners are known exactly (for MagicPoint).

Every image is drawn on a canvas ``supersample`` times larger than ``image_size`` (the reference
draws at 960 x 1280 and keeps 240 x 320, i.e. 4x), on a random blurred background, then Gaussian
blurred and reduced with pixel-area averaging. Corners are drawn with sub-pixel vertices (OpenCV's
fixed-point ``shift`` of 4 bits), so the ground truth is the exact vertex that was drawn, mapped to
the output grid with the pixel-centre rule ``x_out = (x_canvas + 0.5) / supersample - 0.5``
(OpenCV convention: the centre of pixel (i, j) is x = j, y = i). The only residual error is
OpenCV's rasterisation, which fills pixels whose centre lies on the boundary: at most 0.5 canvas
pixel, i.e. ``0.5 / supersample`` output pixel (0.125 px at the default 4x).

Occlusion: every drawing call also writes the id of the shape it belongs to into an owner map. A
corner of shape k is dropped when any pixel within ``occlusion_radius`` (output pixels) of it
belongs to a shape drawn later than k, and when it falls outside the image. Most primitives also
reject overlapping shapes as the reference does, so the owner test mostly catches line ends that
touch a later line.

Primitives (``PRIMITIVES``), as in rpautrat/SuperPoint's ``synthetic_dataset.py``:

- ``lines``: up to 9 non-intersecting segments of random colour and thickness; corners: the end points.
- ``polygon``: one filled polygon of 3-7 vertices sampled by angle around a centre; vertices whose
  interior angle is >= 120 degrees are removed (repeated until none is left), as are repeated ones.
- ``multiple_polygons``: up to 30 non-overlapping such polygons filled with a blurred blob texture.
- ``ellipses``: up to 20 non-overlapping filled ellipses; no corners (negative examples).
- ``star``: 3-5 segments from a common centre; corners: the centre and the branch ends.
- ``checkerboard``: a 3-6 x 3-6 board warped by a random affine map and homography, with cells
  contrasting with their left and upper neighbours and lines drawn along some grid lines; corners:
  the grid points.
- ``stripes``: 5-12 vertical stripes (fewer once those narrower than 4% of the image are merged) on
  a board 1-2x the image, warped likewise; corners: the stripe ends on the top and bottom edges.
- ``cube``: the three visible faces of a randomly rotated, scaled box with contrasting edges;
  corners: the 7 visible vertices.
- ``gaussian_noise``: the whole image is Gaussian noise (mean 128, std 100, clipped); no corners.

Default primitive probabilities: every primitive weight 1 except ellipses 0.3, stripes 0.2 and
gaussian_noise 0.1 (the fractions rpautrat's ``magic-point_shapes.yaml`` keeps of those three),
normalised. Photometric augmentation (``PhotometricConfig``) has that file's parameters; homographic
augmentation takes a homography from the caller (``warp_sample``).

Where this module differs from the reference, deliberately: corners are sub-pixel instead of
integers (the reference truncates vertices to int and scales them by 1/4 without the half-pixel
shift); the final reduction is area averaging (the reference blurs with an 11 px kernel, sigma 2,
at 960 x 1280 and resizes bilinearly; ``blur_sigma`` = 0.5 output px is that same blur); segments
shorter than twice their thickness are not drawn (their two "corners" would be one blob); corners
hidden by later shapes are removed through the owner map; ``gaussian_noise`` is Gaussian as its
name and the reference's first version say (its current version draws uniform noise).

Sources (facts only; no code or text copied):

- D. DeTone, T. Malisiewicz, A. Rabinovich, "SuperPoint: Self-Supervised Interest Point Detection
  and Description", CVPR Workshops 2018 (Sec. 4.1, Fig. 4: the Synthetic Shapes primitives).
- rpautrat/SuperPoint (MIT licence): ``superpoint/datasets/synthetic_dataset.py``,
  ``synthetic_shapes.py``, ``utils/photometric_augmentation.py``, ``utils/pipeline.py``,
  ``configs/magic-point_shapes.yaml`` (primitive set, sampling ranges, sizes, blur, probabilities,
  augmentation parameters).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import Error

PRIMITIVES: tuple[str, ...] = (
    "lines", "polygon", "multiple_polygons", "ellipses", "star", "checkerboard", "stripes", "cube", "gaussian_noise",
)
_DEFAULT_WEIGHTS = {"ellipses": 0.3, "stripes": 0.2, "gaussian_noise": 0.1}  # others: 1
_SHIFT = 4  # OpenCV fixed-point bits: vertices are drawn with 1/16 canvas-pixel precision
_SCALE = 1 << _SHIFT
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PhotometricConfig:
    """Photometric augmentation applied in a random order (rpautrat ``magic-point_shapes.yaml``).

    Intensities are in 0..255. ``brightness``: the largest added offset; ``contrast``: range of the
    factor applied around the mean; ``gaussian_noise``: range of the noise std; ``speckle``: range of
    the probability of a pixel turning black, and (separately) white; ``shade_transparency`` /
    ``shade_kernel``: range of the darkening (negative: brightening) of blurred random ellipses and
    of the Gaussian kernel size blurring them (output pixels); ``motion_blur``: the largest kernel
    size of a horizontal, vertical or diagonal blur.
    """

    enable: bool = False
    brightness: float = 75.0
    contrast: tuple[float, float] = (0.3, 1.8)
    gaussian_noise: tuple[float, float] = (0.0, 15.0)
    speckle: tuple[float, float] = (0.0, 0.0035)
    shade_transparency: tuple[float, float] = (-0.5, 0.8)
    shade_kernel: tuple[int, int] = (50, 100)
    motion_blur: int = 7
    random_order: bool = True


@dataclass(frozen=True)
class SyntheticShapesConfig:
    """What ``render``/``generate`` draw.

    ``image_size``: (height, width) of the output in pixels (the reference's 240 x 320).
    ``supersample``: drawing resolution factor (the reference draws at 4x).
    ``primitives`` / ``probabilities``: what ``generate`` samples from; ``None`` probabilities mean
    the reference weights (see the module docstring).
    ``blur_sigma``: Gaussian blur before the reduction, in output pixels.
    ``background_blobs``, ``background_blob_radius`` (fractions of the larger canvas side),
    ``background_blur`` (box-filter size range, fractions of the larger canvas side): the random
    background, whose reference values at 1280 px are 100 blobs of radius 25-40 px blurred by a box of
    150-500 px.
    ``occlusion_radius``: output pixels around a corner that a later shape must not touch.
    ``augmentation``: photometric augmentation applied by ``render`` when enabled.
    """

    image_size: tuple[int, int] = (240, 320)
    supersample: int = 4
    primitives: tuple[str, ...] = PRIMITIVES
    probabilities: tuple[float, ...] | None = None
    blur_sigma: float = 0.5
    background_blobs: int = 100
    background_blob_radius: tuple[float, float] = (0.02, 0.031)
    background_blur: tuple[float, float] = (150 / 1280, 500 / 1280)
    occlusion_radius: float = 2.0
    augmentation: PhotometricConfig = field(default_factory=PhotometricConfig)

    def __post_init__(self) -> None:
        height, width = (int(v) for v in self.image_size)
        if height < 16 or width < 16:
            raise Error(f"image_size must be at least (16, 16), got {self.image_size}")
        if int(self.supersample) < 1:
            raise Error(f"supersample must be a positive integer, got {self.supersample}")
        unknown = [p for p in self.primitives if p not in PRIMITIVES]
        if unknown or not self.primitives:
            raise Error(f"primitives must be a non-empty subset of {PRIMITIVES}, got {self.primitives}")
        if self.probabilities is not None:
            p = np.asarray(self.probabilities, dtype=np.float64)
            if p.shape != (len(self.primitives),) or np.any(p < 0) or not np.isfinite(p).all() or p.sum() <= 0:
                raise Error(
                    f"probabilities must be {len(self.primitives)} non-negative numbers with a positive sum "
                    f"(one per primitive), got {self.probabilities}"
                )
        if self.blur_sigma < 0 or self.occlusion_radius < 0:
            raise Error(f"blur_sigma and occlusion_radius must be >= 0, got {self.blur_sigma}, {self.occlusion_radius}")

    def primitive_probabilities(self) -> np.ndarray:
        """(len(primitives),) float64 probabilities summing to 1."""
        if self.probabilities is None:
            p = np.array([_DEFAULT_WEIGHTS.get(name, 1.0) for name in self.primitives])
        else:
            p = np.asarray(self.probabilities, dtype=np.float64)
        return p / p.sum()


# ----------------------------------------------------------------------------------------------
# Drawing with an owner map


class _Canvas:
    """The supersampled image plus, per pixel, the id of the last shape drawn there (0: background)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.owner = np.zeros(image.shape, np.int32)
        self.count = 0
        self.corners: list[tuple[int, np.ndarray]] = []

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def min_dim(self) -> int:
        return min(self.image.shape)

    def new_shape(self) -> int:
        self.count += 1
        return self.count

    def fill_polygon(self, points: np.ndarray, color: int, shape: int) -> np.ndarray:
        """Fill the polygon; returns the drawn vertices (canvas pixels, float64, quantised to 1/16)."""
        fixed = np.round(np.asarray(points, np.float64) * _SCALE).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.image, [fixed], int(color), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.owner, [fixed], int(shape), cv2.LINE_8, _SHIFT)
        return fixed.reshape(-1, 2) / _SCALE

    def line(self, p: np.ndarray, q: np.ndarray, color: int, thickness: int, shape: int) -> np.ndarray:
        """Draw a segment; returns its two drawn end points (2, 2)."""
        a = tuple(int(v) for v in np.round(np.asarray(p, np.float64) * _SCALE))
        b = tuple(int(v) for v in np.round(np.asarray(q, np.float64) * _SCALE))
        cv2.line(self.image, a, b, int(color), int(thickness), cv2.LINE_8, _SHIFT)
        cv2.line(self.owner, a, b, int(shape), int(thickness), cv2.LINE_8, _SHIFT)
        return np.array([a, b], np.float64) / _SCALE

    def ellipse(self, center: np.ndarray, axes: tuple[float, float], angle: float, color: int, shape: int) -> None:
        c = tuple(int(v) for v in np.round(np.asarray(center, np.float64) * _SCALE))
        ax = tuple(round(v * _SCALE) for v in axes)
        cv2.ellipse(self.image, c, ax, float(angle), 0.0, 360.0, int(color), -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(self.owner, c, ax, float(angle), 0.0, 360.0, int(shape), -1, cv2.LINE_8, _SHIFT)

    def paste(self, mask: np.ndarray, texture: np.ndarray, shape: int, top_left: tuple[int, int] = (0, 0)) -> None:
        """Copy ``texture`` where ``mask`` is set; both cover the window starting at ``top_left`` (y, x)."""
        y, x = top_left
        h, w = mask.shape
        window = (slice(y, y + h), slice(x, x + w))
        self.image[window][mask] = texture[mask]
        self.owner[window][mask] = shape

    def add_corners(self, points: np.ndarray, shape: int) -> None:
        points = np.asarray(points, np.float64).reshape(-1, 2)
        if len(points):
            self.corners.append((shape, points))

    def visible_corners(self, radius: float) -> np.ndarray:
        """Corners inside the canvas that no later shape covers within ``radius`` canvas pixels."""
        r = math.ceil(radius)
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = dx**2 + dy**2 <= radius**2 + 1e-9
        offsets_y, offsets_x = dy[disk], dx[disk]
        kept = []
        for shape, points in self.corners:
            inside = (points[:, 0] >= -0.5) & (points[:, 0] < self.width - 0.5)
            inside &= (points[:, 1] >= -0.5) & (points[:, 1] < self.height - 0.5)
            for x, y in points[inside]:
                xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
                ys, xs = yi + offsets_y, xi + offsets_x
                ok = (ys >= 0) & (ys < self.height) & (xs >= 0) & (xs < self.width)
                if not np.any(self.owner[ys[ok], xs[ok]] > shape):
                    kept.append((x, y))
        return np.array(kept, np.float64).reshape(-1, 2)


def _contrasting_color(rng: np.random.Generator, background: float) -> int:
    """A grey level at least 30 away from ``background`` (otherwise shifted by half the range)."""
    color = int(rng.integers(256))
    if abs(color - background) < 30:
        color = (color + 128) % 256
    return color


def _different_color(rng: np.random.Generator, previous: Sequence[int], min_dist: int = 50, tries: int = 20) -> int:
    """A grey level at least ``min_dist`` from every ``previous`` one (gives up after ``tries``)."""
    color = int(rng.integers(256))
    for _ in range(tries):
        if all(abs(color - p) >= min_dist for p in previous):
            break
        color = int(rng.integers(256))
    return color


def _randint(rng: np.random.Generator, low: float, high: float) -> int:
    """Integer in [low, high), at least low (=1 when low < 1) even when the range is empty."""
    lo = max(int(low), 1)
    hi = max(int(high), lo + 1)
    return int(rng.integers(lo, hi))


def _segments_cross(p: np.ndarray, q: np.ndarray, segments: np.ndarray) -> bool:
    """Whether segment pq properly crosses any of ``segments`` (M, 4) = (x1, y1, x2, y2)."""
    if len(segments) == 0:
        return False
    a, b = segments[:, 0:2], segments[:, 2:4]

    def orient(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.sign((v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1])
                       - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0]))

    p, q = np.broadcast_to(p, a.shape), np.broadcast_to(q, a.shape)
    return bool(np.any((orient(p, q, a) != orient(p, q, b)) & (orient(a, b, p) != orient(a, b, q))))


def _polygon_edges(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, np.roll(points, -1, axis=0)], axis=1)


def _sharp_polygon(points: np.ndarray, max_angle: float = 2 * math.pi / 3) -> np.ndarray:
    """Drop repeated vertices and those with an interior angle >= ``max_angle``, until stable."""
    while len(points) >= 3:
        step = np.linalg.norm(points - np.roll(points, 1, axis=0), axis=1)
        points = points[step > 0.01]
        if len(points) < 3:
            break
        before, after = np.roll(points, 1, axis=0) - points, np.roll(points, -1, axis=0) - points
        cos = np.sum(before * after, axis=1) / (np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1))
        sharp = np.arccos(np.clip(cos, -1.0, 1.0)) < max_angle
        if sharp.all():
            return points
        points = points[sharp]
    return points.reshape(-1, 2)[:0]


def _random_polygon(rng: np.random.Generator, canvas: _Canvas,
                    max_sides: int = 8) -> tuple[np.ndarray, np.ndarray, float]:
    """(vertices, centre, radius) of a polygon of 3..max_sides-1 vertices sampled by angle (may come
    back with fewer than 3 vertices after the sharpness filter)."""
    n = int(rng.integers(3, max_sides))
    rad = max(rng.random() * canvas.min_dim / 2, canvas.min_dim / 10)
    center = np.array([rng.uniform(rad, canvas.width - rad), rng.uniform(rad, canvas.height - rad)])
    slices = np.linspace(0, 2 * math.pi, n + 1)
    angles = slices[:-1] + rng.random(n) * (slices[1:] - slices[:-1])
    radii = np.maximum(rng.random((n, 2)), 0.4) * rad
    points = center + radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return _sharp_polygon(points), center, rad


def _warp_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine or 3x3 projective matrix to (N, 2) points."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ np.asarray(matrix, np.float64).T
    if homogeneous.shape[1] == 2:
        return homogeneous
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _random_board_transform(rng: np.random.Generator, canvas: _Canvas,
                            params: tuple[float, float]) -> Callable[[np.ndarray], np.ndarray]:
    """A random affine map followed by a random homography (the reference's board distortion)."""
    alpha = max(canvas.height, canvas.width) * (params[0] + rng.random() * params[1])
    center = np.array([canvas.width / 2, canvas.height / 2])
    half = canvas.min_dim // 3
    square = (center + half * np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]])).astype(np.float32)
    moved = square + rng.uniform(-alpha, alpha, size=square.shape).astype(np.float32)
    affine = cv2.getAffineTransform(square[:3], moved[:3])
    moved = square + rng.uniform(-alpha / 2, alpha / 2, size=square.shape).astype(np.float32)
    perspective = cv2.getPerspectiveTransform(square, moved)
    return lambda points: _warp_points(perspective, _warp_points(affine, points))


# ----------------------------------------------------------------------------------------------
# Primitives: each draws on the canvas and registers the corners of every shape it draws


def _draw_background(canvas: _Canvas, rng: np.random.Generator, config: SyntheticShapesConfig) -> None:
    h, w = canvas.image.shape
    dim = max(h, w)
    noise = rng.integers(0, 256, size=(h, w))
    canvas.image[...] = np.where(noise > rng.integers(256), 255, 0).astype(np.uint8)
    background = float(canvas.image.mean())
    r_lo, r_hi = config.background_blob_radius
    for _ in range(int(config.background_blobs)):
        center = (int(rng.integers(w)), int(rng.integers(h)))
        radius = _randint(rng, dim * r_lo, dim * r_hi)
        cv2.circle(canvas.image, center, radius, _contrasting_color(rng, background), -1)
    k_lo, k_hi = config.background_blur
    kernel = _randint(rng, dim * k_lo, dim * k_hi)
    cv2.blur(canvas.image, (kernel, kernel), dst=canvas.image)


def _draw_lines(canvas: _Canvas, rng: np.random.Generator, max_lines: int = 10) -> None:
    background = float(canvas.image.mean())
    segments = np.zeros((0, 4))
    for _ in range(int(rng.integers(1, max_lines))):
        p = rng.uniform([-0.5, -0.5], [canvas.width - 0.5, canvas.height - 0.5])
        q = rng.uniform([-0.5, -0.5], [canvas.width - 0.5, canvas.height - 0.5])
        thickness = _randint(rng, canvas.min_dim * 0.01, canvas.min_dim * 0.02)
        if np.linalg.norm(p - q) < 2 * thickness or _segments_cross(p, q, segments):
            continue
        segments = np.concatenate([segments, np.concatenate([p, q])[None]], axis=0)
        shape = canvas.new_shape()
        canvas.add_corners(canvas.line(p, q, _contrasting_color(rng, background), thickness, shape), shape)


def _draw_polygon(canvas: _Canvas, rng: np.random.Generator) -> None:
    points: np.ndarray = np.zeros((0, 2))
    while len(points) < 3:
        points, _, _ = _random_polygon(rng, canvas)
    shape = canvas.new_shape()
    canvas.add_corners(canvas.fill_polygon(points, _contrasting_color(rng, float(canvas.image.mean())), shape), shape)


def _blob_texture(rng: np.random.Generator, size: tuple[int, int], background: float, canvas_dim: int,
                  blobs_per_pixel: float, kernel_range: tuple[float, float]) -> np.ndarray:
    """A blurred texture of random discs (the reference fills polygons with it)."""
    h, w = size
    texture = np.full((h, w), _contrasting_color(rng, background), np.uint8)
    for _ in range(max(1, round(blobs_per_pixel * h * w))):
        radius = int(rng.integers(0, max(1, int(canvas_dim * 20 / 1280))))
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.circle(texture, centre, radius, _contrasting_color(rng, background), -1)
    kernel = _randint(rng, canvas_dim * kernel_range[0], canvas_dim * kernel_range[1])
    return cv2.blur(texture, (kernel, kernel))


def _draw_multiple_polygons(canvas: _Canvas, rng: np.random.Generator, attempts: int = 30) -> None:
    background = float(canvas.image.mean())
    segments = np.zeros((0, 4))
    circles: list[tuple[np.ndarray, float]] = []
    dim = max(canvas.height, canvas.width)
    blobs_per_pixel = 3000 / (960 * 1280)  # the reference's 3000 blobs over a 960 x 1280 canvas
    for _ in range(attempts):
        points, center, rad = _random_polygon(rng, canvas)
        if len(points) < 3:
            continue
        edges = _polygon_edges(points)
        if any(_segments_cross(e[:2], e[2:], segments) for e in edges):
            continue
        # one circle inside another (no edge crossing, but one polygon may contain the other)
        if any(np.linalg.norm(center - c) + min(rad, r) < max(rad, r) for c, r in circles):
            continue
        segments = np.concatenate([segments, edges], axis=0)
        circles.append((center, rad))
        shape = canvas.new_shape()
        mask = np.zeros(canvas.image.shape, np.uint8)
        fixed = np.round(points * _SCALE).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [fixed], 255, cv2.LINE_8, _SHIFT)
        x, y, w, h = cv2.boundingRect(mask)
        if w == 0 or h == 0:
            continue
        window = mask[y : y + h, x : x + w] > 0
        texture = _blob_texture(rng, (h, w), background, dim, blobs_per_pixel, (50 / 1280, 100 / 1280))
        canvas.paste(window, texture, shape, (y, x))
        canvas.add_corners(fixed.reshape(-1, 2) / _SCALE, shape)


def _draw_ellipses(canvas: _Canvas, rng: np.random.Generator, attempts: int = 20) -> None:
    background = float(canvas.image.mean())
    quarter = canvas.min_dim / 4
    centers: list[np.ndarray] = []
    radii: list[float] = []
    for _ in range(attempts):
        ax, ay = (max(rng.random() * quarter, quarter / 5) for _ in range(2))
        max_rad = max(ax, ay)
        center = np.array([rng.uniform(max_rad, canvas.width - max_rad), rng.uniform(max_rad, canvas.height - max_rad)])
        if any(np.linalg.norm(center - c) - r < max_rad for c, r in zip(centers, radii)):
            continue
        centers.append(center)
        radii.append(max_rad)
        canvas.ellipse(center, (ax, ay), rng.random() * 90, _contrasting_color(rng, background), canvas.new_shape())


def _draw_star(canvas: _Canvas, rng: np.random.Generator, max_branches: int = 6) -> None:
    background = float(canvas.image.mean())
    n = int(rng.integers(3, max_branches))
    thickness = _randint(rng, canvas.min_dim * 0.01, canvas.min_dim * 0.02)
    rad = max(rng.random() * canvas.min_dim / 2, canvas.min_dim / 5)
    center = np.array([rng.uniform(rad, canvas.width - rad), rng.uniform(rad, canvas.height - rad)])
    slices = np.linspace(0, 2 * math.pi, n + 1)
    angles = slices[:-1] + rng.random(n) * (slices[1:] - slices[:-1])
    ends = center + np.maximum(rng.random((n, 2)), 0.3) * rad * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    shape = canvas.new_shape()
    drawn = [canvas.line(center, end, _contrasting_color(rng, background), thickness, shape) for end in ends]
    canvas.add_corners(np.concatenate([drawn[0][:1]] + [d[1:] for d in drawn]), shape)


def _draw_checkerboard(canvas: _Canvas, rng: np.random.Generator, max_rows: int = 7, max_cols: int = 7,
                       transform_params: tuple[float, float] = (0.05, 0.15)) -> None:
    background = float(canvas.image.mean())
    rows, cols = int(rng.integers(3, max_rows)), int(rng.integers(3, max_cols))
    side = min((canvas.width - 1) // cols, (canvas.height - 1) // rows)
    gx, gy = np.meshgrid(np.arange(cols + 1), np.arange(rows + 1))
    grid = side * np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)
    warped = _random_board_transform(rng, canvas, transform_params)(grid)
    fixed = np.round(warped * _SCALE).astype(np.int32)
    shape = canvas.new_shape()
    colors = np.zeros((rows, cols), np.int64)
    for i in range(rows):
        for j in range(cols):
            neighbours = ([colors[i - 1, j]] if i else []) + ([colors[i, j - 1]] if j else [])
            colors[i, j] = _different_color(rng, neighbours) if neighbours else _contrasting_color(rng, background)
            k = i * (cols + 1) + j
            quad = fixed[[k, k + 1, k + cols + 2, k + cols + 1]].reshape(-1, 1, 2)
            cv2.fillConvexPoly(canvas.image, quad, int(colors[i, j]), cv2.LINE_8, _SHIFT)
            cv2.fillConvexPoly(canvas.owner, quad, shape, cv2.LINE_8, _SHIFT)
    drawn = fixed / _SCALE
    thickness = _randint(rng, canvas.min_dim * 0.01, canvas.min_dim * 0.015)
    for _ in range(int(rng.integers(2, rows + 2))):  # lines along rows of grid points
        r, c1, c2 = int(rng.integers(rows + 1)), int(rng.integers(cols + 1)), int(rng.integers(cols + 1))
        canvas.line(drawn[r * (cols + 1) + c1], drawn[r * (cols + 1) + c2], _contrasting_color(rng, background),
                    thickness, shape)
    for _ in range(int(rng.integers(2, cols + 2))):  # and along columns
        c, r1, r2 = int(rng.integers(cols + 1)), int(rng.integers(rows + 1)), int(rng.integers(rows + 1))
        canvas.line(drawn[r1 * (cols + 1) + c], drawn[r2 * (cols + 1) + c], _contrasting_color(rng, background),
                    thickness, shape)
    canvas.add_corners(drawn, shape)


def _draw_stripes(canvas: _Canvas, rng: np.random.Generator, max_stripes: int = 13, min_width_ratio: float = 0.04,
                  transform_params: tuple[float, float] = (0.1, 0.1)) -> None:
    background = float(canvas.image.mean())
    board_h = int(canvas.height * (1 + rng.random()))
    board_w = int(canvas.width * (1 + rng.random()))
    n = int(rng.integers(5, max_stripes))
    xs = np.unique(np.concatenate([board_w * rng.random(n - 1), [0, board_w - 1]]).astype(np.int64))
    min_width = canvas.min_dim * min_width_ratio
    gaps = np.concatenate([xs[1:], [board_w + min_width]]) - xs
    xs = xs[gaps >= min_width].astype(np.float64)
    if len(xs) < 2:
        return
    top = np.stack([xs, np.zeros_like(xs)], axis=1)
    bottom = np.stack([xs, np.full_like(xs, board_h - 1)], axis=1)
    transform = _random_board_transform(rng, canvas, transform_params)
    fixed = np.round(transform(np.concatenate([top, bottom])) * _SCALE).astype(np.int32)
    m = len(xs)
    shape = canvas.new_shape()
    color = _contrasting_color(rng, background)
    for i in range(m - 1):
        color = (color + 128 + int(rng.integers(-30, 30))) % 256
        quad = fixed[[i, i + 1, m + i + 1, m + i]].reshape(-1, 1, 2)
        cv2.fillConvexPoly(canvas.image, quad, int(color), cv2.LINE_8, _SHIFT)
        cv2.fillConvexPoly(canvas.owner, quad, shape, cv2.LINE_8, _SHIFT)
    drawn = fixed / _SCALE
    thickness = _randint(rng, canvas.min_dim * 0.01, canvas.min_dim * 0.015)
    for _ in range(int(rng.integers(2, 5))):  # along the top or bottom edge
        row = int(rng.choice([0, m]))
        a, b = int(rng.integers(m)), int(rng.integers(m))
        canvas.line(drawn[row + a], drawn[row + b], _contrasting_color(rng, background), thickness, shape)
    for _ in range(int(rng.integers(2, m + 1))):  # along stripe boundaries
        a = int(rng.integers(m))
        canvas.line(drawn[a], drawn[m + a], _contrasting_color(rng, background), thickness, shape)
    canvas.add_corners(drawn, shape)


def _draw_cube(canvas: _Canvas, rng: np.random.Generator, min_size_ratio: float = 0.2, min_angle: float = math.pi / 10,
               scale_interval: tuple[float, float] = (0.4, 0.6),
               trans_interval: tuple[float, float] = (0.5, 0.2)) -> None:
    background = float(canvas.image.mean())
    min_dim = canvas.min_dim
    lx, ly, lz = min_dim * min_size_ratio + rng.random(3) * 2 * min_dim / 3
    # vertex index bits (x, y, z): neighbours differ by one bit; 0 is the hidden vertex, 7 the front one
    cube = np.array([[x, y, z] for z in (0, lz) for y in (0, ly) for x in (0, lx)], np.float64)
    a, b, c = rng.random(3) * 3 * math.pi / 10 + min_angle
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, -math.sin(c)], [0, 1, 0], [math.sin(c), 0, math.cos(c)]])
    scale = np.diag(scale_interval[0] + rng.random(3) * scale_interval[1])
    shift = np.array([
        canvas.width * trans_interval[0]
        + rng.uniform(-canvas.width * trans_interval[1], canvas.width * trans_interval[1]),
        canvas.height * trans_interval[0]
        + rng.uniform(-canvas.height * trans_interval[1], canvas.height * trans_interval[1]),
        0.0,
    ])
    projected = (cube @ (scale @ rz @ rx @ ry).T + shift)[:, :2]
    fixed = np.round(projected * _SCALE).astype(np.int32)
    faces = ((7, 3, 1, 5), (7, 5, 4, 6), (7, 6, 2, 3))
    shape = canvas.new_shape()
    face_color = _contrasting_color(rng, background)
    for face in faces:
        polygon = fixed[list(face)].reshape(-1, 1, 2)
        cv2.fillPoly(canvas.image, [polygon], face_color, cv2.LINE_8, _SHIFT)
        cv2.fillPoly(canvas.owner, [polygon], shape, cv2.LINE_8, _SHIFT)
    drawn = fixed / _SCALE
    thickness = _randint(rng, min_dim * 0.003, min_dim * 0.015)
    for face in faces:
        for k in range(4):
            edge_color = (face_color + 128 + int(rng.integers(-64, 64))) % 256
            canvas.line(drawn[face[k]], drawn[face[(k + 1) % 4]], edge_color, thickness, shape)
    canvas.add_corners(drawn[1:], shape)


def _draw_gaussian_noise(canvas: _Canvas, rng: np.random.Generator) -> None:
    canvas.image[...] = np.clip(rng.normal(128.0, 100.0, size=canvas.image.shape), 0, 255).astype(np.uint8)
    canvas.owner[...] = canvas.new_shape()


_DRAW: dict[str, Callable[[_Canvas, np.random.Generator], None]] = {
    "lines": _draw_lines,
    "polygon": _draw_polygon,
    "multiple_polygons": _draw_multiple_polygons,
    "ellipses": _draw_ellipses,
    "star": _draw_star,
    "checkerboard": _draw_checkerboard,
    "stripes": _draw_stripes,
    "cube": _draw_cube,
    "gaussian_noise": _draw_gaussian_noise,
}


# ----------------------------------------------------------------------------------------------
# Public API


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise Error(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def render(primitive: str, rng: np.random.Generator,
           config: SyntheticShapesConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of ``primitive`` on a random background.

    Returns ``image`` uint8 (H, W) = ``config.image_size`` and ``corners`` float32 (N, 2), the
    visible corners as (x, y) output pixels (OpenCV pixel-centre convention), each inside
    [-0.5, W - 0.5) x [-0.5, H - 0.5) so that ``floor(x + 0.5)`` is a valid column. Photometric
    augmentation is applied when ``config.augmentation.enable``. Deterministic for a given ``rng``
    state. Raises ``cvdeep.Error`` for an unknown primitive or a non-Generator ``rng``.
    """
    config = config or SyntheticShapesConfig()
    if primitive not in _DRAW:
        raise Error(f"unknown primitive {primitive!r}; expected one of {PRIMITIVES}")
    _check_rng(rng)
    height, width = (int(v) for v in config.image_size)
    factor = int(config.supersample)
    canvas = _Canvas(np.zeros((height * factor, width * factor), np.uint8))
    _draw_background(canvas, rng, config)
    _DRAW[primitive](canvas, rng)
    corners = canvas.visible_corners(config.occlusion_radius * factor)
    image = canvas.image
    if config.blur_sigma > 0:
        sigma = config.blur_sigma * factor
        size = 2 * math.ceil(3 * sigma) + 1
        image = cv2.GaussianBlur(image, (size, size), sigma)
    if factor > 1:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    corners = (corners + 0.5) / factor - 0.5
    if config.augmentation.enable:
        image = photometric_augmentation(image, rng, config.augmentation)
    return np.ascontiguousarray(image), corners.astype(np.float32)


def generate(rng: np.random.Generator,
             config: SyntheticShapesConfig | None = None) -> tuple[str, np.ndarray, np.ndarray]:
    """Sample a primitive with ``config``'s probabilities and ``render`` it: (primitive, image, corners)."""
    config = config or SyntheticShapesConfig()
    _check_rng(rng)
    primitive = str(rng.choice(list(config.primitives), p=config.primitive_probabilities()))
    image, corners = render(primitive, rng, config)
    return primitive, image, corners


def photometric_augmentation(image: np.ndarray, rng: np.random.Generator,
                             config: PhotometricConfig | None = None) -> np.ndarray:
    """Brightness, contrast, additive Gaussian noise, speckle noise, shading and motion blur on a
    uint8 (H, W) image, in a random order when ``config.random_order``; returns uint8 (H, W).
    Ranges from rpautrat's ``magic-point_shapes.yaml`` (see ``PhotometricConfig``)."""
    config = config or PhotometricConfig(enable=True)
    _check_rng(rng)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        raise Error(f"image must be a uint8 (H, W) array, got {getattr(image, 'shape', type(image))}")
    x = image.astype(np.float32)

    def brightness(x: np.ndarray) -> np.ndarray:
        return x + rng.uniform(-config.brightness, config.brightness)

    def contrast(x: np.ndarray) -> np.ndarray:
        mean = x.mean()
        return (x - mean) * rng.uniform(*config.contrast) + mean

    def gaussian(x: np.ndarray) -> np.ndarray:
        return x + rng.normal(0.0, rng.uniform(*config.gaussian_noise), size=x.shape).astype(np.float32)

    def speckle(x: np.ndarray) -> np.ndarray:
        p, u = rng.uniform(*config.speckle), rng.random(x.shape)
        return np.where(u <= p, 0.0, np.where(u >= 1.0 - p, 255.0, x)).astype(np.float32)

    def shade(x: np.ndarray) -> np.ndarray:
        h, w = x.shape
        quarter = min(h, w) / 4
        mask = np.zeros((h, w), np.float32)
        for _ in range(20):
            ax, ay = (max(rng.random() * quarter, quarter / 5) for _ in range(2))
            r = max(ax, ay)
            center = (round(rng.uniform(r, max(r, w - r))), round(rng.uniform(r, max(r, h - r))))
            cv2.ellipse(mask, center, (int(ax), int(ay)), rng.random() * 90, 0, 360, 255.0, -1)
        kernel = int(rng.integers(*config.shade_kernel)) | 1
        blurred = cv2.GaussianBlur(mask, (kernel, kernel), 0)
        return x * (1.0 - rng.uniform(*config.shade_transparency) * blurred / 255.0)

    def motion(x: np.ndarray) -> np.ndarray:
        size = int(rng.integers(0, (config.motion_blur + 1) // 2)) * 2 + 1
        if size == 1:
            return x
        center = size // 2
        mode = int(rng.integers(4))
        kernel = np.zeros((size, size), np.float32)
        if mode == 0:
            kernel[center, :] = 1
        elif mode == 1:
            kernel[:, center] = 1
        elif mode == 2:
            kernel = np.eye(size, dtype=np.float32)
        else:
            kernel = np.flipud(np.eye(size, dtype=np.float32)).copy()
        grid = np.arange(size) - center
        kernel *= np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * size * size / 16)).astype(np.float32)
        return cv2.filter2D(x, -1, kernel / kernel.sum())

    steps = [brightness, contrast, gaussian, speckle, shade, motion]
    order = rng.permutation(len(steps)) if config.random_order else range(len(steps))
    for index in order:
        x = np.clip(steps[index](x), 0, 255)
    return np.round(x).astype(np.uint8)


def warp_sample(image: np.ndarray, corners: np.ndarray, homography: np.ndarray | torch.Tensor,
                border_margin: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Homographic augmentation with a given homography (3x3, image pixel (x, y) -> warped pixel).

    Returns the warped uint8 (H, W) image (same size, bilinear), the warped corners float32 (N, 2)
    that land inside the image, and the bool (H, W) valid mask of pixels that saw the source image,
    eroded by ``border_margin`` pixels (rpautrat's ``valid_border_margin``, 2 for MagicPoint).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        raise Error(f"image must be a uint8 (H, W) array, got {getattr(image, 'shape', type(image))}")
    matrix = np.asarray(homography.detach().cpu() if isinstance(homography, torch.Tensor) else homography, np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise Error(f"homography must be a finite 3x3 matrix, got shape {matrix.shape}")
    corners = np.asarray(corners, np.float64).reshape(-1, 2)
    h, w = image.shape
    warped = cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.warpPerspective(np.ones((h, w), np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    if border_margin > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border_margin + 1,) * 2)
        valid = cv2.erode(valid, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    moved = _warp_points(matrix, corners) if len(corners) else corners
    inside = (moved[:, 0] >= -0.5) & (moved[:, 0] < w - 0.5) & (moved[:, 1] >= -0.5) & (moved[:, 1] < h - 0.5)
    return warped, moved[inside].astype(np.float32), valid.astype(bool)


# ----------------------------------------------------------------------------------------------
# Cached dataset on disk


def _config_key(config: SyntheticShapesConfig, primitive: str, seed: int, count: int) -> str:
    payload = json.dumps({"config": asdict(config), "primitive": primitive, "seed": seed, "count": count,
                          "version": _FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _shard_key(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as shard:
            return str(shard["key"])
    except (OSError, ValueError, KeyError):
        return None


def write_dataset(directory: str | Path, n_per_primitive: int, seed: int, config: SyntheticShapesConfig | None = None,
                  shard_size: int = 1000) -> list[Path]:
    """Render ``n_per_primitive`` images of every primitive of ``config`` into npz shards.

    Each shard ``<primitive>-<k:04d>.npz`` holds ``images`` uint8 (n, H, W), ``corners`` float32
    (M, 2) (all images' corners concatenated), ``offsets`` int64 (n + 1,) (image i owns
    ``corners[offsets[i]:offsets[i + 1]]``) and ``key``, a hash of the configuration, primitive,
    seed and count. A shard whose key matches is not rendered again (the cache). Primitive p uses
    the stream ``np.random.default_rng([seed, PRIMITIVES.index(p)])``, so a primitive's images do
    not depend on which other primitives are written. Photometric augmentation is never baked in
    (apply it when loading). Returns the shard paths.
    """
    config = config or SyntheticShapesConfig()
    if int(n_per_primitive) < 1 or int(shard_size) < 1:
        raise Error(f"n_per_primitive and shard_size must be positive, got {n_per_primitive}, {shard_size}")
    if config.augmentation.enable:
        config = replace(config, augmentation=PhotometricConfig(enable=False))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for primitive in config.primitives:
        key = _config_key(config, primitive, int(seed), int(n_per_primitive))
        shard_paths = [directory / f"{primitive}-{k:04d}.npz" for k in range(math.ceil(n_per_primitive / shard_size))]
        if all(_shard_key(p) == key for p in shard_paths):
            paths.extend(shard_paths)
            continue
        rng = np.random.default_rng([int(seed), PRIMITIVES.index(primitive)])
        for k, path in enumerate(shard_paths):
            count = min(shard_size, n_per_primitive - k * shard_size)
            images, corners, offsets = [], [], [0]
            for _ in range(count):
                image, points = render(primitive, rng, config)
                images.append(image)
                corners.append(points)
                offsets.append(offsets[-1] + len(points))
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, images=np.stack(images), corners=np.concatenate(corners).reshape(-1, 2),
                                offsets=np.asarray(offsets, np.int64), key=np.array(key))
            tmp.replace(path)
            paths.append(path)
    return paths


class SyntheticShapesDataset(torch.utils.data.Dataset):
    """The shards of ``write_dataset`` in memory, as a torch dataset.

    Item i is a dict: ``image`` float32 (1, H, W) in [0, 1], ``keypoints`` float32 (N, 2) (x, y),
    ``keypoint_map`` bool (H, W) (each corner at its nearest pixel) and ``valid`` bool (H, W) (all
    true). With ``augmentation`` enabled, item i is photometrically augmented with the stream
    ``default_rng([seed, i, epoch])``; set ``dataset.epoch`` to vary it between epochs.
    """

    def __init__(self, paths: Sequence[str | Path], augmentation: PhotometricConfig | None = None,
                 seed: int = 0) -> None:
        if not paths:
            raise Error("paths is empty; pass the list that write_dataset returns")
        images: list[np.ndarray] = []
        corners: list[np.ndarray] = []
        for path in paths:
            with np.load(path) as shard:
                offsets = shard["offsets"]
                images.append(shard["images"])
                corners.extend(shard["corners"][offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1))
        self.images = np.concatenate(images)
        self.corners = corners
        self.augmentation = augmentation
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.images[index]
        if self.augmentation is not None and self.augmentation.enable:
            rng = np.random.default_rng([self.seed, int(index), self.epoch])
            image = photometric_augmentation(image, rng, self.augmentation)
        h, w = image.shape
        points = torch.from_numpy(np.asarray(self.corners[index], np.float32)).reshape(-1, 2)
        keypoint_map = torch.zeros((h, w), dtype=torch.bool)
        if len(points):
            cols = torch.floor(points[:, 0] + 0.5).long().clamp(0, w - 1)
            rows = torch.floor(points[:, 1] + 0.5).long().clamp(0, h - 1)
            keypoint_map[rows, cols] = True
        return {
            "image": torch.from_numpy(image.astype(np.float32) / 255.0)[None],
            "keypoints": points,
            "keypoint_map": keypoint_map,
            "valid": torch.ones((h, w), dtype=torch.bool),
        }
