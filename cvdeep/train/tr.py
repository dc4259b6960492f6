"""Training ``TRNet`` (``cvdeep.nets.tr``) with TR (CVPR 2023) or with D2-Net's loss, on unlabeled photos.

``cvdeep train tr --loss tr|d2`` trains the one network two ways on the same data, steps and seed,
so the two runs differ only by the method (the seed's claim: TR's training beats D2-Net's on a
D2-Net backbone):

- ``loss="d2"`` (``d2-cvdeep``): D2-Net's soft-detection-weighted triplet margin ranking loss
  (``cvdeep.train.d2net_losses.d2net_batch_loss``: hardest negative in either image outside a safe
  radius, margin 1, the soft detection scores of both maps weighting each correspondence).
- ``loss="tr"`` (``tr-cvdeep``): the online branch (``TRNet`` encoder f_o, projector g_o,
  predictor q) predicts the target branch's projection (encoder f_t and projector g_t, an
  exponential moving average of f_o and g_o, never trained by gradients) at corresponding
  locations of the two views; the prediction loss is weighted by the soft detection scores
  s_c s'_c and compared with soft positive labels; no negatives (``cvdeep.train.tr_losses``).

Data (both losses). A photo of ``images`` (default ``../shared/train_images``; never the
evaluation data) is shrunk to ``max_side`` px; view A is a random ``crop`` x ``crop`` window of it,
view B the photo seen through a random homography H of A (A pixels -> B pixels, sampled on A's
frame with ``cvdeep.train.homography.sample_homography``; B shows the photo beyond A's window where
the warp reaches it, black beyond the photo), and both views get independent photometric changes
(``cvdeep.train.photometric.augment``). Every draw of step k comes from generators seeded
(seed, k) and (seed, k, pair, 0 or 1), so both losses see the same photos, windows, homography
draws and photometric changes, and a resumed run sees exactly what it would have seen. The
correspondences are the cells of A's map (image pixel 4p + 1.5) that H sends inside B; every one
shows the same scene point in both views (A lies inside the photo).

TR, where the paper is silent (only the authors' slides and the abstract were available; see
``cvdeep.train.tr_losses`` for the loss-level choices), the choices made here:

- Projector and predictor: dense BYOL heads, 1x1 convolutions 128 -> 256 -> BatchNorm -> ReLU ->
  128 (BYOL's MLP shape, scaled to the 128-D map). The representation kept for inference is the
  encoder's map y (the describe-and-detect map), as D2-Net describes with it.
- Symmetric loss, as BYOL: each view is predicted from the other (A's prediction against B's
  target projection and B's against A's), averaged. The online encoder sees both views, so both
  detection scores s_c (A) and s'_c (B) come from the online map and keep their gradient.
- Corresponding locations: the target map of the other view is warped back by the inverse
  transformation, i.e. sampled bilinearly at H's exact image of each A cell (the seed's
  y'^{omega^-1}); no rounding to cells (D2-Net's loss keeps the official rounding).
- Soft labels l_c = exp(-alpha (1 - cos(g_t(f_t(A))_c, g_t(f_t(B))_{H(c)})) / lambda), from the
  target branch's projections of both views at the correspondence (the network's own, slowly
  moving, judgement of how alike the two views of c are), detached; lambda = 1 (the paper's value
  is not known; with lambda = 1 and alpha = 1 the label is close to the target cosine itself),
  alpha from 0 (hard labels) to 1 along the curriculum.
- Soft loss form: |l_c - cos(y_c, y'_c)| (``soft_form="target"``). The seed prints
  (l_c + 1 - L_pred^c) = (l_c + cos), which *decreases* as the two views' representations move
  apart, so minimising it would push corresponding locations apart and could not be what was
  trained; the form used regresses the similarity to the soft label and equals L_hard when l_c = 1.
- Curriculum: the homography strength s grows linearly from 0.2 to 1 over the run
  (``Curriculum``): perspective, rotation, translation overflow and log-scale range are multiplied
  by s and the region's patch ratio shrinks from 1 by s (1 - patch_ratio). Both losses train on
  this same schedule by default, so they see exactly the same pairs: D2-Net has no curriculum, but
  it fine-tunes an ImageNet VGG16, and from a random initialisation at full strength its loss
  collapses here (measured on 96 px crops of BSDS500, batch 2, lr 1e-3: after 50 steps every
  descriptor of an image had cosine 0.99 with the others and the loss sat at the margin, 1.0, for
  the remaining 250 steps; with the curriculum, 0.2 -> 1 over 3000 steps, the first 250 steps took
  the loss to 0.49 and the nearest-neighbour accuracy ``nn_acc`` to 92 %). ``strength=(1, 1)``
  trains at full strength throughout; the random draws are the same at any strength, only their
  amplitude changes.
- EMA: tau from 0.996 to 1 along BYOL's cosine schedule, applied after every optimiser step;
  floating-point buffers (BatchNorm statistics) averaged like the parameters. The target runs in
  training mode (batch statistics), as BYOL's.
- Collapse guard: exactly the paper's (predictor, EMA target, stop-gradient); nothing else. The
  log's ``desc_cos`` column (mean cosine between the online descriptors of different locations of
  one view, on a 4-cell grid) is the collapse indicator: it tends to 1 when every location gets the
  same descriptor. ``nn_acc`` (share of sampled correspondences whose nearest descriptor among all
  cells of the other view lies within one cell of the truth) is logged for both losses alike.

Shared choices (same for both losses): Adam (AdamW, lr 1e-3, weight decay 1e-4) with a 100-step
linear warm-up then a cosine decay to 0; batches of 4 pairs of 192 x 192 crops; bf16 autocast where
the CPU or GPU runs it natively (losses in fp32); D2-Net's safe radius of 4 feature cells (16 px at
stride 4: D2-Net's 4 cells, and its 32 px scaled by the receptive fields, 40 px here against ~90 px
for VGG16 conv4_3); at least 128 correspondences per pair (the official minimum).

Cost of one step (4 pairs of 192 x 192 crops, 1 thread, eager, median of 5 steps, measured on
this project's 2-core AVX-512 machine while other trainings kept it at a load of ~10): D2 1.46 s in
bf16 and 2.48 s in fp32, TR 1.58 s and 2.48 s (TR adds the target's forward pass and the heads; D2's
dense hardest-negative search costs about as much). ``summary.json`` records each run's own time.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Error
from ..models import build_model
from ..nets.tr import POOLINGS, STRIDE, TRNet
from ..ops import soft_detection_score
from .d2net_losses import d2net_batch_loss
from .descriptor import DEFAULT_IMAGES, _init_path, bf16_supported
from .homography import HomographyConfig, sample_homography, scaled_homography, warp_image
from .loop import Trainer, cpu_weights, finish_run, seed_everything
from .patch_pairs import image_files, read_training_image
from .photometric import PhotometricConfig, augment
from .tr_losses import Curriculum, ema_update, make_target, prediction_loss, soft_labels, tr_loss

log = logging.getLogger(__name__)

MODELS = {"tr": "tr-cvdeep", "d2": "d2-cvdeep"}
"""Loss -> the registry model whose network (and weight file) it trains."""
SCALING_STEPS = POOLINGS  # feature cell p <-> image pixel 4p + 1.5


def _default_homography() -> dict[str, Any]:
    """Full-strength warps: SuperPoint's perspective 0.2 and patch ratio 0.85, zoom 0.87x..1.57x
    (region scale 0.75..1.35), rotations up to 30 deg (D2-Net is not rotation-invariant), the
    region free to leave A's window (B then shows the photo around it)."""
    return dataclasses.asdict(HomographyConfig(patch_ratio=0.85, perspective=0.2, scale_range=(0.75, 1.35),
                                               max_angle_deg=30.0, allow_artifacts=True, translation_overflow=0.1))


