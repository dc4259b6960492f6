"""Patch correspondences labelled by a known homography, for training patch descriptors.

The self-supervised recipe (the synthetic counterpart of the Brown / HPatches patch
datasets the published descriptors were trained on):

1. a photo is turned gray and shrunk so its long side is at most ``max_side``;
2. a detector (``detector``, default SIFT, any name ``cvdeep.features.create`` accepts)
   finds keypoints on it, the *reference view*. Keypoints whose patch does not fit in
   the image are dropped, then, strongest first, every keypoint closer than
   ``min_keypoint_distance`` px to a stronger kept one, and the ``keypoints_per_image``
   strongest remain;
3. ``views_per_point - 1`` random homographies (``cvdeep.train.homography``) warp the
   photo into the other views. Each keypoint is mapped into every view: position through
   ``H``, size times ``sqrt|det J|`` and angle turned by the rotation closest to the
   Jacobian ``J`` (``warp_keypoints``), optionally jittered to imitate detector noise;
4. a point is kept when its patch lies inside every view and, in the warped views, inside
   the area that sees the photo; each patch is cut by ``cvdeep.ops.extract_patches`` -- the
   operator inference uses -- with side ``scale_factor x size`` and rotated by the angle;
5. steps 3--4 repeat ``homographies_per_image`` times with fresh homographies (rows of the
   same keypoint share its ``point_id``).

Photometric changes (``cvdeep.train.photometric``) are applied to every warped view after
warping and, with ``augment_reference`` (default), independently to the reference view
too, so that neither side of a pair is systematically clean (the detector always runs on
the clean photo). Keypoints without an orientation (angle -1, e.g. from a detector that
estimates none) are cut upright in the reference view and, in the warped views, turned by
the homography's local rotation, so both patches show the same upright content; the
stored keypoints record the angle each patch was cut with.

Randomness: image ``i`` of ``image_paths`` draws from ``np.random.default_rng([seed, i])``,
so the data depend on the seed and the file list, not on the worker count or order.

Sources read for facts (no code copied): rpautrat/SuperPoint (MIT licence), for the
homography sampling (see ``cvdeep.train.homography``); the patch geometry is cvdeep's own
(``cvdeep.nets.patch_descriptor.SIFT_SCALE_FACTOR``).
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

import cv2
import numpy as np
import torch

from ..errors import Error
from ..keypoints import KeypointArrays, from_cv_keypoints
from ..nets.patch_descriptor import SIFT_SCALE_FACTOR
from ..ops.patches import extract_patches
from .homography import (
    NO_ANGLE,
    HomographyConfig,
    affine_rotation_deg,
    check_homography,
    local_affine,
    sample_homography,
    warp_image,
    warp_keypoints,
)
from .photometric import PhotometricConfig, augment

FORMAT_VERSION = 1
"""Version of the saved ``PatchPairs`` layout; a file of another version is rebuilt by ``cached_patch_pairs``."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings (case-insensitive) that ``image_files`` lists."""


def default_pair_homography() -> HomographyConfig:
    """Homographies of the patch pairs: SuperPoint's perspective amplitude (0.2) on the whole
    image (``patch_ratio`` 1), region scale log-uniform in 0.7..1.4 (zoom out as much as in),
    any in-plane angle, and borders allowed (points outside the seen area are dropped)."""
    return HomographyConfig(patch_ratio=1.0, perspective=0.2, scale_range=(0.7, 1.4), max_angle_deg=180.0,
                            translation=True, allow_artifacts=True)


