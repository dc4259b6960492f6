"""Validation and conversion of what users pass in: images, masks and keypoint lists.

Everything here mirrors what ``cv2.SIFT`` accepts, and turns everything else into a
``cvdeep.Error`` that names the offending value and the accepted forms. ``read_image``
and ``limit_size`` are the one image reader of the applications and the benchmark.

Importing this module does not import torch (``cvdeep.ONNXFeature2D`` runs without it): only
``to_tensor`` and ``pad_to_multiple`` need it, and import it when called.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .errors import Error

if TYPE_CHECKING:
    import torch

_ACCEPTED_IMAGES = ("a uint8 numpy array of shape (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA, "
                    "as cv2.imread returns")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if value is None:
        return "None (cv2.imread returns None when it cannot read a file)"
    return f"an object of type {type(value).__name__}"


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` as an (H, W) or (H, W, C) uint8 array, or raise ``Error``."""
    if not isinstance(image, np.ndarray):
        raise Error(f"{name}: got {_describe(image)}; expected {_ACCEPTED_IMAGES}")
    if image.dtype != np.uint8:
        raise Error(
            f"{name}: got {_describe(image)}; expected 8-bit data, {_ACCEPTED_IMAGES}; "
            "convert e.g. with cv2.normalize(img, None, 0, 255, "
            "cv2.NORM_MINMAX, dtype=cv2.CV_8U)"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise Error(f"{name}: got {_describe(image)}; expected {_ACCEPTED_IMAGES}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise Error(f"{name}: got an empty image of shape {image.shape}; expected at least 1 x 1 pixels")
    return image


def check_mask(mask: Any, image_shape: tuple[int, ...], name: str = "mask") -> np.ndarray | None:
    """Return the mask as an (H, W) bool array (``None`` stays ``None``), or raise ``Error``."""
    if mask is None:
        return None
    height, width = image_shape[:2]
    accepted = (f"None or a uint8 (or bool) array of shape ({height}, {width}) matching the image, "
                "non-zero where features may be found")
    if not isinstance(mask, np.ndarray):
        raise Error(f"{name}: got {_describe(mask)}; expected {accepted}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.dtype not in (np.uint8, np.bool_) or mask.shape != (height, width):
        raise Error(f"{name}: got {_describe(mask)}; expected {accepted}")
    return mask.astype(bool, copy=False)


def check_keypoints(keypoints: Any, name: str = "keypoints") -> tuple[cv2.KeyPoint, ...]:
    """Return keypoints as a tuple of ``cv2.KeyPoint``, or raise ``Error``."""
    if keypoints is None:
        return ()
    try:
        keypoints = tuple(keypoints)
    except TypeError:
        raise Error(f"{name}: got {_describe(keypoints)}; expected a sequence of cv2.KeyPoint") from None
    for kp in keypoints:
        if not isinstance(kp, cv2.KeyPoint):
            raise Error(f"{name}: got an element of type {type(kp).__name__}; expected a sequence of cv2.KeyPoint")
    return keypoints


# The list forms and input checks below are shared by ``Feature2D`` (torch) and ``ONNXFeature2D``
# and ``ONNXLightGlue`` (no torch), which is why they live in this torch-free module.


def per_image(values: Any, count: int, what: str) -> Sequence[Any]:
    """``values`` for a list of ``count`` images: None (one None each) or a list of ``count``, as cv2's
    list forms of ``detect``/``detectAndCompute`` take masks; else ``Error``."""
    if values is None:
        return [None] * count
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise Error(f"{what}: with a list of {count} images, give None or a list of {count} {what}")
    return values


def compute_contract(compute: Callable[[Any, Any], tuple[Any, Any]],
                     compute_checked: Callable[[np.ndarray, tuple[cv2.KeyPoint, ...]], tuple[Any, Any]],
                     image: Any, keypoints: Any) -> tuple[Any, Any]:
    """cv2's ``compute(image, keypoints)`` around ``compute_checked(img, kps)``, which gets a checked
    image and a non-empty keypoint tuple: the list form (``compute`` once per image, so an override
    is honoured), the input checks, and ``((), None)`` for no keypoints."""
    if isinstance(image, (list, tuple)):
        if not isinstance(keypoints, (list, tuple)) or len(keypoints) != len(image):
            raise Error("compute: with a list of images, keypoints must be a list of the same length")
        results = [compute(img, kps) for img, kps in zip(image, keypoints)]
        return [r[0] for r in results], [r[1] for r in results]
    img = check_image(image)
    kps = check_keypoints(keypoints)
    if not kps:
        return (), None
    return compute_checked(img, kps)


def parse_size(size: Any) -> tuple[int, int] | None:
    """``(width, height)`` when ``size`` is two positive integers (cv2.Size order; integral floats
    pass), else None: callers word their own ``Error``."""
    try:
        width, height = (int(v) for v in size)
        ok = width > 0 and height > 0 and all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        ok = False
    return (width, height) if ok else None


def check_size(size: Any, name: str) -> tuple[int, int]:
    """An image size ``(width, height)`` given to a matcher, or ``Error``; a NumPy image shape
    (height first) is a common mistake, so the message says how to get the size from an image."""
    parsed = parse_size(size)
    if parsed is None:
        raise Error(f"{name}: got {size!r}; expected the image size as (width, height) in pixels, "
                    "two positive integers (cv2.Size order, i.e. image.shape[1::-1])")
    return parsed


def no_descriptors(descriptors: Any) -> bool:
    """``None`` or an array without rows: what ``detectAndCompute`` gives for an image without keypoints."""
    if descriptors is None:
        return True
    shape = getattr(descriptors, "shape", None)
    return shape is not None and len(shape) >= 1 and shape[0] == 0


_LUMINANCE_RGB = (0.299, 0.587, 0.114)  # ITU-R 601


def to_tensor(image: np.ndarray, channels: int, device: torch.device, gray: str = "luminance") -> torch.Tensor:
    """uint8 gray/BGR/BGRA array -> float32 (1, channels, H, W) tensor in [0, 1] (RGB order when 3).

    A colour image becomes gray (``channels == 1``) by ``gray``: ``"luminance"``
    (``cv2.COLOR_BGR2GRAY``, rounded to uint8 as OpenCV does), ``"luminance_float"``
    (0.299 R + 0.587 G + 0.114 B of the image in [0, 1], not rounded) or ``"mean"`` (the
    float average of B, G and R, as XFeat's authors feed their network). An alpha channel
    is ignored. The values are ``to_array``'s, so the torch and ONNX paths see the same input.
    """
    import torch

    return torch.from_numpy(np.ascontiguousarray(to_array(image, channels, gray))).to(device)


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (bottom and right, replicating the border) so H and W are multiples of ``multiple``."""
    import torch.nn.functional as F

    height, width = tensor.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return tensor
    mode = "replicate" if tensor.is_floating_point() else "constant"
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode=mode)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image file at ``path`` as BGR uint8 (grey files replicated to three channels).

    ``cvdeep.Error`` naming the path when it does not exist, is a directory or is not an
    image OpenCV can decode.
    """
    path = Path(path)
    if not path.exists():
        raise Error(f"{path}: no such file")
    if path.is_dir():
        raise Error(f"{path}: is a directory; expected an image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise Error(f"{path}: not an image OpenCV can read (jpg, png, ppm, pgm, tif, bmp, webp, ...)")
    return image


def scaling_matrix(scale_x: float, scale_y: float) -> np.ndarray:
    """Homography of a resize by (scale_x, scale_y), pixel centres at integer coordinates."""
    return np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])


def limit_size(image: np.ndarray, max_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``image`` downscaled (``cv2.INTER_AREA``) so its longest side is at most ``max_size``
    pixels (``None``: unchanged), and the homography from its pixels to the returned ones."""
    if max_size is not None and max_size <= 0:
        raise Error(f"max_size must be a positive number of pixels; got {max_size}")
    height, width = image.shape[:2]
    if max_size is None or max(height, width) <= max_size:
        return image, np.eye(3)
    scale = max_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return resized, scaling_matrix(size[0] / width, size[1] / height)


def to_array(image: np.ndarray, channels: int, gray: str = "luminance") -> np.ndarray:
    """``to_tensor`` in NumPy: uint8 gray/BGR/BGRA (H, W[, C]) -> float32 (1, channels, H, W) in [0, 1],
    RGB order when 3 channels, colour made gray by ``gray`` the same way (the values are identical)."""
    if channels == 1:
        if image.ndim == 3 and gray == "mean":
            colour = image.astype(np.float32)
            total = colour[:, :, 0] + colour[:, :, 1]  # exact whatever the order (integers below 2^24);
            total += colour[:, :, 2]  # faster than .sum(axis=2) over 3 values
            return (total / np.float32(3.0) / np.float32(255.0))[None, None]
        if image.ndim == 3 and gray == "luminance_float":
            rgb = image[:, :, 2::-1].astype(np.float32) / np.float32(255.0)
            return (rgb * np.asarray(_LUMINANCE_RGB, np.float32)).sum(axis=2)[None, None]
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        array = image[None]
    elif channels == 3:
        if image.ndim == 2:
            array = np.broadcast_to(image[None], (3, *image.shape))
        else:
            array = image[:, :, 2::-1].transpose(2, 0, 1)
    else:
        raise ValueError(f"networks take 1 or 3 channels, not {channels}")
    return (array.astype(np.float32) / np.float32(255.0))[None]


FLAT_RADIUS = 2
"""A pixel is flat when its (2r+1) x (2r+1) neighbourhood (clipped to the image) holds one value."""


def flat_pixels(image: np.ndarray, radius: int = FLAT_RADIUS) -> np.ndarray:
    """(H, W) bool: True where the image is constant over the pixel's (2r+1)^2 neighbourhood in
    every colour channel (alpha ignored): zero image gradient, no image structure to detect."""
    colour = image[:, :, :3] if image.ndim == 3 else image
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    # outside the image counts as neither larger nor smaller (OpenCV's default border for both)
    same = cv2.dilate(colour, kernel) == cv2.erode(colour, kernel)
    if same.ndim == 2:
        return same
    flat = same[:, :, 0].copy()
    for channel in range(1, same.shape[2]):  # faster than .all(axis=2) over 3 values
        flat &= same[:, :, channel]
    return flat
