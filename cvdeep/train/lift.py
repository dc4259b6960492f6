"""Training LIFT (``cvdeep.nets.lift``) in the paper's order: descriptor, orientation, detector.

``cvdeep train lift --stage descriptor|orientation|detector`` trains one network of ``LIFTNet`` per
run, the others frozen, each stage starting from the previous stage's ``weights.pt`` (``--init``):

- ``descriptor``: the descriptor h on pairs of patches of one scene point, each cut at its SIFT
  keypoint (position, size, SIFT's angle), one in a photo and one in a view of it through a
  random homography (the angle turned by the homography's local rotation). The seed's hinge loss:
  ``||h(p1) - h(p2)||`` for a matching pair, ``max(0, C - ||h(p1) - h(p2)||)`` for a non-matching
  one (another point of the batch), with DeepDesc's hard mining (``cvdeep.train.losses.
  mined_hinge_loss``: of B positives and B random negatives the hardest B / ``mining_ratio`` of
  each are back-propagated; 2 by default), C = 1 on unit descriptors.
- ``orientation``: the orientation estimator g on the same pairs, but cut *upright* in both views,
  so the second patch shows the content turned by the homography. The seed's loss
  ``||h(G(P1, g(P1))) - h(G(P2, g(P2)))||``: the descriptor (frozen) of each patch cut again,
  rotated by its estimated angle, through ``cvdeep.ops.extract_patches``, which is differentiable in
  the angle. It is small exactly when the two estimated angles differ by the rotation between
  the views; ``angle_error`` logs that difference's error (degrees) against the homography's local
  rotation.
- ``detector``: the detector f on quadruplets: P1 and P2 (a point in the photo and in the view),
  P3 (another keypoint), P4 (a location at least ``max(8 px, size)`` from every SIFT keypoint).
  Each is a 49 x 49 detector patch (4 pixels per KeyPoint.size, as inference's pyramid); its score
  map's central 15 x 15 goes through ``cvdeep.ops.softargmax`` (strength 10 = temperature 0.1,
  gradient through its backward), giving a soft location x and a soft maximum score S. The seed's
  loss ``gamma L_class + L_pair``: ``L_class = sum_i alpha_i max(0, 1 - S_i y_i)^2`` (y = 1 for
  P1..P3, -1 for P4; alpha = 1/6, 1/6, 1/6, 1/2 so keypoints and non-keypoints weigh alike, cvdeep's
  choice), ``L_pair = ||h(G(P1, x1)) - h(G(P2, x2))||``: the frozen orientation estimator and
  descriptor applied at the soft locations, so the detector learns where the descriptor matches.

Data. Photos of ``images`` (default ``../shared/train_images``; never the evaluation data),
shrunk to ``max_side``; SIFT keypoints (``sift_features`` strongest, sizes in [``min_size``,
``max_size``], at least 4 px apart) found once per photo. Step k draws, from generators seeded
(seed, k, ...), ``photos_per_step`` photos, a homography each (``default_pair_homography``: any
in-plane angle, zoom 0.7..1.4, perspective 0.2), the photometric changes of both views and
``keypoints_per_photo`` points whose patches fit in both views, so a resumed run sees exactly
what it would have seen. Every patch is cut from the full view by ``extract_patches``, as
inference cuts it. The largest rotation of the homographies grows from 30 to 180 degrees over the
run (``rotation``). Why: the orientation loss only guides angles near the truth. Measured with the
official descriptor on synthetic photos of wedges: the descriptor distance of a pair, as a
function of the difference of its two patches' angles, is smallest at the true rotation in a
basin about 20 degrees wide on either side; 16 pairs per step at full rotation from a random
start, the mean angle error stayed near chance (80 to 90 degrees) for 300 steps, while with
rotations within 30 degrees it fell from 15 degrees (the error of ignoring the rotation) to 7.

Sizes (our choice for the 2-core CPU this project trains on): 4 photos x 16 points per step (64
pairs or quadruplets), the networks of ``LIFTNet`` as declared (the CNN3 descriptor costs 50 M
multiply-adds per 64 x 64 patch and dominates every stage). Measured cost of one step (median of 8,
1 thread, eager, on 40 of the training photos, on the project's 2-core AVX-512 machine while other
trainings kept its load at 8 to 9): descriptor 0.81 s in bf16 and 1.15 s in fp32, orientation 0.85 s
and 1.31 s, detector 0.82 s and 1.76 s. ``summary.json`` holds each run's own time.

The input statistics (``input_mean``, ``input_std``: the image standardisation of the detector and
the orientation estimator, and the descriptor's ``patch_mean``/``patch_std`` when cvdeep trains it)
are the mean and deviation of the photos' pixels (``input_stats="photos"``) or LIFT's
``mean_std.h5`` (``"official"``), set when a run starts without ``init``.

Sources: the seed's LIFT losses (``shared/seeds``) and K. M. Yi et al., ECCV 2016; see
``cvdeep.nets.lift`` for the networks.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from .. import weights as hub
from ..errors import Error
from ..models import get_model
from ..nets.lift import (
    DESC_PATCH,
    DESC_SCALE_FACTOR,
    DETECTOR_PIXELS_PER_SIZE,
    OFFICIAL_MEAN_STD,
    SOFTARGMAX_TEMPERATURE,
    TRAIN_DETECTOR_PATCH,
    TRAIN_MOVEMENT,
    LIFTNet,
    vector_to_degrees,
)
from ..ops import extract_patches, softargmax  # float32 under training's bf16 autocast (cvdeep.precision)
from .descriptor import DEFAULT_IMAGES, _init_path, bf16_supported
from .homography import (
    HomographyConfig,
    affine_rotation_deg,
    local_affine,
    sample_homography,
    warp_image,
    warp_keypoints,
)
from .loop import Trainer, cpu_weights, finish_run, seed_everything
from .losses import mined_hinge_loss
from .patch_pairs import PatchPairConfig, default_pair_homography, image_files, read_training_image, select_keypoints
from .photometric import PhotometricConfig, augment
from .tr import _warmup_cosine

log = logging.getLogger(__name__)

STAGES = ("descriptor", "orientation", "detector")
MODELS = {"cvdeep": "lift-cvdeep", "official": "lift-cvdeep-picc"}
"""Descriptor source -> the registry model whose network (and weight file) the stages train."""
CLASS_WEIGHTS = (1 / 6, 1 / 6, 1 / 6, 1 / 2)
"""alpha of P1, P2, P3 (keypoints) and P4 (non-keypoint)."""
DETECTOR_SCALE_FACTOR = TRAIN_DETECTOR_PATCH / DETECTOR_PIXELS_PER_SIZE
"""Side of the detector's training patch in units of KeyPoint.size (49 detector pixels)."""
CONTEXT = DETECTOR_SCALE_FACTOR / 2
"""Half-side (in sizes) of the square every training patch of a point lies in."""