@dataclass(frozen=True)
class PatchPairConfig:
    """How patch pairs are made (see the module docstring for the recipe)."""

    patch_size: int = 32
    """Patch side in pixels (the published descriptors take 32)."""
    scale_factor: float = SIFT_SCALE_FACTOR
    """Patch side in units of ``KeyPoint.size``: 12, the convention of cvdeep's patch descriptors."""
    detector: str = "sift"
    """Any name ``cvdeep.features.create`` accepts ("sift", "orb", "keynet", ...)."""
    detector_params: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments of the detector, as a dict or (name, value) pairs."""
    keypoints_per_image: int = 512
    """At most this many (strongest) keypoints per photo."""
    max_side: int = 640
    """Photos are shrunk (area interpolation) so their long side is at most this; 0 keeps them."""
    min_keypoint_distance: float = 4.0
    """Pixels: a keypoint closer than this to a stronger kept one is dropped (SIFT returns a
    point once per dominant orientation, and neighbours overlap heavily), so no two rows of a
    batch are near-duplicates that a loss would treat as negatives."""
    views_per_point: int = 2
    """Views per row: the reference plus ``views_per_point - 1`` warped views (2 = pairs)."""
    homographies_per_image: int = 1
    """Independent view sets per photo (a keypoint then has several rows, one per set)."""
    augment_reference: bool = True
    """Apply a photometric change to the reference view too (else only to the warped views)."""
    position_jitter: float = 0.0
    """Std of a Gaussian shift of the warped keypoints, in units of their size."""
    scale_jitter: float = 0.0
    """Std of a Gaussian change of log size of the warped keypoints."""
    angle_jitter_deg: float = 0.0
    """Std in degrees of a Gaussian change of the warped keypoints' angles."""
    homography: HomographyConfig = field(default_factory=default_pair_homography)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)

    def __post_init__(self) -> None:
        params = self.detector_params
        if isinstance(params, dict):
            params = tuple(sorted(params.items()))
        try:
            params = tuple((str(k), v) for k, v in params)
        except (TypeError, ValueError):
            raise Error(f"PatchPairConfig.detector_params: got {self.detector_params!r}; expected a dict of keyword "
                        "arguments of the detector") from None
        object.__setattr__(self, "detector_params", params)
        for name, low in (("patch_size", 2), ("keypoints_per_image", 1), ("views_per_point", 2),
                          ("homographies_per_image", 1), ("max_side", 0)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise Error(f"PatchPairConfig.{name}: got {value!r}; expected an integer >= {low}")
        for name in ("scale_factor",):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise Error(f"PatchPairConfig.{name}: got {value!r}; expected a finite number > 0")
        for name in ("min_keypoint_distance", "position_jitter", "scale_jitter", "angle_jitter_deg"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise Error(f"PatchPairConfig.{name}: got {value!r}; expected a finite number >= 0")
        if not isinstance(self.detector, str) or not self.detector:
            raise Error(f"PatchPairConfig.detector: got {self.detector!r}; expected a feature name such as 'sift'")
        if not isinstance(self.homography, HomographyConfig):
            raise Error(f"PatchPairConfig.homography: got {type(self.homography).__name__}; "
                        "expected a HomographyConfig")
        if not isinstance(self.photometric, PhotometricConfig):
            raise Error(f"PatchPairConfig.photometric: got {type(self.photometric).__name__}; "
                        "expected a PhotometricConfig")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready nested dicts (what saved pairs record)."""
        return json.loads(json.dumps(asdict(self), default=repr))


# ----------------------------------------------------------------------------------------
# The container


@dataclass
class PatchPairs:
    """Corresponding patches: row ``n`` holds ``V`` views of one scene point.

    ``patches`` uint8 (N, V, P, P); ``point_id`` int64 (N,) (rows of the same physical point
    share it, and a batch never holds two of them); ``image_id`` int64 (N,) (index of the
    source photo / sequence); ``keypoints`` optional float32 (N, V, 4): x, y, size, angle the
    patch of each view was cut with, in that view's pixels; ``config`` optional JSON-ready
    dict saying how the rows were made: ``{"config": PatchPairConfig.to_dict(), "seed",
    "files"}`` from ``generate_patch_pairs`` (``cached_patch_pairs`` adds ``format_version``
    and lists files as [relative path, bytes]), ``{"config"}`` from ``pairs_from_homography``,
    ``{"source", ...}`` from the dataset readers.
    """

    patches: np.ndarray
    point_id: np.ndarray
    image_id: np.ndarray
    keypoints: np.ndarray | None = None
    config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        patches = self.patches
        if not isinstance(patches, np.ndarray) or patches.dtype != np.uint8 or patches.ndim != 4 \
                or patches.shape[1] < 2 or patches.shape[2] != patches.shape[3]:
            desc = f"an array of shape {patches.shape} and dtype {patches.dtype}" if isinstance(patches, np.ndarray) \
                else type(patches).__name__
            raise Error(f"PatchPairs.patches: got {desc}; expected uint8 (N, V, P, P) with V >= 2 views")
        count = patches.shape[0]
        self.point_id = np.asarray(self.point_id, dtype=np.int64).reshape(-1)
        self.image_id = np.asarray(self.image_id, dtype=np.int64).reshape(-1)
        if self.point_id.shape != (count,) or self.image_id.shape != (count,):
            raise Error(f"PatchPairs: got {count} rows of patches, {self.point_id.size} point ids and "
                        f"{self.image_id.size} image ids; expected one id of each per row")
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if self.keypoints.shape != (count, patches.shape[1], 4):
                raise Error(f"PatchPairs.keypoints: got shape {self.keypoints.shape}; expected "
                            f"({count}, {patches.shape[1]}, 4) x, y, size, angle per view, or None")

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    @property
    def views(self) -> int:
        """Views per row (V)."""
        return int(self.patches.shape[1])

    @property
    def patch_size(self) -> int:
        """Patch side (P)."""
        return int(self.patches.shape[2])

    @property
    def num_points(self) -> int:
        """Distinct point ids (the points a batch can draw from)."""
        return int(np.unique(self.point_id).size)

    def subset(self, rows: Any) -> PatchPairs:
        """The rows selected by an index array or bool mask (copies)."""
        return PatchPairs(self.patches[rows], self.point_id[rows], self.image_id[rows],
                          None if self.keypoints is None else self.keypoints[rows], self.config)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an uncompressed ``.npz`` (atomically: a temporary file then a rename); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"format_version": FORMAT_VERSION, "config": self.config}, sort_keys=True)
        # arrays only; typed Any because mypy matches **arrays against savez's allow_pickle: bool as well
        arrays: dict[str, Any] = {"patches": self.patches, "point_id": self.point_id, "image_id": self.image_id,
                                  "meta": np.array(meta)}
        if self.keypoints is not None:
            arrays["keypoints"] = self.keypoints
        temporary = target.with_name(target.name + f".tmp{os.getpid()}")
        try:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(temporary, target)
        finally:
            if temporary.exists():
                temporary.unlink()
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> PatchPairs:
        """Read a file written by ``save``; ``cvdeep.Error`` when it is missing, unreadable or of another
        format version."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format_version") != FORMAT_VERSION:
                    raise Error(f"patch pairs file {str(path)!r} has format version {meta.get('format_version')!r}; "
                                f"expected {FORMAT_VERSION} (rebuild it)")
                keypoints = data["keypoints"] if "keypoints" in data.files else None
                return cls(data["patches"], data["point_id"], data["image_id"], keypoints, meta.get("config"))
        except Error:
            raise
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise Error(f"cannot read patch pairs from {str(path)!r} ({exc}); expected an .npz written by "
                        "PatchPairs.save") from None

    def batches(self, batch_size: int, rng: np.random.Generator, flip: bool = False, rot90: bool = False,
                drop_last: bool = True, with_ids: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch of ``(anchor, positive)`` float32 tensors (B, 1, P, P) in [0, 1].

        Every distinct point appears once per epoch, from one of its rows drawn at random, so
        the B points of a batch are distinct. With two views the anchor is view 0 (the
        reference) and the positive view 1; with more, two different views are drawn at
        random per pair. ``flip`` (left-right) and ``rot90`` (k x 90 degrees) are drawn per
        pair and applied identically to both patches. ``drop_last`` drops a last batch
        smaller than ``batch_size``; ``with_ids`` also yields the (B,) int64 point ids.
        ``cvdeep.Error`` when ``batch_size`` exceeds the number of distinct points.
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise Error(f"batches: batch_size got {batch_size!r}; expected an integer >= 1")
        if not isinstance(rng, np.random.Generator):
            raise Error(f"batches: rng got {type(rng).__name__}; expected a numpy.random.Generator")
        order = np.argsort(self.point_id, kind="stable")
        ids, starts, counts = np.unique(self.point_id[order], return_index=True, return_counts=True)
        if batch_size > ids.size:
            raise Error(f"batches: batch_size {batch_size} exceeds the {ids.size} distinct points; expected at most "
                        f"{ids.size} so that the points of a batch are distinct")
        points = rng.permutation(ids.size)
        rows = order[starts[points] + np.floor(rng.random(ids.size) * counts[points]).astype(np.int64)]
        views = self.views
        if views == 2:
            first, second = np.zeros(ids.size, np.int64), np.ones(ids.size, np.int64)
        else:
            first = rng.integers(views, size=ids.size)
            second = (first + rng.integers(1, views, size=ids.size)) % views
        transform = np.zeros(ids.size, np.int64)
        if rot90:
            transform += rng.integers(4, size=ids.size)
        if flip:
            transform += 4 * rng.integers(2, size=ids.size)
        stop = ids.size - ids.size % batch_size if drop_last else ids.size
        for start in range(0, stop, batch_size):
            part = slice(start, start + batch_size)
            anchor = self.patches[rows[part], first[part]]
            positive = self.patches[rows[part], second[part]]
            if rot90 or flip:
                anchor, positive = _transform_pairs(anchor, positive, transform[part])
            tensors = (_to_tensor(anchor), _to_tensor(positive))
            yield (*tensors, torch.from_numpy(self.point_id[rows[part]].copy())) if with_ids else tensors


def _transform_pairs(anchor: np.ndarray, positive: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by (code % 4) x 90 degrees then, for codes >= 4, flip left-right; same for both."""
    anchor, positive = anchor.copy(), positive.copy()
    for code in np.unique(codes):
        if code == 0:
            continue
        chosen = codes == code
        for array in (anchor, positive):
            block = np.rot90(array[chosen], int(code % 4), axes=(1, 2))
            array[chosen] = block[:, :, ::-1] if code >= 4 else block
    return anchor, positive


def _to_tensor(patches: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patches)).unsqueeze(1).float().div_(255.0)


# ----------------------------------------------------------------------------------------
# Keypoints and patches of one photo


def to_gray(image: Any, name: str = "image") -> np.ndarray:
    """A uint8 gray (H, W) copy or view of a uint8 gray / BGR / BGRA image; ``cvdeep.Error`` otherwise."""
    from ..image import check_image

    image = check_image(image, name)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    return image


def keypoint_table(keypoints: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) float64 x, y, size, angle and (N,) responses of keypoints given as a sequence of
    ``cv2.KeyPoint``, a ``cvdeep.keypoints.KeypointArrays``, or an (N, 3) / (N, 4) array of
    x, y, size[, angle] (angle -1 = none; responses 0)."""
    if isinstance(keypoints, KeypointArrays):
        arrays = keypoints
    elif isinstance(keypoints, np.ndarray) and keypoints.dtype != object:
        table = np.asarray(keypoints, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] not in (3, 4):
            raise Error(f"keypoints: got an array of shape {table.shape}; expected (N, 3) x, y, size or (N, 4) "
                        "x, y, size, angle, or a sequence of cv2.KeyPoint")
        if table.shape[1] == 3:
            table = np.c_[table, np.full(len(table), NO_ANGLE)]
        return table, np.zeros(len(table))
    else:
        from ..image import check_keypoints

        arrays = from_cv_keypoints(check_keypoints(keypoints))
    table = np.c_[arrays.xy.astype(np.float64), arrays.size, arrays.angle].reshape(-1, 4)
    return table, arrays.response.astype(np.float64).reshape(-1)


def _patch_corners(table: np.ndarray, scale_factor: float) -> np.ndarray:
    """(N, 4, 2) corners of each keypoint's patch square (side ``scale_factor x size``, turned by its angle)."""
    half = 0.5 * scale_factor * table[:, 2]
    angle = np.where(table[:, 3] == NO_ANGLE, 0.0, np.deg2rad(table[:, 3]))
    cos, sin = np.cos(angle) * half, np.sin(angle) * half
    unit = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    # offset (u, v) of the patch frame -> image offset (cos u - sin v, sin u + cos v)
    dx = unit[:, 0] * cos[:, None] - unit[:, 1] * sin[:, None]
    dy = unit[:, 0] * sin[:, None] + unit[:, 1] * cos[:, None]
    return np.stack((table[:, 0:1] + dx, table[:, 1:2] + dy), axis=-1)


def _inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Whether every point of (N, K, 2) lies on the pixel-centre rectangle [0, W-1] x [0, H-1] (NaN: no)."""
    x, y = points[..., 0], points[..., 1]
    with np.errstate(invalid="ignore"):
        # (N,) for (N, K, 2) points; NumPy's stubs allow a scalar for any input
        return cast(np.ndarray, ((x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)).all(axis=-1))


def _fits(table: np.ndarray, shape: tuple[int, ...], scale_factor: float) -> np.ndarray:
    ok = np.isfinite(table).all(axis=1)
    with np.errstate(invalid="ignore"):
        ok &= table[:, 2] > 0
    ok[ok] = _inside(_patch_corners(table[ok], scale_factor), shape[1], shape[0])
    return ok


def _spread(points: np.ndarray, distance: float, limit: int) -> np.ndarray:
    """Indices (in order) of the greedy selection of ``points`` (N, 2), taken in order, that
    keeps a point only when no kept point lies closer than ``distance``; at most ``limit``."""
    if distance <= 0:
        return np.arange(min(limit, len(points)))
    cells: dict[tuple[int, int], list[int]] = {}
    kept: list[int] = []
    squared = distance * distance
    for index, (x, y) in enumerate(points):
        cx, cy = int(math.floor(x / distance)), int(math.floor(y / distance))
        crowded = False
        for ox in (-1, 0, 1):
            for oy in (-1, 0, 1):
                for other in cells.get((cx + ox, cy + oy), ()):
                    if (points[other, 0] - x) ** 2 + (points[other, 1] - y) ** 2 < squared:
                        crowded = True
                        break
                if crowded:
                    break
            if crowded:
                break
        if crowded:
            continue
        kept.append(index)
        cells.setdefault((cx, cy), []).append(index)
        if len(kept) == limit:
            break
    return np.asarray(kept, dtype=np.int64)


def select_keypoints(keypoints: Any, image_shape: tuple[int, ...], config: PatchPairConfig,
                     limit: int | None = None) -> np.ndarray:
    """The keypoints (any form ``keypoint_table`` accepts) a pair set is built on, as an
    (K, 4) float64 table x, y, size, angle, strongest first: those whose patch fits in an
    image of ``image_shape`` (H, W, ...), thinned to ``config.min_keypoint_distance`` px, at
    most ``limit`` (default ``config.keypoints_per_image``). Equal responses keep the
    detector's order."""
    table, response = keypoint_table(keypoints)
    fits = np.flatnonzero(_fits(table, image_shape, config.scale_factor))
    order = fits[np.argsort(-response[fits], kind="stable")]
    limit = config.keypoints_per_image if limit is None else int(limit)
    chosen = order[_spread(table[order, :2], float(config.min_keypoint_distance), limit)]
    return table[chosen]


def _jitter(table: np.ndarray, rng: np.random.Generator, config: PatchPairConfig) -> np.ndarray:
    out = table.copy()
    count = len(table)
    if config.position_jitter > 0:
        out[:, :2] += rng.normal(0.0, config.position_jitter, (count, 2)) * table[:, 2:3]
    if config.scale_jitter > 0:
        out[:, 2] *= np.exp(rng.normal(0.0, config.scale_jitter, count))
    if config.angle_jitter_deg > 0:
        out[:, 3] = np.mod(out[:, 3] + rng.normal(0.0, config.angle_jitter_deg, count), 360.0)
    return out


def _cut(image: np.ndarray, table: np.ndarray, config: PatchPairConfig) -> np.ndarray:
    """uint8 (N, P, P) patches of a gray uint8 image at the keypoint table (N, 4)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)[None, None]
    keys = torch.from_numpy(table.astype(np.float32))
    with torch.no_grad():
        patches = extract_patches(tensor, keys[:, :2], keys[:, 2], keys[:, 3], config.patch_size, config.scale_factor)
    return patches[:, 0].mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def cut_views(reference: np.ndarray, views: Sequence[np.ndarray], homographies: Sequence[np.ndarray],
              table: np.ndarray, config: PatchPairConfig, rng: np.random.Generator | None = None,
              source_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches of the keypoints ``table`` (N, 4) of the gray ``reference`` and of their images
    in the gray ``views`` (``homographies[v]`` maps reference pixels to view ``v``).

    Returns uint8 patches (n, 1 + len(views), P, P), the int64 indices (n,) of the kept rows of
    ``table`` and float32 keypoints (n, V, 4) as cut. A row is kept when its patch lies inside
    the reference, inside every view, and in every view within the area that sees the
    reference (or ``source_size = (W, H)`` when the views were warped from another image of
    that size). ``rng`` draws the keypoint jitter of ``config`` (none without it).
    """
    height, width = reference.shape[:2]
    src_w, src_h = (width, height) if source_size is None else source_size
    keep = _fits(table, reference.shape, config.scale_factor)
    tables = [table.copy()]
    no_angle = table[:, 3] == NO_ANGLE
    for view, H in zip(views, homographies):
        xy, sizes, angles = warp_keypoints(H, table[:, :2], table[:, 2], table[:, 3])
        if no_angle.any():  # upright in the reference: turn with the homography so both show the same content
            turn = np.mod(affine_rotation_deg(local_affine(H, table[no_angle, :2])), 360.0)
            angles[no_angle] = np.where(turn >= 360.0, 0.0, turn)
        warped = np.c_[xy, sizes, angles]
        if rng is not None:
            warped = _jitter(warped, rng, config)
        keep &= _fits(warped, view.shape, config.scale_factor)
        back = np.full((len(table), 4, 2), np.nan)
        corners = _patch_corners(warped[keep], config.scale_factor)
        inverse = np.linalg.inv(H)
        homogeneous = corners.reshape(-1, 2) @ inverse[:, :2].T + inverse[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            mapped = homogeneous[:, :2] / homogeneous[:, 2:]
        mapped[homogeneous[:, 2] <= 0] = np.nan
        back[keep] = mapped.reshape(-1, 4, 2)
        keep &= _inside(back, src_w, src_h)
        tables.append(warped)
    kept = np.flatnonzero(keep)
    images = [reference, *views]
    patches = np.empty((kept.size, len(images), config.patch_size, config.patch_size), np.uint8)
    keypoints = np.empty((kept.size, len(images), 4), np.float32)
    for v, (image, view_table) in enumerate(zip(images, tables)):
        keypoints[:, v] = view_table[kept]
        if kept.size:
            patches[:, v] = _cut(image, view_table[kept], config)
    return patches, kept, keypoints


def pairs_from_homography(image_a: np.ndarray, image_b: np.ndarray, H: Any, keypoints_a: Any,
                          config: PatchPairConfig | None = None) -> PatchPairs:
    """Patch pairs of ``keypoints_a`` in ``image_a`` and their images under ``H`` (A -> B) in ``image_b``.

    Images: uint8 gray or BGR(A) (converted to gray). ``keypoints_a``: a sequence of
    ``cv2.KeyPoint``, a ``KeypointArrays`` or an (N, 3) / (N, 4) array x, y, size[, angle].
    Each keypoint is mapped through ``H`` (position; size x ``sqrt|det J|``; angle turned by
    the Jacobian's rotation, -1 cut upright in A and turned with ``H`` in B) and kept when its
    patch lies inside A, inside B and within the part of B that sees A. Both patches are cut
    by ``cvdeep.ops.extract_patches`` with ``config.patch_size`` and ``config.scale_factor``
    (no detection, selection, jitter or photometric change happens here).

    Returns ``PatchPairs`` with V = 2, ``point_id`` = index of the keypoint in ``keypoints_a``,
    ``image_id`` 0. ``cvdeep.Error`` for invalid images, homography or keypoints.
    """
    config = PatchPairConfig() if config is None else config
    gray_a, gray_b = to_gray(image_a, "image_a"), to_gray(image_b, "image_b")
    table, _ = keypoint_table(keypoints_a)
    patches, kept, keypoints = cut_views(gray_a, [gray_b], [check_homography(H)], table, config)
    return PatchPairs(patches, kept, np.zeros(kept.size, np.int64), keypoints, {"config": config.to_dict()})


# ----------------------------------------------------------------------------------------
# Generation from photos


_DETECTORS: dict[str, Any] = {}


def detector_for(config: PatchPairConfig) -> Any:
    """The detector of ``config`` (``cvdeep.features.create(config.detector, **config.detector_params)``),
    built once per process and configuration (building a deep one loads weights)."""
    from ..features import create

    key = json.dumps([config.detector, config.detector_params], default=repr)
    if key not in _DETECTORS:
        _DETECTORS[key] = create(config.detector, **dict(config.detector_params))
    return _DETECTORS[key]


def read_training_image(path: str | os.PathLike, max_side: int) -> np.ndarray:
    """A photo as gray uint8, shrunk (area interpolation) so its long side is at most ``max_side`` (0: as is)."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = None if data is None or data.size == 0 else cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise Error(f"cannot read image {str(path)!r}; expected a readable image file ({', '.join(IMAGE_EXTENSIONS)})")
    long_side = max(image.shape)
    if max_side and long_side > max_side:
        factor = max_side / long_side
        size = (max(2, int(round(image.shape[1] * factor))), max(2, int(round(image.shape[0] * factor))))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


class _ImageRows(TypedDict):
    """What ``_image_rows`` gives for one photo."""

    patches: np.ndarray
    local_id: np.ndarray
    keypoints: np.ndarray
    selected: np.int64


def _image_rows(task: tuple[int, str, PatchPairConfig, int]) -> _ImageRows:
    """All rows of one photo: patches, local point index, keypoints (see the module docstring)."""
    index, path, config, seed = task
    rng = np.random.default_rng([int(seed), int(index)])
    image = read_training_image(path, config.max_side)
    height, width = image.shape
    table = select_keypoints(detector_for(config).detect(image, None), image.shape, config)
    parts = []
    for _ in range(config.homographies_per_image):
        reference = augment(image, rng, config.photometric) if config.augment_reference else image
        views, homographies = [], []
        for _ in range(config.views_per_point - 1):
            H = sample_homography(rng, height, width, config.homography)
            views.append(augment(warp_image(image, H, (width, height)), rng, config.photometric))
            homographies.append(H)
        parts.append(cut_views(reference, views, homographies, table, config, rng))
    return {"patches": np.concatenate([p[0] for p in parts]), "local_id": np.concatenate([p[1] for p in parts]),
            "keypoints": np.concatenate([p[2] for p in parts]), "selected": np.int64(len(table))}


def _init_worker() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def generate_patch_pairs(image_paths: Sequence[str | os.PathLike], config: PatchPairConfig | None = None, seed: int = 0,
                         workers: int = 2, progress: bool = False) -> PatchPairs:
    """Patch pairs from photos (the recipe of the module docstring).

    ``workers`` > 1 runs that many ``spawn`` processes (each with one torch and one OpenCV
    thread; spawn, not fork, because torch can hang in a child forked after it ran in the
    parent); 0 or 1 works in this process. The result depends only on ``seed``, ``config``
    and ``image_paths`` (image ``i`` uses ``default_rng([seed, i])``), not on ``workers``.
    ``image_id`` is the index in ``image_paths``; ``config`` of the result is ``{"config":
    config.to_dict(), "seed": seed, "files": [paths]}``. ``progress`` shows a tqdm bar.
    ``cvdeep.Error`` for an unreadable image or invalid arguments.
    """
    from tqdm.auto import tqdm

    config = PatchPairConfig() if config is None else config
    if not isinstance(config, PatchPairConfig):
        raise Error(f"generate_patch_pairs: config got {type(config).__name__}; expected a PatchPairConfig")
    paths = [str(p) for p in image_paths]
    if not paths:
        raise Error("generate_patch_pairs: got no image paths; expected at least one photo")
    if not isinstance(workers, (int, np.integer)) or workers < 0:
        raise Error(f"generate_patch_pairs: workers got {workers!r}; expected an integer >= 0")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise Error(f"generate_patch_pairs: seed got {seed!r}; expected an integer >= 0")
    tasks = [(i, p, config, int(seed)) for i, p in enumerate(paths)]
    most = len(tasks) * config.keypoints_per_image * config.homographies_per_image
    rows = _RowBuffer(config.views_per_point, config.patch_size, capacity=most)
    with tqdm(total=len(tasks), unit="image", desc="patch pairs", disable=not progress) as bar:
        if workers <= 1:
            for index, task in enumerate(tasks):
                rows.append(index, _image_rows(task))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(int(workers), len(tasks)), initializer=_init_worker) as pool:
                for index, result in enumerate(pool.imap(_image_rows, tasks, chunksize=2)):
                    rows.append(index, result)
                    bar.update()
    patches, point_id, image_id, keypoints = rows.finish()
    provenance = {"config": config.to_dict(), "seed": int(seed), "files": paths}
    return PatchPairs(patches, point_id, image_id, keypoints, provenance)


class _RowBuffer:
    """Rows appended photo by photo, so the patches are held about once (not once per photo
    plus once concatenated). The arrays are allocated at the most rows the photos can give
    (``np.empty``: pages the kernel commits only when written) and shrunk in place at the
    end; where that much address space is refused, they start small and grow by copying."""

    def __init__(self, views: int, patch_size: int, capacity: int) -> None:
        shapes = {"patches": ((views, patch_size, patch_size), np.uint8), "keypoints": ((views, 4), np.float32),
                  "point_id": ((), np.int64), "image_id": ((), np.int64)}
        try:
            self.arrays = {name: np.empty((capacity, *shape), dtype) for name, (shape, dtype) in shapes.items()}
        except MemoryError:
            capacity = 4096
            self.arrays = {name: np.empty((capacity, *shape), dtype) for name, (shape, dtype) in shapes.items()}
        self.rows = 0
        self.points = 0  # point ids handed out so far: the selected keypoints of earlier photos

    def _reserve(self, rows: int) -> None:
        capacity = len(self.arrays["point_id"])
        if rows <= capacity:
            return
        capacity = max(rows, capacity + capacity // 2)
        for array in self.arrays.values():
            array.resize((capacity, *array.shape[1:]), refcheck=False)  # no view of these arrays exists (copies)

    def append(self, index: int, result: _ImageRows) -> None:
        count = len(result["local_id"])
        self._reserve(self.rows + count)
        part = slice(self.rows, self.rows + count)
        self.arrays["patches"][part] = result["patches"]
        self.arrays["keypoints"][part] = result["keypoints"]
        self.arrays["point_id"][part] = self.points + result["local_id"]
        self.arrays["image_id"][part] = index
        self.rows += count
        self.points += int(result["selected"])

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        for array in self.arrays.values():
            array.resize((self.rows, *array.shape[1:]), refcheck=False)
        arrays, self.arrays = self.arrays, {}
        return arrays["patches"], arrays["point_id"], arrays["image_id"], arrays["keypoints"]


def image_files(image_dir: str | os.PathLike) -> list[Path]:
    """Image files below ``image_dir`` (recursively; ``IMAGE_EXTENSIONS``), sorted by relative path."""
    root = Path(image_dir)
    if not root.is_dir():
        raise Error(f"image directory {str(image_dir)!r} is not a directory")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise Error(f"no image file ({', '.join(IMAGE_EXTENSIONS)}) found below {str(image_dir)!r}")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def cache_key(files: Sequence[Path], root: Path, config: PatchPairConfig, seed: int) -> tuple[str, dict[str, Any]]:
    """The sha256 (hex) naming a cache and the provenance it hashes: the config, the seed, the
    format version and every file's relative path and byte size."""
    provenance = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "seed": int(seed),
        "files": [[p.relative_to(root).as_posix(), p.stat().st_size] for p in files],
    }
    text = json.dumps(provenance, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), json.loads(text)


def cached_patch_pairs(image_dir: str | os.PathLike, config: PatchPairConfig | None = None, seed: int = 0,
                       cache_dir: str | os.PathLike | None = None, workers: int = 2,
                       progress: bool = True) -> PatchPairs:
    """Patch pairs of every photo below ``image_dir``, built once and then read from disk.

    The cache file ``<cache_dir>/patch_pairs-<hash>.npz`` is named by the sha256 of the
    config, seed and file list (relative paths and sizes); its stored provenance is compared
    on reading, and a stale, foreign or unreadable file is rebuilt. ``cache_dir`` defaults
    to ``cvdeep.weights.cache_dir() / "patch_pairs"`` (``$CVDEEP_CACHE`` or the user cache).
    The returned ``config`` holds the provenance (config, seed, files).
    """
    config = PatchPairConfig() if config is None else config
    root = Path(image_dir)
    files = image_files(root)
    digest, provenance = cache_key(files, root, config, seed)
    if cache_dir is None:
        from ..weights import cache_dir as user_cache

        cache_dir = user_cache() / "patch_pairs"
    path = Path(cache_dir) / f"patch_pairs-{digest[:16]}.npz"
    if path.is_file():
        try:
            cached = PatchPairs.load(path)
        except Error:
            cached = None
        if cached is not None and cached.config == provenance:
            return cached
    pairs = generate_patch_pairs(files, config, seed, workers, progress)
    pairs.config = provenance
    pairs.save(path)
    return pairs