@dataclass
class TRTraining:
    """Everything a ``cvdeep train tr`` run depends on (stored beside the run, checked on resume)."""

    loss: str = "tr"
    """``"tr"`` (TR, trains ``tr-cvdeep``) or ``"d2"`` (D2-Net's loss, trains ``d2-cvdeep``)."""
    images: str = str(DEFAULT_IMAGES)
    """A folder of unlabeled photos (searched recursively)."""
    steps: int = 3000
    batch_size: int = 4
    """Image pairs per step."""
    crop: int = 192
    """Side of both views in pixels (a multiple of 4)."""
    max_side: int = 400
    """Photos are shrunk (area) so their long side is at most this; ones whose short side is below
    ``crop`` are enlarged to it."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    homography: dict[str, Any] = field(default_factory=_default_homography)
    """``HomographyConfig`` of the full-strength warp (strength 1)."""
    photometric: bool = True
    """Independent ``PhotometricConfig()`` changes of both views."""
    strength: tuple[float, float] = (0.2, 1.0)
    """Warp strength at the first and the last step (linear in between), each in [0, 1]; the same
    for both losses (see the module docstring)."""
    margin: float = 1.0
    """D2: margin of the triplet ranking loss."""
    safe_radius: float = 4.0
    """D2: negatives are searched beyond this Chebyshev distance in feature cells (4 px each)."""
    min_correspondences: int = 128
    """A pair with fewer correspondences is left out of the step's loss."""
    projector_hidden: int = 256
    projection_dim: int = 128
    tau_base: float = 0.996
    """TR: first EMA decay of the target (BYOL's cosine schedule to 1)."""
    soft_lambda: float = 1.0
    """TR: temperature lambda of the soft labels."""
    alpha: tuple[float, float] = (0.0, 1.0)
    """TR: soft-label curriculum factor at the first and the last step (0 = hard labels)."""
    precision: str = "bf16"
    """``bf16`` autocast where the device runs it natively, else ``fp32``."""
    compile: bool = True
    """``torch.compile`` the network's forward (falls back to eager)."""
    seed: int = 0
    init: str | None = None
    """Weights to start from (a registry name or a file) instead of a random initialisation."""

    def __post_init__(self) -> None:
        if self.loss not in MODELS:
            raise Error(f"loss: got {self.loss!r}; accepted: {', '.join(MODELS)}")
        for name, low in (("steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("min_correspondences", 1),
                          ("projector_hidden", 1), ("projection_dim", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise Error(f"{name}: got {value!r}; expected an integer >= {low}")
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 32 or self.crop % STRIDE:
            raise Error(f"crop: got {self.crop!r}; expected a multiple of {STRIDE}, at least 32")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < self.crop:
            raise Error(f"max_side: got {self.max_side!r}; expected an integer >= crop ({self.crop})")
        for name in ("lr", "soft_lambda", "margin"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise Error(f"{name}: got {value!r}; expected a number > 0")
        if not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise Error(f"weight_decay: got {self.weight_decay!r}; expected a number >= 0")
        if not isinstance(self.safe_radius, (int, float)) or not self.safe_radius >= 0:
            raise Error(f"safe_radius: got {self.safe_radius!r}; expected a number of cells >= 0")
        self.strength = _pair("strength", self.strength, 0.0, 1.0)
        self.alpha = _pair("alpha", self.alpha, 0.0, math.inf)
        if not isinstance(self.tau_base, (int, float)) or not 0.0 <= self.tau_base <= 1.0:
            raise Error(f"tau_base: got {self.tau_base!r}; expected a number in [0, 1]")
        if self.precision not in ("bf16", "fp32"):
            raise Error(f"precision: got {self.precision!r}; accepted: 'bf16', 'fp32'")
        self.homography_config()  # validates the overrides

    @property
    def model(self) -> str:
        return MODELS[self.loss]

    def homography_config(self, strength: float = 1.0) -> HomographyConfig:
        """The warp configuration at ``strength`` in [0, 1] (see the module docstring)."""
        try:
            base = HomographyConfig(**self.homography)
        except TypeError as exc:
            fields = ", ".join(f.name for f in dataclasses.fields(HomographyConfig))
            raise Error(f"homography: {exc}; accepted keys: {fields}") from None
        return scaled_homography(base, strength)

    def curriculum(self) -> Curriculum:
        return Curriculum(total_steps=self.steps, strength=(self.strength[0], self.strength[1]),
                          alpha=(self.alpha[0], self.alpha[1]),
                          tau_base=float(self.tau_base))


def _pair(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(low <= v <= high for v in pair):
        raise Error(f"{name}: got {value!r}; expected (first, last) with values in [{low}, {high}]")
    return pair


# --- data ----------------------------------------------------------------------------------


class PhotoPairs:
    """Unlabeled photos in memory (gray uint8) and the view pairs drawn from them."""

    def __init__(self, folder: str | os.PathLike, crop: int, max_side: int, progress: bool = False) -> None:
        files = image_files(folder)
        self.crop = int(crop)
        self.photos: list[np.ndarray] = []
        iterator: Any = files
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(files, desc="loading photos", unit="photo")
        for path in iterator:
            photo = read_training_image(path, max_side)
            short = min(photo.shape)
            if short < crop:  # enlarge so a crop fits
                factor = crop / short
                size = (max(crop, math.ceil(photo.shape[1] * factor)), max(crop, math.ceil(photo.shape[0] * factor)))
                photo = cv2.resize(photo, size, interpolation=cv2.INTER_LINEAR)
            self.photos.append(photo)

    def __len__(self) -> int:
        return len(self.photos)

    def pair(self, rng: np.random.Generator, warp_rng: np.random.Generator, photo_rng: np.random.Generator,
             homography: HomographyConfig, photometric: PhotometricConfig | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(view A (crop, crop) uint8, view B (crop, crop) uint8, H (3, 3) float64 A pixels -> B pixels).

        ``rng`` picks the photo and the window, ``warp_rng`` draws H, ``photo_rng`` the photometric
        changes (none when ``photometric`` is None)."""
        photo = self.photos[int(rng.integers(len(self.photos)))]
        height, width = photo.shape
        x0 = int(rng.integers(0, width - self.crop + 1))
        y0 = int(rng.integers(0, height - self.crop + 1))
        view_a = photo[y0 : y0 + self.crop, x0 : x0 + self.crop]
        H = sample_homography(warp_rng, self.crop, self.crop, homography)
        to_window = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        view_b = warp_image(photo, H @ to_window, (self.crop, self.crop))
        if photometric is not None:
            view_a = augment(view_a, photo_rng, photometric)
            view_b = augment(view_b, photo_rng, photometric)
        return np.ascontiguousarray(view_a), view_b, H


def draw_batch(pairs: PhotoPairs, settings: TRTraining, step: int,
               strength: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step ``step``'s batch: views A and B (B, 1, crop, crop) float in [0, 1], homographies (B, 3, 3) float64."""
    rng = np.random.default_rng([settings.seed, step])
    homography = settings.homography_config(strength)
    photometric = PhotometricConfig() if settings.photometric else None
    first, second, warps = [], [], []
    for index in range(settings.batch_size):
        a, b, H = pairs.pair(rng, np.random.default_rng([settings.seed, step, index, 0]),
                             np.random.default_rng([settings.seed, step, index, 1]), homography, photometric)
        first.append(a)
        second.append(b)
        warps.append(H)
    to_tensor = lambda views: torch.from_numpy(np.stack(views)).float().div_(255.0)[:, None]  # noqa: E731
    return to_tensor(first), to_tensor(second), torch.from_numpy(np.stack(warps))


def correspondences(homography: torch.Tensor, map_size: tuple[int, int],
                    crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cell of A's (h, w) map whose image position (4p + 1.5) ``homography`` (3, 3, A -> B
    pixels) sends in front of the camera and inside B's ``crop`` x ``crop`` image.

    Returns A's cells (N, 2) int64 (x, y) and their exact images in B (N, 2) float (x, y pixels).
    """
    height, width = map_size
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    cells = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    pixels = cells.to(torch.float64) * STRIDE + (STRIDE - 1) / 2.0
    homogeneous = torch.cat([pixels, torch.ones_like(pixels[:, :1])], dim=1)
    mapped = homogeneous @ torch.as_tensor(homography, dtype=torch.float64).T
    ahead = mapped[:, 2] > 1e-12
    warped = mapped[:, :2] / mapped[:, 2:].clamp_min(1e-12)
    inside = ahead & (warped >= 0).all(dim=1) & (warped <= crop - 1).all(dim=1)
    return cells[inside], warped[inside].float()


def sample_at(maps: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a (C, h, w) stride-4 map at (N, 2) image pixels (cell p at pixel 4p + 1.5): (N, C)."""
    height, width = maps.shape[-2:]
    grid = torch.stack([(pixels[:, 0] + 0.5) / (width * STRIDE), (pixels[:, 1] + 0.5) / (height * STRIDE)], dim=-1)
    grid = (grid * 2 - 1).to(maps.dtype)
    return F.grid_sample(maps[None], grid[None, None], mode="bilinear", padding_mode="border",
                         align_corners=False)[0, :, 0].T


# --- metrics ---------------------------------------------------------------------------------


@torch.no_grad()
def descriptor_similarity(features: torch.Tensor, every: int = 4) -> float:
    """Collapse indicator: mean cosine between the L2-normalised (B, D, h, w) map's descriptors of
    distinct locations of the same image, on a grid of every ``every``-th cell. 1 = collapsed."""
    grid = F.normalize(features[:, :, ::every, ::every].float().flatten(2), dim=1)  # (B, D, n)
    count = grid.shape[-1]
    if count < 2:
        return float("nan")
    gram = grid.transpose(1, 2) @ grid  # (B, n, n)
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return float((off_diagonal / (count * (count - 1))).mean())


@torch.no_grad()
def nearest_neighbour_accuracy(features: torch.Tensor, homographies: torch.Tensor, crop: int,
                               samples: int = 256) -> float:
    """Share of (up to ``samples`` evenly spaced) correspondences of each pair whose nearest
    descriptor among all cells of the other view is within one cell (Chebyshev) of the true cell.

    ``features``: the (2B, D, h, w) maps of views A then B; a loss-independent check of description.
    """
    count = homographies.shape[0]
    hits, total = 0, 0
    for index in range(count):
        cells, pixels = correspondences(homographies[index], (features.shape[-2], features.shape[-1]), crop)
        if len(cells) == 0:
            continue
        pick = torch.linspace(0, len(cells) - 1, min(samples, len(cells))).round().long()
        cells, pixels = cells[pick], pixels[pick]
        a = F.normalize(features[index, :, cells[:, 1], cells[:, 0]].float().T, dim=1)
        b = F.normalize(features[count + index].float().flatten(1), dim=0)  # (D, h*w)
        best = (a @ b).argmax(dim=1)
        width = features.shape[-1]
        found = torch.stack([best % width, best // width], dim=1)
        truth = ((pixels - (STRIDE - 1) / 2.0) / STRIDE).to(found.device)
        hits += int(((found.float() - truth).abs().max(dim=1).values <= 1.0).sum())
        total += len(cells)
    return hits / total if total else float("nan")


# --- TR ----------------------------------------------------------------------------------------


class DenseHead(nn.Module):
    """BYOL's projector / predictor on a dense map: 1x1 conv, BatchNorm, ReLU, 1x1 conv."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                 nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, h, w) -> (B, out, h, w)."""
        return self.net(x)


def tr_batch_loss(
    predictions: torch.Tensor,
    projections: torch.Tensor,
    scores: torch.Tensor,
    homographies: torch.Tensor,
    crop: int,
    lam: float,
    alpha: float,
    min_correspondences: int = 1,
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """The symmetric TR loss of a batch (see the module docstring), or None when no pair has
    ``min_correspondences`` correspondences with detection scores that are not all zero there (a pair
    whose scores vanish at every correspondence, e.g. a textureless crop with dead features, has no
    weighting and is left out, as one with too few correspondences).

    ``predictions``: online q(g_o(f_o(x))) (2B, D, h, w) of views A then B; ``projections``: target
    g_t(f_t(x)) (2B, D, h, w), no gradient; ``scores``: soft detection scores (2B, h, w) of the
    online maps; ``homographies``: (B, 3, 3) A -> B pixels. Returns the loss and statistics: the
    weighted prediction loss sum_c w_c L_pred^c (``pred``, in [0, 2]), the mean soft label and the
    mean number of correspondences.
    """
    count = homographies.shape[0]
    size = (predictions.shape[-2], predictions.shape[-1])
    losses, preds, labels_mean, used = [], [], [], []
    for index in range(count):
        cells, pixels = correspondences(homographies[index], size, crop)
        if len(cells) < max(1, int(min_correspondences)):
            continue
        xs, ys = cells[:, 0].to(predictions.device), cells[:, 1].to(predictions.device)
        pixels = pixels.to(predictions.device)
        pred_a = predictions[index][:, ys, xs].T
        pred_b = sample_at(predictions[count + index], pixels)
        proj_a = projections[index][:, ys, xs].T
        proj_b = sample_at(projections[count + index], pixels)
        score_a = scores[index][ys, xs]
        score_b = sample_at(scores[count + index][None], pixels)[:, 0]
        if not (score_a * score_b).sum().detach() > 0:
            continue
        labels = soft_labels(proj_a, proj_b, lam, alpha)
        loss = 0.5 * (tr_loss(pred_a, proj_b, score_a, score_b, labels, soft_form="target")
                      + tr_loss(pred_b, proj_a, score_b, score_a, labels, soft_form="target"))
        losses.append(loss)
        with torch.no_grad():
            weights = score_a * score_b / (score_a * score_b).sum()
            both = prediction_loss(pred_a, proj_b) + prediction_loss(pred_b, proj_a)
            preds.append(float((weights * both).sum() / 2))
            labels_mean.append(float(labels.mean()))
        used.append(len(cells))
    if not losses:
        return None, {"pred": float("nan"), "label": float("nan"), "correspondences": 0.0}
    return torch.stack(losses).mean(), {"pred": float(np.mean(preds)), "label": float(np.mean(labels_mean)),
                                        "correspondences": float(np.mean(used))}


# --- the task ---------------------------------------------------------------------------------


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _compiled(network: TRNet) -> Any:
    try:
        return torch.compile(network.forward, dynamic=False)
    except Exception as exc:  # no compiler here: eager works, slower
        log.warning("torch.compile unavailable (%s); training eagerly", exc)
        return network.forward


class DenseTraining:
    """One training run's objects and its step function (``train_tr`` wraps it in the ``Trainer``).

    ``pairs`` may be given (tests, or several runs over the same photos); otherwise the photos of
    ``settings.images`` are loaded.
    """

    def __init__(self, settings: TRTraining, device: str | torch.device = "cpu", pairs: PhotoPairs | None = None,
                 progress: bool = False) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.rng = seed_everything(settings.seed)
        self.pairs = (pairs if pairs is not None
                      else PhotoPairs(settings.images, settings.crop, settings.max_side, progress))
        network = build_model(settings.model, weights=_init_path(settings.init), device=self.device,
                              pretrained=settings.init is not None)
        if not isinstance(network, TRNet):
            raise Error(f"{settings.model}: its network is not a TRNet")
        self.network = network.train()
        self.forward = _compiled(self.network) if settings.compile else self.network.forward
        self.curriculum = settings.curriculum()
        self.use_bf16 = settings.precision == "bf16" and bf16_supported(self.device)
        if settings.precision == "bf16" and not self.use_bf16:
            log.warning("bf16 is not native on this %s: training in fp32", self.device.type)
        parameters = list(self.network.parameters())
        self.state: dict[str, Any] = {"network": self.network}
        if settings.loss == "tr":
            dim = self.network.descriptor_size
            self.projector = DenseHead(dim, settings.projector_hidden, settings.projection_dim).to(self.device).train()
            self.predictor = DenseHead(settings.projection_dim, settings.projector_hidden,
                                       settings.projection_dim).to(self.device).train()
            self.online = nn.ModuleDict({"network": self.network, "projector": self.projector})
            self.target = cast(nn.ModuleDict, make_target(self.online)).train()
            parameters += list(self.projector.parameters()) + list(self.predictor.parameters())
            self.state.update({"projector": self.projector, "predictor": self.predictor, "target": self.target})
        self.optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = _warmup_cosine(self.optimizer, settings.warmup_steps, settings.steps)
        self.state.update({"optimizer": self.optimizer, "scheduler": self.scheduler})

    def config(self) -> dict[str, Any]:
        """The settings as stored beside the run (and compared on resume)."""
        return {**dataclasses.asdict(self.settings), "model": self.settings.model,
                "effective_precision": "bf16" if self.use_bf16 else "fp32", "photos": len(self.pairs)}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def step(self, index: int) -> dict[str, float]:
        """One optimiser step on step ``index``'s batch; returns the metrics logged for it."""
        settings = self.settings
        strength = self.curriculum.strength_at(index)
        view_a, view_b, homographies = draw_batch(self.pairs, settings, index, strength)
        images = torch.cat([view_a, view_b]).to(self.device, non_blocking=True)
        with self._autocast():
            features = self.forward(images)
            if settings.loss == "tr":
                predictions = self.predictor(self.projector(features))
        features = features.float()
        metrics: dict[str, float] = {"strength": strength}
        if settings.loss == "d2":
            count = settings.batch_size
            loss = d2net_batch_loss(features[:count], features[count:], homographies, SCALING_STEPS, settings.margin,
                                    settings.safe_radius, settings.min_correspondences, (settings.crop, settings.crop))
        else:
            with torch.no_grad(), self._autocast():
                projections = self.target["projector"](self.target["network"](images))
            state = self.curriculum(index)
            loss, statistics = tr_batch_loss(predictions.float(), projections.float(), soft_detection_score(features),
                                             homographies, settings.crop, settings.soft_lambda, state.alpha,
                                             settings.min_correspondences)
            metrics.update({**statistics, "alpha": state.alpha, "tau": state.tau})
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None:
            loss.backward()
            self.optimizer.step()
        else:
            log.warning("step %d: no pair has %d correspondences; no update", index, settings.min_correspondences)
        self.scheduler.step()
        if settings.loss == "tr":
            ema_update(self.target, self.online, self.curriculum.tau_at(index))
        metrics.update({
            "loss": float(loss.detach()) if loss is not None else float("nan"),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "desc_cos": descriptor_similarity(features[: settings.batch_size]),
            "nn_acc": nearest_neighbour_accuracy(features.detach(), homographies, settings.crop),
        })
        return metrics


def train_tr(settings: TRTraining, out_dir: str | os.PathLike, resume: bool = False, device: str | torch.device = "cpu",
             checkpoint_every: int = 250, progress: bool = True, pairs: PhotoPairs | None = None) -> dict[str, Any]:
    """Train (or resume) one run into ``out_dir``; returns its summary.

    ``out_dir`` receives ``config.json``, ``log.csv`` (loss, learning rate, warp strength,
    ``desc_cos``, ``nn_acc``; for TR also ``pred``, ``label``, ``alpha``, ``tau``,
    ``correspondences``), ``checkpoint.pt`` every ``checkpoint_every`` steps and, at the end,
    ``weights.pt`` (the network's state_dict: ``cvdeep.TR_create(model=settings.model,
    weights=...)`` loads it) and ``summary.json``. ``cvdeep.Error`` for bad settings, an unreadable
    photo folder, or an existing run without ``resume``.
    """
    started = time.time()
    task = DenseTraining(settings, device, pairs, progress)
    trainer = Trainer(out_dir, task.state, settings.steps, task.rng, task.config(), checkpoint_every, resume, progress)
    return finish_run(trainer.run(task.step), cpu_weights(task.network), out_dir, task.device, started,
                      {"model": settings.model})