@dataclass
class LIFTTraining:
    """Everything a ``cvdeep train lift`` run depends on (stored beside the run, checked on resume)."""

    stage: str = "descriptor"
    """``descriptor``, ``orientation`` or ``detector`` (the paper's order)."""
    descriptor: str = "cvdeep"
    """``cvdeep`` (the descriptor trained by the first stage; model ``lift-cvdeep``) or ``official`` (LIFT's
    released descriptor, frozen; model ``lift-cvdeep-picc``, whose files never hold the descriptor)."""
    init: str | None = None
    """The previous stage's weights.pt (or a registry name); None starts from a random initialisation."""
    images: str = str(DEFAULT_IMAGES)
    steps: int = 2000
    photos_per_step: int = 4
    keypoints_per_photo: int = 16
    max_side: int = 400
    sift_features: int = 512
    """SIFT keypoints detected per photo (the strongest), before the size and spacing filters."""
    min_size: float = 4.0
    max_size: float = 32.0
    """KeyPoint.size range of the training points (LIFT's pyramid range)."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    margin: float = 1.0
    """Descriptor stage: the hinge margin C (unit descriptors)."""
    mining_ratio: float = 2.0
    """Descriptor stage: back-propagate the hardest 1 / mining_ratio of the positives and of the negatives.
    Measured from a random start on 64 pairs per step of 40 training photos, 60 steps: ratio 4 collapsed
    (matching and non-matching distances both fell to 0.04 and 0.08), ratios 2 and 1 learned (the gap
    between them grew from 0.11 to 0.23 and from 0.15 to 0.29); DeepDesc's 8 assumed batches of 1024."""
    class_weight: float = 1.0
    """Detector stage: gamma, the weight of L_class against L_pair. L_pair is in descriptor units: below 1
    for unit descriptors (``cvdeep``), a few units for the official descriptor's raw output, for which a
    larger gamma keeps the two terms alike."""
    homography: dict[str, Any] = field(default_factory=lambda: dataclasses.asdict(default_pair_homography()))
    rotation: tuple[float, float] = (30.0, 180.0)
    """The homographies' largest in-plane rotation (degrees) at the first and the last step, linear in
    between: the orientation loss only guides angles within some 20 degrees of the truth (measured: the
    descriptor distance of two views as a function of the angle difference), so the rotations start
    small; it replaces ``homography["max_angle_deg"]``."""
    photometric: bool = True
    input_stats: str = "photos"
    """``photos`` or ``official`` (LIFT's mean_std.h5); used only when ``init`` is None."""
    network_args: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model's network arguments (experiments and tests; the shipped models use none)."""
    precision: str = "bf16"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise Error(f"stage: got {self.stage!r}; accepted: {', '.join(STAGES)}")
        if self.descriptor not in MODELS:
            raise Error(f"descriptor: got {self.descriptor!r}; accepted: {', '.join(MODELS)}")
        if self.stage == "descriptor" and self.descriptor == "official":
            raise Error("stage 'descriptor' trains cvdeep's descriptor; with descriptor='official' start at stage "
                        "'orientation'")
        for name, low in (("steps", 1), ("photos_per_step", 1), ("keypoints_per_photo", 2), ("max_side", 64),
                          ("sift_features", 8), ("warmup_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise Error(f"{name}: got {value!r}; expected an integer >= {low}")
        for name in ("lr", "margin", "min_size", "max_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise Error(f"{name}: got {value!r}; expected a number > 0")
        if self.max_size < self.min_size:
            raise Error(f"max_size: got {self.max_size}; expected at least min_size ({self.min_size})")
        if not isinstance(self.mining_ratio, (int, float)) or not self.mining_ratio >= 1:
            raise Error(f"mining_ratio: got {self.mining_ratio!r}; expected a number >= 1")
        for name in ("weight_decay", "class_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise Error(f"{name}: got {value!r}; expected a number >= 0")
        if self.input_stats not in ("photos", "official"):
            raise Error(f"input_stats: got {self.input_stats!r}; accepted: 'photos', 'official'")
        if self.precision not in ("bf16", "fp32"):
            raise Error(f"precision: got {self.precision!r}; accepted: 'bf16', 'fp32'")
        try:
            rotation = tuple(float(v) for v in self.rotation)
        except (TypeError, ValueError):
            rotation = ()
        if len(rotation) != 2 or not all(0.0 <= v <= 180.0 for v in rotation):
            raise Error(f"rotation: got {self.rotation!r}; expected (first, last) in degrees within [0, 180]")
        self.rotation = (rotation[0], rotation[1])
        self.homography_config()

    @property
    def model(self) -> str:
        return MODELS[self.descriptor]

    def homography_config(self, step: int = 0) -> HomographyConfig:
        """The warps of step ``step``: ``homography`` with the rotation of the curriculum."""
        first, last = self.rotation
        angle = first + (last - first) * min(step / max(self.steps - 1, 1), 1.0)
        try:
            return HomographyConfig(**{**self.homography, "max_angle_deg": angle})
        except TypeError as exc:
            fields = ", ".join(f.name for f in dataclasses.fields(HomographyConfig))
            raise Error(f"homography: {exc}; accepted keys: {fields}") from None


# --- data ----------------------------------------------------------------------------------------


class KeypointPhotos:
    """Photos (gray uint8) with their SIFT keypoints (x, y, size, angle) and pixel statistics."""

    def __init__(self, folder: str | os.PathLike, max_side: int, sift_features: int, min_size: float,
                 max_size: float, progress: bool = False) -> None:
        files = image_files(folder)
        iterator: Any = files
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(files, desc="photos and SIFT keypoints", unit="photo")
        sift = cv2.SIFT.create(int(sift_features))
        spacing = PatchPairConfig(scale_factor=1e-6, min_keypoint_distance=4.0, keypoints_per_image=int(sift_features))
        self.photos: list[np.ndarray] = []
        self.tables: list[np.ndarray] = []
        total, squares, count = 0.0, 0.0, 0
        for path in iterator:
            photo = read_training_image(path, max_side)
            table = select_keypoints(sift.detect(photo, None), photo.shape, spacing, limit=int(sift_features))
            table = table[(table[:, 2] >= min_size) & (table[:, 2] <= max_size)]
            self.photos.append(photo)
            self.tables.append(table)
            values = photo.astype(np.float64)
            total, squares, count = total + values.sum(), squares + (values**2).sum(), count + values.size
        mean = total / count
        self.mean, self.std = float(mean), float(math.sqrt(max(squares / count - mean**2, 1e-6)))

    def __len__(self) -> int:
        return len(self.photos)


@dataclass
class PhotoGroup:
    """One photo's share of a step: both views and, per point, where it lies in each.

    ``first``/``second`` (1, 1, H, W) float in [0, 1]; ``points_a``/``points_b`` (K, 4) float32 x, y,
    size, angle (SIFT's angle, turned by the homography in the second view); ``others`` (K, 3) x, y,
    size of other keypoints (P3) and ``background`` (K, 3) of non-keypoint locations (P4), both in
    the first view; ``rotation`` (K,) the homography's local rotation at each point (degrees).
    """

    first: torch.Tensor
    second: torch.Tensor
    points_a: torch.Tensor
    points_b: torch.Tensor
    others: torch.Tensor
    background: torch.Tensor
    rotation: torch.Tensor


def _square_inside(xy: np.ndarray, half: np.ndarray, width: int, height: int) -> np.ndarray:
    return ((xy[:, 0] - half >= 0) & (xy[:, 0] + half <= width - 1) & (xy[:, 1] - half >= 0)
            & (xy[:, 1] + half <= height - 1))


def _seen_from(H_inverse: np.ndarray, xy: np.ndarray, half: np.ndarray, width: int, height: int) -> np.ndarray:
    """Whether the corners of the squares around ``xy`` (second view) map back inside the photo."""
    ok = np.ones(len(xy), dtype=bool)
    for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        corners = np.c_[xy[:, 0] + dx * half, xy[:, 1] + dy * half, np.ones(len(xy))] @ H_inverse.T
        with np.errstate(divide="ignore", invalid="ignore"):
            back = corners[:, :2] / corners[:, 2:]
        ok &= (corners[:, 2] > 0) & _square_inside(back, np.zeros(len(xy)), width, height)
    return ok


def draw_group(photos: KeypointPhotos, settings: LIFTTraining, step: int, index: int) -> PhotoGroup | None:
    """Group ``index`` of step ``step`` (see the module docstring); None when its photo has too few points."""
    rng = np.random.default_rng([settings.seed, step, index])
    photo_index = int(rng.integers(len(photos)))
    photo, table = photos.photos[photo_index], photos.tables[photo_index]
    height, width = photo.shape
    H = sample_homography(np.random.default_rng([settings.seed, step, index, 0]), height, width,
                          settings.homography_config(step))
    second = warp_image(photo, H, (width, height))
    first = photo
    if settings.photometric:
        photometric_rng = np.random.default_rng([settings.seed, step, index, 1])
        first = augment(first, photometric_rng, PhotometricConfig())
        second = augment(second, photometric_rng, PhotometricConfig())
    xy_b, size_b, angle_b = warp_keypoints(H, table[:, :2], table[:, 2], table[:, 3])
    half_a, half_b = CONTEXT * table[:, 2], CONTEXT * size_b
    with np.errstate(invalid="ignore"):
        fits = _square_inside(table[:, :2], half_a, width, height) & np.isfinite(xy_b).all(axis=1)
        fits &= _square_inside(np.nan_to_num(xy_b), np.nan_to_num(half_b), width, height)
    fits[fits] &= _seen_from(np.linalg.inv(H), xy_b[fits], half_b[fits], width, height)
    usable = np.flatnonzero(fits)
    count = settings.keypoints_per_photo
    if len(usable) < count:
        return None
    chosen = rng.choice(usable, size=count, replace=False)
    rest = np.setdiff1d(np.flatnonzero(_square_inside(table[:, :2], half_a, width, height)), chosen)
    others = rng.choice(rest, size=count, replace=len(rest) < count) if len(rest) else rng.choice(chosen, size=count)
    background = _background(rng, table, table[chosen, 2], width, height, count)
    rotation = affine_rotation_deg(local_affine(H, table[chosen, :2]))
    as_image = lambda image: torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)[None, None]  # noqa: E731
    as_rows = lambda rows: torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))  # noqa: E731
    return PhotoGroup(
        first=as_image(first), second=as_image(second),
        points_a=as_rows(table[chosen]),
        points_b=as_rows(np.c_[xy_b[chosen], size_b[chosen], angle_b[chosen]]),
        others=as_rows(table[others, :3]), background=as_rows(background), rotation=as_rows(rotation),
    )


def _background(rng: np.random.Generator, table: np.ndarray, sizes: np.ndarray, width: int, height: int,
                count: int) -> np.ndarray:
    """(count, 3) x, y, size of locations at least max(8 px, size) from every keypoint of ``table``."""
    rows: list[np.ndarray] = []
    for _ in range(20):
        size = rng.choice(sizes, size=4 * count)
        half = CONTEXT * size
        xy = np.c_[rng.uniform(half, width - 1 - half), rng.uniform(half, height - 1 - half)]
        ok = (half * 2 < min(width, height) - 1)
        if len(table):
            distance = np.sqrt(((xy[:, None, :] - table[None, :, :2]) ** 2).sum(axis=2)).min(axis=1)
            ok &= distance >= np.maximum(8.0, size)
        rows.append(np.c_[xy, size][ok])
        if sum(len(r) for r in rows) >= count:
            break
    found = np.concatenate(rows) if rows else np.zeros((0, 3))
    if len(found) == 0:  # a photo covered with keypoints: any location, still a valid training sample
        size = rng.choice(sizes, size=count)
        half = np.minimum(CONTEXT * size, (min(width, height) - 1) / 2)
        found = np.c_[rng.uniform(half, width - 1 - half), rng.uniform(half, height - 1 - half), size]
    return found[np.arange(count) % len(found)]


def draw_step(photos: KeypointPhotos, settings: LIFTTraining, step: int) -> list[PhotoGroup]:
    """The groups of step ``step``: ``photos_per_step`` photos, redrawn (sub-seeds) when one has too few points."""
    groups: list[PhotoGroup] = []
    attempt = 0
    while len(groups) < settings.photos_per_step:
        group = draw_group(photos, settings, step, attempt)
        attempt += 1
        if group is not None:
            groups.append(group)
        elif attempt > 50 * settings.photos_per_step:
            raise Error(f"{settings.images}: fewer than {settings.keypoints_per_photo} usable SIFT keypoints in the "
                        "photos drawn; use larger photos, a smaller keypoints_per_photo or a wider size range")
    return groups


# --- the stages ------------------------------------------------------------------------------------


def descriptor_distance(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(N,) ||first - second|| of (N, D) rows, smoothed at 0 (1e-6 under the root, as the hinge loss)."""
    return torch.sqrt((first.float() - second.float()).pow(2).sum(dim=1) + 1e-6)


def detector_patches(network: LIFTNet, image: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Standardised 49 x 49 upright detector patches (4 pixels per size) at (N, >= 3) x, y, size rows."""
    patches = extract_patches(image, rows[:, :2], rows[:, 2], None, TRAIN_DETECTOR_PATCH, DETECTOR_SCALE_FACTOR)
    return network.standardise(patches)


def soft_locations(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax offsets (N, 2) (detector pixels from the patch centre) and soft maxima (N,) of the
    central 15 x 15 of (N, 1, 25, 25) score maps, through ``cvdeep.ops.softargmax``: the maps side by
    side in one (15, 15 N) map, each keypoint at its map's centre with a window covering it exactly."""
    count, side = scores.shape[0], 2 * TRAIN_MOVEMENT + 1
    centre = scores.shape[-1] // 2
    window = slice(centre - TRAIN_MOVEMENT, centre + TRAIN_MOVEMENT + 1)
    crop = scores[:, 0, window, window]
    tiled = crop.float().permute(1, 0, 2).reshape(side, count * side)
    base = torch.stack([torch.arange(count, device=scores.device) * side + TRAIN_MOVEMENT,
                        torch.full((count,), TRAIN_MOVEMENT, device=scores.device)], dim=1).float()
    refined, value = softargmax(tiled, base, TRAIN_MOVEMENT, SOFTARGMAX_TEMPERATURE)
    return refined - base, value


def class_loss(values: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i alpha_i max(0, 1 - S_i y_i)^2 averaged over quadruplets: (4, N) values and labels, (4,) weights."""
    return (weights[:, None] * torch.clamp(1.0 - values * labels, min=0.0).pow(2)).sum(dim=0).mean()


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU torch generator for the random draws of step ``step`` (the same on resume)."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 7]).integers(2**62)))


def wrapped_degrees(angle: torch.Tensor) -> torch.Tensor:
    """Angles mapped to (-180, 180]."""
    return torch.remainder(angle + 180.0, 360.0) - 180.0


class LIFTTask:
    """One stage's network, optimiser and step function (``train_lift`` wraps it in the ``Trainer``)."""

    def __init__(self, settings: LIFTTraining, device: str | torch.device = "cpu", photos: KeypointPhotos | None = None,
                 progress: bool = False) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.rng = seed_everything(settings.seed)
        self.photos = photos if photos is not None else KeypointPhotos(
            settings.images, settings.max_side, settings.sift_features, settings.min_size, settings.max_size, progress)
        self.network = self._network()
        self.use_bf16 = settings.precision == "bf16" and bf16_supported(self.device)
        if settings.precision == "bf16" and not self.use_bf16:
            log.warning("bf16 is not native on this %s: training in fp32", self.device.type)
        trained = getattr(self.network, settings.stage)
        self.network.train()
        for name in STAGES:  # the other two are frozen, and in eval mode (no dropout)
            part = getattr(self.network, name)
            part.requires_grad_(name == settings.stage)
            if name != settings.stage:
                part.eval()
        self.optimizer = torch.optim.AdamW(trained.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = _warmup_cosine(self.optimizer, settings.warmup_steps, settings.steps)
        self.state: dict[str, Any] = {"network": self.network, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def _network(self) -> LIFTNet:
        settings = self.settings
        _, variant = get_model(settings.model)
        args = {**variant.network_args, **settings.network_args}
        network = LIFTNet(**args).to(self.device)
        if settings.init is not None:
            checkpoint = hub.load_checkpoint(None, _init_path(settings.init))
            try:
                network.load_pretrained(checkpoint)
            except (RuntimeError, KeyError) as exc:
                raise Error(f"init: {settings.init} is not a {settings.model} checkpoint ({exc})") from exc
        else:
            if settings.descriptor == "official":
                own = {k: v for k, v in network.state_dict().items() if not k.startswith("descriptor.")}
                network.load_pretrained(own)
            if settings.stage != "descriptor":
                log.warning("stage %s without init: the frozen networks keep their random initialisation",
                            settings.stage)
            if settings.input_stats == "official":
                stats = hub.load_checkpoint(OFFICIAL_MEAN_STD)
                mean, std = float(stats["input_mean"]), float(stats["input_std"])
            else:
                mean, std = self.photos.mean, self.photos.std
            with torch.no_grad():
                for buffer in (network.input_mean, network.input_std):
                    buffer.fill_(mean if buffer is network.input_mean else std)
                if settings.descriptor == "cvdeep":
                    network.descriptor.patch_mean.fill_(mean)
                    network.descriptor.patch_std.fill_(std)
        return network

    def config(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.settings), "model": self.settings.model,
                "effective_precision": "bf16" if self.use_bf16 else "fp32", "photos": len(self.photos),
                "input_mean": float(self.network.input_mean), "input_std": float(self.network.input_std)}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def _to(self, group: PhotoGroup) -> PhotoGroup:
        return PhotoGroup(*(getattr(group, f.name).to(self.device) for f in dataclasses.fields(PhotoGroup)))

    def step(self, index: int) -> dict[str, float]:
        groups = [self._to(group) for group in draw_step(self.photos, self.settings, index)]
        loss, metrics = getattr(self, f"_{self.settings.stage}_loss")(groups, index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": float(loss.detach()), "lr": float(self.scheduler.get_last_lr()[0]), **metrics}

    def _describe(self, patches: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.network.descriptor.embed(patches).float()

    def _descriptor_loss(self, groups: list[PhotoGroup], index: int) -> tuple[torch.Tensor, dict[str, float]]:
        first: list[torch.Tensor] = []
        second: list[torch.Tensor] = []
        for group in groups:
            for image, rows, out in ((group.first, group.points_a, first), (group.second, group.points_b, second)):
                out.append(extract_patches(image, rows[:, :2], rows[:, 2], rows[:, 3], DESC_PATCH, DESC_SCALE_FACTOR))
        patches = torch.cat(first + second)
        descriptors = self._describe(patches)
        anchor, positive = descriptors.chunk(2)
        generator = step_generator(self.settings.seed, index)
        loss = mined_hinge_loss(anchor, positive, self.settings.margin, self.settings.mining_ratio,
                                self.settings.mining_ratio, "random", generator)
        with torch.no_grad():
            positive_distance = descriptor_distance(anchor, positive).mean()
            negative_distance = descriptor_distance(anchor, positive.roll(1, dims=0)).mean()
        return loss, {"pos_dist": float(positive_distance), "neg_dist": float(negative_distance)}

    def _orient(self, image: torch.Tensor, xy: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        patches = self.network.orientation_patches(image, xy, sizes)
        with self._autocast():
            vectors = self.network.orientation(patches).float()
        return vector_to_degrees(vectors)

    def _orientation_loss(self, groups: list[PhotoGroup], index: int) -> tuple[torch.Tensor, dict[str, float]]:
        distances, errors = [], []
        for group in groups:
            angle_a = self._orient(group.first, group.points_a[:, :2], group.points_a[:, 2])
            angle_b = self._orient(group.second, group.points_b[:, :2], group.points_b[:, 2])
            patch_a = extract_patches(group.first, group.points_a[:, :2], group.points_a[:, 2], angle_a, DESC_PATCH,
                                      DESC_SCALE_FACTOR)
            patch_b = extract_patches(group.second, group.points_b[:, :2], group.points_b[:, 2], angle_b, DESC_PATCH,
                                      DESC_SCALE_FACTOR)
            described = self._describe(torch.cat([patch_a, patch_b]))
            distances.append(descriptor_distance(*described.chunk(2)))
            errors.append(wrapped_degrees(angle_b.detach() - angle_a.detach() - group.rotation).abs())
        return torch.cat(distances).mean(), {"angle_error": float(torch.cat(errors).mean())}

    @torch.no_grad()
    def angle_errors(self, groups: list[PhotoGroup]) -> torch.Tensor:
        """(N,) |(theta_2 - theta_1) - rotation| in degrees of every pair of ``groups``, the orientation
        estimator in eval mode: how far the estimated angles are from turning with the homography."""
        was_training = self.network.orientation.training
        self.network.orientation.eval()
        errors = []
        for group in map(self._to, groups):
            angle_a = self._orient(group.first, group.points_a[:, :2], group.points_a[:, 2])
            angle_b = self._orient(group.second, group.points_b[:, :2], group.points_b[:, 2])
            errors.append(wrapped_degrees(angle_b - angle_a - group.rotation).abs())
        self.network.orientation.train(was_training)
        return torch.cat(errors)

    def _detector_loss(self, groups: list[PhotoGroup], index: int) -> tuple[torch.Tensor, dict[str, float]]:
        weights = torch.tensor(CLASS_WEIGHTS, device=self.device)
        labels = torch.tensor([1.0, 1.0, 1.0, -1.0], device=self.device)[:, None]
        class_terms, pairs, moved, correct = [], [], [], []
        for group in groups:
            count = group.points_a.shape[0]
            patches = torch.cat([detector_patches(self.network, group.first, group.points_a),
                                 detector_patches(self.network, group.second, group.points_b),
                                 detector_patches(self.network, group.first, group.others),
                                 detector_patches(self.network, group.first, group.background)])
            with self._autocast():
                scores = self.network.detector(patches)
            offsets, values = soft_locations(scores)
            values = values.reshape(4, count)
            class_terms.append(class_loss(values, labels, weights))
            correct.append(((values * labels) > 0).float().mean(dim=1))
            located = []
            for image, rows, offset in ((group.first, group.points_a, offsets[:count]),
                                        (group.second, group.points_b, offsets[count: 2 * count])):
                xy = rows[:, :2] + offset * (rows[:, 2:3] / DETECTOR_PIXELS_PER_SIZE)
                angles = self._orient(image, xy, rows[:, 2])
                located.append(extract_patches(image, xy, rows[:, 2], angles, DESC_PATCH, DESC_SCALE_FACTOR))
                moved.append((offset * rows[:, 2:3] / DETECTOR_PIXELS_PER_SIZE).norm(dim=1).detach())
            described = self._describe(torch.cat(located))
            pairs.append(descriptor_distance(*described.chunk(2)).mean())
        classification = torch.stack(class_terms).mean()
        pair = torch.stack(pairs).mean()
        accuracy = torch.stack(correct).mean(dim=0)
        loss = self.settings.class_weight * classification + pair
        return loss, {"class": float(classification.detach()), "pair": float(pair.detach()),
                      "moved_px": float(torch.cat(moved).mean()), "keypoint_acc": float(accuracy[:3].mean()),
                      "background_acc": float(accuracy[3])}

    def weights(self) -> dict[str, torch.Tensor]:
        """The network's state_dict in fp32 (without ``descriptor.*`` when the descriptor is the official one)."""
        state = cpu_weights(self.network)
        if self.settings.descriptor == "official":
            state = {k: v for k, v in state.items() if not k.startswith("descriptor.")}
        return state


def train_lift(settings: LIFTTraining, out_dir: str | os.PathLike, resume: bool = False,
               device: str | torch.device = "cpu", checkpoint_every: int = 250, progress: bool = True,
               photos: KeypointPhotos | None = None) -> dict[str, Any]:
    """Train (or resume) one stage into ``out_dir``; returns its summary.

    ``out_dir`` receives ``config.json``, ``log.csv`` (loss, learning rate and the stage's metrics:
    ``pos_dist``/``neg_dist``; ``angle_error``; ``class``, ``pair``, ``moved_px``, ``keypoint_acc``,
    ``background_acc``), ``checkpoint.pt`` and, at the end, ``weights.pt`` (what the next stage's
    ``init`` and ``cvdeep.LIFT_create(model=settings.model, weights=...)`` load) and ``summary.json``.
    """
    started = time.time()
    task = LIFTTask(settings, device, photos, progress)
    trainer = Trainer(out_dir, task.state, settings.steps, task.rng, task.config(), checkpoint_every, resume, progress)
    return finish_run(trainer.run(task.step), task.weights(), out_dir, task.device, started,
                      {"model": settings.model, "stage": settings.stage})
