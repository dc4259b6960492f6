"""Batched inference for lists of images: ``Feature2D.setBatchSize(n)`` then ``detect(images)`` or
``detectAndCompute(images)``.

The images are converted as one by one (colour, [0, 1], padding to the family's stride) and
grouped by that padded network size; each group runs through ``Extractor.extract_batch`` in
chunks of at most ``n`` images (XFeat, DISK and ALIKED run their network once per chunk and
post-process per image; other extractors loop). Every image keeps its own validity mask
(real image, ``border``, the user's mask), so the results are those of the one-by-one path.

``mixed_sizes="pad"`` also batches images of different sizes: a chunk is padded (bottom/right,
replicated) to its largest image and each image's mask excludes the padding, and keypoints are
read back in the image's own pixels. The networks see more replicated border then, and their
per-image statistics (DISK's and XFeat's instance normalisation, ALIKED's size-dependent
upsampling and offset clamping) see the padded canvas, so results differ from one by one.
Measured on four real crops of 640x480, 600x400, 560x400 and 700x482 padded to 704x512 (1024
keypoints): the share of one-by-one keypoints found again within 0.1 px is 0.86-0.94 for XFeat,
0.78-0.91 for DISK, and for ALIKED, whose every sub-pixel position moves (median 0.12 px), 0.43-0.46
within 0.1 px and 0.86-0.95 within 1 px; the largest image, unpadded, is unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from . import image as imageio
from .errors import Error
from .keypoints import to_cv_keypoints

if TYPE_CHECKING:
    from .feature2d import Feature2D

MIXED_SIZES = ("group", "pad")

Result = tuple[tuple[Any, ...], "np.ndarray | None"]


def check_batch_size(batch_size: Any, mixed_sizes: Any) -> tuple[int, str]:
    """Validated (batch_size >= 1, mixed_sizes in MIXED_SIZES), or ``Error``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise Error(f"setBatchSize: batch_size got {batch_size!r}; expected an integer >= 1 (1: one image at a time)")
    if mixed_sizes not in MIXED_SIZES:
        raise Error(f"setBatchSize: mixed_sizes got {mixed_sizes!r}; expected 'group' (only images of one size share "
                    "a batch: results as one by one) or 'pad' (pad to a common size)")
    return int(batch_size), str(mixed_sizes)


def chunks(sizes: Sequence[tuple[int, int]], batch_size: int, mixed_sizes: str) -> list[list[int]]:
    """Indices of the images run together: groups of one padded size (in first-seen order), or all images
    in input order when padding, cut into pieces of at most ``batch_size``."""
    if mixed_sizes == "pad":
        groups = [list(range(len(sizes)))]
    else:
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            by_size.setdefault(size, []).append(index)
        groups = list(by_size.values())
    return [group[start : start + batch_size] for group in groups for start in range(0, len(group), batch_size)]


def detect_and_compute_list(feature2d: Feature2D, images: Sequence[Any], masks: Sequence[Any],
                            describe: bool) -> list[Result]:
    """``(keypoints, descriptors)`` of every image, the network run on batches of ``getBatchSize()``
    images; descriptors are None when not ``describe`` or when an image has no keypoint."""
    checked = [imageio.check_image(image, f"images[{i}]") for i, image in enumerate(images)]
    user_masks = [imageio.check_mask(mask, image.shape, f"masks[{i}]")
                  for i, (image, mask) in enumerate(zip(checked, masks))]
    batch_size, mixed_sizes = feature2d.getBatchSize(), feature2d._mixed_sizes
    if batch_size == 1:
        return [feature2d._detect_and_compute(image, mask, describe) for image, mask in zip(checked, user_masks)]
    extractor = feature2d._load()
    tensors = [feature2d._network_input(image) for image in checked]
    results: list[Result] = [((), None)] * len(checked)
    for chunk in chunks([(t.shape[-2], t.shape[-1]) for t in tensors], batch_size, mixed_sizes):
        height = max(tensors[i].shape[-2] for i in chunk)
        width = max(tensors[i].shape[-1] for i in chunk)
        batch = torch.cat([_pad_to(tensors[i], height, width) for i in chunk])
        valid = torch.cat([feature2d._valid_mask(feature2d._valid_pixels(checked[i], user_masks[i]), (height, width))
                           for i in chunk])
        with torch.inference_mode(), feature2d._precision(batch.device):
            features = extractor.extract_batch(batch, valid, feature2d._config)
        for position, index in enumerate(chunk):
            arrays, desc = feature2d._to_arrays(features[position], extractor, valid[position, 0])
            if len(arrays):
                results[index] = (to_cv_keypoints(arrays), desc if describe else None)
    return results


def _pad_to(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(1, C, h, w) padded at the bottom and right, replicating the border, to (1, C, height, width)."""
    pad_h, pad_w = height - tensor.shape[-2], width - tensor.shape[-1]
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else tensor
