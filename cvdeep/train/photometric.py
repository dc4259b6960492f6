"""Random photometric changes of uint8 images, for synthetic training views.

``augment(image, rng, config)`` applies, in this fixed order, each change with its own
probability: gamma, contrast, brightness, additive Gaussian noise, Gaussian blur, motion
blur, JPEG re-compression. Every parameter is drawn uniformly in its range. Gray (H, W)
and colour (H, W, C) uint8 images are accepted and returned with the same shape.

The defaults follow the photometric augmentation of SuperPoint's COCO training
(brightness change up to 50 gray levels, contrast factor 0.5..1.5, noise deviation up to
10 levels, small motion blur), each applied with probability 0.5 rather than always, so
that a fair share of views keeps the clean appearance that evaluation images have; gamma,
Gaussian blur and JPEG, which SuperPoint does not use, are added with smaller
probabilities because real image pairs differ by exposure curves, focus and compression.

Sources read for facts (no code copied): rpautrat/SuperPoint (MIT licence),
``superpoint/datasets/utils/photometric_augmentation.py`` (the list of primitives) and
``superpoint/configs/superpoint_coco.yaml`` (their parameter ranges).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

from ..errors import Error

# Per range: lowest allowed value, whether it is allowed itself, highest allowed value (None: unbounded).
_RANGE_LIMITS = {
    "gamma": (0.0, False, None),
    "contrast": (0.0, True, None),
    "brightness": (-255.0, True, 255.0),
    "noise_std": (0.0, True, 255.0),
    "blur_sigma": (0.0, True, 50.0),
    "motion_blur": (1.0, True, 101.0),
    "jpeg_quality": (1.0, True, 100.0),
}


@dataclass(frozen=True)
class PhotometricConfig:
    """Ranges (uniform draws) and probabilities of each photometric change."""

    gamma: tuple[float, float] = (0.7, 1.4)
    """Exponent of ``255 (I / 255) ** gamma``."""
    gamma_p: float = 0.3
    contrast: tuple[float, float] = (0.5, 1.5)
    """Factor scaling the deviations from the image mean."""
    contrast_p: float = 0.5
    brightness: tuple[float, float] = (-50.0, 50.0)
    """Gray levels added."""
    brightness_p: float = 0.5
    noise_std: tuple[float, float] = (0.0, 10.0)
    """Standard deviation (gray levels) of additive Gaussian noise, independent per pixel."""
    noise_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    """Gaussian blur sigma in pixels."""
    blur_p: float = 0.2
    motion_blur: tuple[float, float] = (3.0, 7.0)
    """Length in pixels of a straight motion-blur kernel (rounded to an odd size) at a uniform
    random direction."""
    motion_blur_p: float = 0.2
    jpeg_quality: tuple[float, float] = (40.0, 95.0)
    """JPEG quality of a re-compression (rounded to an integer)."""
    jpeg_p: float = 0.2

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_p"):
                if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    raise Error(f"PhotometricConfig.{item.name}: got {value!r}; expected a probability in [0, 1]")
                continue
            low, low_inclusive, high = _RANGE_LIMITS[item.name]
            try:
                pair = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                pair = ()
            ok = len(pair) == 2 and all(math.isfinite(v) for v in pair) and pair[0] <= pair[1]
            ok = ok and (pair[0] >= low if low_inclusive else pair[0] > low) and (high is None or pair[1] <= high)
            if not ok:
                accepted = f"(low, high) with {low:g} {'<=' if low_inclusive else '<'} low <= high"
                accepted += "" if high is None else f" <= {high:g}"
                raise Error(f"PhotometricConfig.{item.name}: got {value!r}; expected {accepted}")
            object.__setattr__(self, item.name, pair)

    @classmethod
    def disabled(cls) -> PhotometricConfig:
        """A configuration that changes nothing (every probability 0)."""
        return cls(gamma_p=0.0, contrast_p=0.0, brightness_p=0.0, noise_p=0.0, blur_p=0.0, motion_blur_p=0.0,
                   jpeg_p=0.0)


def _motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised (length, length) kernel: a segment of ``length`` px through the centre at
    ``angle_deg``, splatted bilinearly from closely spaced samples."""
    centre = (length - 1) / 2.0
    steps = np.linspace(-centre, centre, 8 * length)
    x = centre + steps * math.cos(math.radians(angle_deg))
    y = centre + steps * math.sin(math.radians(angle_deg))
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    kernel = np.zeros((length + 1, length + 1), np.float64)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), weight)
    kernel = kernel[:length, :length]
    return (kernel / kernel.sum()).astype(np.float32)


def augment(image: np.ndarray, rng: np.random.Generator, config: PhotometricConfig | None = None) -> np.ndarray:
    """A photometrically changed copy of a uint8 image (H, W) or (H, W, C); see the module docstring.

    Deterministic for a given generator state. ``cvdeep.Error`` for a non-uint8 or empty image.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        desc = (f"an array of shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise Error(f"augment: got {desc}; expected a non-empty uint8 (H, W) or (H, W, C) image")
    if not isinstance(rng, np.random.Generator):
        raise Error(f"augment: rng got {type(rng).__name__}; expected a numpy.random.Generator")
    config = PhotometricConfig() if config is None else config
    if not isinstance(config, PhotometricConfig):
        raise Error(f"augment: config got {type(config).__name__}; expected a PhotometricConfig")

    def draw(probability: float, bounds: tuple[float, float]) -> float | None:
        return float(rng.uniform(*bounds)) if rng.random() < probability else None

    out: np.ndarray = image.astype(np.float32)
    gamma = draw(config.gamma_p, config.gamma)
    if gamma is not None:
        out = 255.0 * np.power(np.clip(out, 0, 255) / 255.0, gamma)
    contrast = draw(config.contrast_p, config.contrast)
    if contrast is not None:
        mean = out.mean()
        out = (out - mean) * contrast + mean
    brightness = draw(config.brightness_p, config.brightness)
    if brightness is not None:
        out = out + brightness
    noise = draw(config.noise_p, config.noise_std)
    if noise is not None and noise > 0:
        out = out + rng.standard_normal(out.shape, dtype=np.float32) * noise
    out = np.clip(out, 0, 255)
    sigma = draw(config.blur_p, config.blur_sigma)
    if sigma is not None and sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    length = draw(config.motion_blur_p, config.motion_blur)
    if length is not None:
        size = int(round(length)) | 1  # odd
        direction = float(rng.uniform(0.0, 180.0))
        if size > 1:
            out = cv2.filter2D(out, -1, _motion_kernel(size, direction), borderType=cv2.BORDER_REFLECT_101)
    result: np.ndarray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    quality = draw(config.jpeg_p, config.jpeg_quality)
    if quality is not None:
        ok, encoded = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, int(round(quality))])
        if ok:
            decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
            assert decoded is not None  # a JPEG cv2.imencode has just written decodes
            result = decoded.reshape(image.shape)
    return result
