"""``cvdeep train delf``: DELF's attention and PCA, learned from unlabeled photos.

DELF trains its attention with image-level labels only (Noh et al., ICCV 2017, section 4): the
descriptors are fixed, each image's feature map ``f`` is pooled with the attention as weights,
``y = mean_n(a(f_n) * f_n / |f_n|)`` (the L2-normalised features, as the official
``use_l2_normalized_feature`` / TF2 ``AttentionModel``), a classifier predicts the
image's landmark class from ``y`` and the cross-entropy trains the attention network (and the
classifier) while no gradient reaches the backbone. Landmark labels cannot be had here, so the
supervision is kept in spirit: **each training photo is its own class** and every step shows
random views of photos (a square window of the photo seen through a random homography: zoom,
rotation, perspective, plus photometric changes). To name its photo from a view, the classifier
needs the parts of the image that survive those changes and set it apart from the other photos,
and the attention learns to weight exactly those cells, as landmark classification makes it
weight the landmark over clutter. The zoom of the views (``homography.scale_range``) plays the part
of the paper's random rescaling of the training images: the attention sees content at the scales of
the extraction pyramid.

The classifier is a *cosine* classifier (``CosineClassifier``: logits ``s cos(y, w_c)``, ``s`` =
``logit_scale``), not the paper's linear layer. Why, measured: with the linear layer on a frozen
``d2-cvdeep`` backbone the cross-entropy stayed at ln(1028) and the accuracy at 0 for 424 steps
(docs/models/delf-cvdeep.md): the pooled mean of unit features pointing many ways is short, so the
logits and their gradients are tiny, and each of 1,028 classes comes back only every 64 steps. The
cosine form makes the logits independent of that length (only the direction of ``y``, i.e. which
cells the attention weights, matters), as in metric learning's normalised softmax.

Official settings kept (tensorflow/models ``research/delf/delf/python/training/train.py``): SGD
with momentum 0.9, initial learning rate 0.01 decaying linearly to 0, gradient clipping at a
global norm of 10, an L2 penalty of 1e-4 on the attention kernels (here SGD weight decay on the
two convolution weights). Not kept: batches of 32 images of 321 px (here 16 views of 224 px by
default, for a CPU) and the classes.

After the steps, two things ``DELFNet`` needs are computed from the training photos (the first
``pca_images`` of them, evenly spaced), with the trained attention:

- **PCA** (paper: learned on the training descriptors): the L2-normalised features of the
  ``nfeatures`` (1000) most attended cells of every photo over the ``pca_scales`` pyramid, their
  mean and covariance eigenvectors (rows of ``pca_matrix``, by decreasing variance, each with its
  largest entry positive) and variances (for whitening).
- **Attention calibration**: ``attention_scale`` is set so that the ``calibration_quantile``
  (default 0.1) quantile of those selected cells' attention equals ``threshold`` (default 100, the
  official ``score_threshold``). So with the default ``DELF`` parameters, on photos like the
  training ones, the threshold drops about one in ten of the 1000 features and more on flat,
  textureless images, as a fixed threshold does for the official model, whose own scale is set
  by its training.

Every draw of step ``k`` comes from generators seeded ``(seed, k, view)``, so a resumed run
(``Trainer``: checkpoints of the attention, classifier, optimizer and schedule) ends with the same
weights as an uninterrupted one. ``weights.pt`` is the whole ``DELFNet`` state_dict (backbone
copy, attention, PCA, scale): ``cvdeep.DELF_create(model=..., weights=...)`` loads it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Error
from ..models import build_model, get_model
from ..nets.delf import OFFICIAL_SCALES, DELFConfig, DELFNet, parse_scales
from .descriptor import DEFAULT_IMAGES
from .homography import HomographyConfig, sample_homography, warp_image
from .loop import Trainer, cpu_weights, finish_run, seed_everything
from .patch_pairs import image_files
from .photometric import PhotometricConfig, augment

log = logging.getLogger(__name__)


def _default_homography() -> dict[str, Any]:
    """Views showing 36 % to 90 % of the window's side (region scale 0.4..1 of a 0.9 patch; on a 300 px
    window and 224 px views, magnified 0.8x to 2.1x), turned up to 30 deg, mild perspective, always
    inside the photo."""
    return dataclasses.asdict(HomographyConfig(patch_ratio=0.9, perspective=0.1, scale_range=(0.4, 1.0),
                                               max_angle_deg=30.0, allow_artifacts=False))


@dataclass
class DELFTraining:
    """Everything a ``cvdeep train delf`` run depends on (stored beside the run, checked on resume)."""

    model: str = "delf-cvdeep"
    """Registry name of the DELF model whose network is trained."""
    backbone: str | None = "d2-cvdeep"
    """Weights of the frozen backbone: a registry name (``d2-cvdeep``, the TRNet that matches best; ``tr-cvdeep``;
    an official DELF model for the ResNet-50 backbone) or a file (a TRNet or DELF state_dict); None keeps the
    random initialisation."""
    images: str = str(DEFAULT_IMAGES)
    """A folder of unlabeled photos (searched recursively); each is one class."""
    steps: int = 3000
    batch_size: int = 16
    crop: int = 224
    """Side of every view in pixels."""
    max_side: int = 400
    """Photos are shrunk (area) so their long side is at most this; ones shorter than ``crop`` are enlarged."""
    lr: float = 0.01
    logit_scale: float = 16.0
    """``s`` of the cosine classifier (module docstring)."""
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_norm: float = 10.0
    homography: dict[str, Any] = field(default_factory=_default_homography)
    """``HomographyConfig`` of the views (on a square window of the photo, onto the crop)."""
    photometric: bool = True
    """Random ``PhotometricConfig()`` changes of every view."""
    seed: int = 0
    pca_images: int = 300
    """Photos (evenly spaced among all) whose features fit the PCA and the attention calibration."""
    pca_scales: str = OFFICIAL_SCALES
    nfeatures: int = 1000
    """Most attended cells per photo kept for the PCA and the calibration (official max_feature_num)."""
    calibration_quantile: float = 0.1
    threshold: float = 100.0
    """The attention the ``calibration_quantile`` of the selected cells is scaled to (DELF's default threshold)."""

    def __post_init__(self) -> None:
        family, _ = get_model(self.model)
        if family.name != "delf":
            raise Error(f"model: {self.model!r} is a {family.public_name} model; expected a DELF model "
                        "(delf-cvdeep, delf-gld, delf-landmarks)")
        for name, low in (("steps", 1), ("batch_size", 2), ("crop", 32), ("max_side", 32), ("pca_images", 1),
                          ("nfeatures", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise Error(f"{name}: got {value!r}; expected an integer >= {low}")
        if self.max_side < self.crop:
            raise Error(f"max_side: got {self.max_side}; expected at least crop ({self.crop})")
        for name in ("lr", "logit_scale", "clip_norm", "threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise Error(f"{name}: got {value!r}; expected a number > 0")
        if not 0.0 <= self.momentum < 1.0 or not self.weight_decay >= 0:
            raise Error(f"momentum {self.momentum!r} / weight_decay {self.weight_decay!r}: expected [0, 1) and >= 0")
        if not 0.0 < self.calibration_quantile < 1.0:
            raise Error(f"calibration_quantile: got {self.calibration_quantile!r}; expected a number in (0, 1)")
        parse_scales(self.pca_scales)
        self.homography_config()

    def homography_config(self) -> HomographyConfig:
        try:
            return HomographyConfig(**self.homography)
        except TypeError as exc:
            fields = ", ".join(f.name for f in dataclasses.fields(HomographyConfig))
            raise Error(f"homography: {exc}; accepted keys: {fields}") from None


# --- data ----------------------------------------------------------------------------------------


def read_photo(path: str | os.PathLike, max_side: int, min_side: int) -> np.ndarray:
    """A photo as BGR uint8, shrunk (area) to ``max_side`` on its long side, enlarged to ``min_side`` on its
    short one."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = None if data is None or data.size == 0 else cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise Error(f"cannot read image {str(path)!r}")
    height, width = image.shape[:2]
    if max(height, width) > max_side:
        factor = max_side / max(height, width)
        image = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                           interpolation=cv2.INTER_AREA)
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        factor = min_side / min(height, width)
        image = cv2.resize(image, (max(min_side, math.ceil(width * factor)), max(min_side, math.ceil(height * factor))),
                           interpolation=cv2.INTER_LINEAR)
    return image


class Photos:
    """The training photos in memory (BGR uint8), one class each, and the random views drawn from them."""

    def __init__(self, folder: str | os.PathLike, crop: int, max_side: int, progress: bool = False) -> None:
        files = image_files(folder)
        self.crop = int(crop)
        iterator: Any = files
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(files, desc="loading photos", unit="photo")
        self.photos = [read_photo(path, max_side, crop) for path in iterator]
        if len(self.photos) < 2:
            raise Error(f"{folder}: found {len(self.photos)} photo; attention training needs at least 2 "
                        "(one class each)")

    def __len__(self) -> int:
        return len(self.photos)

    def view(self, index: int, rng: np.random.Generator, homography: HomographyConfig,
             photometric: PhotometricConfig | None) -> np.ndarray:
        """A (crop, crop, 3) uint8 view of photo ``index``: a random square window of it seen through a
        random homography, then photometric changes."""
        photo = self.photos[index]
        height, width = photo.shape[:2]
        side = min(height, width)
        x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        to_window = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        H = sample_homography(rng, side, side, homography, out_size=(self.crop, self.crop))
        view = warp_image(photo, H @ to_window, (self.crop, self.crop))
        return augment(view, rng, photometric) if photometric is not None else view


def draw_batch(photos: Photos, settings: DELFTraining, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s views (B, 3, crop, crop) RGB in [0, 1] and their photo indices (B,)."""
    rng = np.random.default_rng([settings.seed, step])
    labels = rng.integers(0, len(photos), settings.batch_size)
    homography = settings.homography_config()
    photometric = PhotometricConfig() if settings.photometric else None
    views = [photos.view(int(label), np.random.default_rng([settings.seed, step, index]), homography, photometric)
             for index, label in enumerate(labels)]
    batch = torch.from_numpy(np.stack(views)[..., ::-1].copy()).permute(0, 3, 1, 2).float().div_(255.0)
    return batch, torch.from_numpy(labels)


# --- the model pieces --------------------------------------------------------------------------------


def attention_pooling(features: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """DELF's attention-weighted pooling, the mean over cells of ``attention * f / |f|``:
    features (B, D, h, w) and attention (B, 1, h, w) -> (B, D)."""
    return (F.normalize(features, dim=1) * attention).mean(dim=(2, 3))


class CosineClassifier(nn.Module):
    """Logits ``scale * cos(x, w_c)`` of (B, D) vectors against (C, D) class weights -> (B, C)."""

    def __init__(self, dimension: int, classes: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dimension) / math.sqrt(dimension))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


def load_backbone(network: DELFNet, source: str | None) -> None:
    """Put the weights named by ``source`` (see ``DELFTraining.backbone``) into ``network.backbone``."""
    if source is None:
        return
    if not os.path.exists(source):
        other = build_model(source)
        state = other.backbone.state_dict() if isinstance(other, DELFNet) else other.state_dict()
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and any(str(key).startswith("backbone.") for key in state):
            state = {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
    try:
        network.backbone.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise Error(f"backbone: {source!r} holds no weights of this DELF model's {network.backbone_kind} backbone "
                    f"({type(exc).__name__}: {str(exc)[:300]})") from exc


class AttentionTraining:
    """One run's objects and its step function (``train_delf`` wraps it in the ``Trainer``)."""

    def __init__(self, settings: DELFTraining, device: str | torch.device = "cpu", photos: Photos | None = None,
                 progress: bool = False) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.rng = seed_everything(settings.seed)
        self.photos = photos if photos is not None else Photos(settings.images, settings.crop, settings.max_side,
                                                               progress)
        network = build_model(settings.model, pretrained=False)
        if not isinstance(network, DELFNet):
            raise Error(f"{settings.model}: its network is not a DELFNet")
        load_backbone(network, settings.backbone)
        self.network = network.to(self.device)
        self.network.backbone.eval().requires_grad_(False)
        self.network.attention.train()
        self.classifier = CosineClassifier(network.descriptor_size, len(self.photos),
                                           settings.logit_scale).to(self.device)
        kernels = [network.attention.conv1.weight, network.attention.conv2.weight]
        others = [network.attention.conv1_bn.weight, network.attention.conv1_bn.bias, network.attention.conv2.bias,
                  *self.classifier.parameters()]
        self.optimizer = torch.optim.SGD([{"params": kernels, "weight_decay": settings.weight_decay},
                                          {"params": others, "weight_decay": 0.0}],
                                         lr=settings.lr, momentum=settings.momentum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda step: max(0.0, 1.0 - step / settings.steps))
        self.state: dict[str, Any] = {"attention": network.attention, "classifier": self.classifier,
                                      "optimizer": self.optimizer, "scheduler": self.scheduler}

    def config(self) -> dict[str, Any]:
        """The settings as stored beside the run (and compared on resume)."""
        return {**dataclasses.asdict(self.settings), "photos": len(self.photos)}

    def step(self, index: int) -> dict[str, float]:
        """One optimiser step on step ``index``'s views; returns the metrics logged for it."""
        images, labels = draw_batch(self.photos, self.settings, index)
        images, labels = images.to(self.device), labels.to(self.device)
        with torch.no_grad():
            features = self.network.backbone_features(images)
        attention = self.network.attention(features)
        logits = self.classifier(attention_pooling(features, attention))
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.settings.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            scores = attention.detach().flatten()
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": float(loss.detach()), "accuracy": float(accuracy), "grad_norm": float(norm),
                "lr": float(self.scheduler.get_last_lr()[0]), "attention_mean": float(scores.mean()),
                "attention_p50": float(scores.median()), "attention_max": float(scores.max())}


# --- PCA and calibration ------------------------------------------------------------------------------


def photo_subset(count: int, wanted: int) -> list[int]:
    """``wanted`` photo indices evenly spaced among ``count`` (all when fewer)."""
    if wanted >= count:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, wanted)})


@torch.no_grad()
def training_descriptors(network: DELFNet, photos: Photos, settings: DELFTraining,
                         progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The L2-normalised features (N, D) and attention (N,) of the ``nfeatures`` most attended cells of
    each photo of ``photo_subset`` over the ``pca_scales`` pyramid (threshold off, no PCA, no NMS)."""
    network.eval()
    config = DELFConfig(nfeatures=settings.nfeatures, detection_threshold=float("-inf"), scales=settings.pca_scales,
                        pca_dim=0)
    indices = photo_subset(len(photos), settings.pca_images)
    iterator: Any = indices
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(indices, desc="PCA descriptors", unit="photo")
    descriptors, scores = [], []
    device = next(network.parameters()).device
    for index in iterator:
        photo = photos.photos[index]
        image = torch.from_numpy(photo[..., ::-1].copy()).permute(2, 0, 1)[None].float().div_(255.0).to(device)
        valid = torch.ones((1, 1, *photo.shape[:2]), dtype=torch.bool, device=device)
        found = network.extract(image, valid, config)
        descriptors.append(found["descriptors"].cpu().numpy())
        scores.append(found["scores"].cpu().numpy())
    return np.concatenate(descriptors).astype(np.float64), np.concatenate(scores).astype(np.float64)


def fit_pca(descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (D,), components (D, D) as rows by decreasing variance (largest entry of each positive) and
    their variances (D,) of (N, D) descriptors."""
    if len(descriptors) < 2:
        raise Error(f"PCA needs at least 2 descriptors; the training photos gave {len(descriptors)}")
    mean = descriptors.mean(axis=0)
    centred = descriptors - mean
    covariance = centred.T @ centred / (len(descriptors) - 1)
    variances, vectors = np.linalg.eigh(covariance)
    order = np.argsort(variances)[::-1]
    components = vectors[:, order].T
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    return mean, components, np.clip(variances[order], 0.0, None)


def finish(network: DELFNet, photos: Photos, settings: DELFTraining, progress: bool = False) -> dict[str, float]:
    """Fit the PCA and calibrate ``attention_scale`` (module docstring); returns statistics for the summary."""
    network.attention_scale.fill_(1.0)
    descriptors, scores = training_descriptors(network, photos, settings, progress)
    mean, components, variances = fit_pca(descriptors)
    device = network.pca_mean.device
    network.pca_mean.copy_(torch.from_numpy(mean).float().to(device))
    network.pca_matrix.copy_(torch.from_numpy(components).float().to(device))
    network.pca_variances.copy_(torch.from_numpy(variances).float().to(device))
    network.pca_fitted.fill_(True)
    quantile = float(np.quantile(scores, settings.calibration_quantile))
    if not quantile > 0:
        raise Error(f"attention calibration: the {settings.calibration_quantile} quantile of the attention is "
                    f"{quantile}; the attention network gives no positive scores")
    network.attention_scale.fill_(settings.threshold / quantile)
    default_dim = DELFConfig().pca_dim
    explained = float(variances[:default_dim].sum() / max(variances.sum(), 1e-12))
    return {"pca_descriptors": len(descriptors), f"pca_variance_kept_{default_dim}": round(explained, 4),
            "attention_scale": float(network.attention_scale), "attention_quantile_before": quantile}


def train_delf(settings: DELFTraining, out_dir: str | os.PathLike, resume: bool = False,
               device: str | torch.device = "cpu", checkpoint_every: int = 250, progress: bool = True,
               photos: Photos | None = None) -> dict[str, Any]:
    """Train (or resume) the attention into ``out_dir``, then fit the PCA and the calibration; returns the summary.

    ``out_dir`` receives ``config.json``, ``log.csv`` (loss, accuracy, grad_norm, lr, attention
    statistics), ``checkpoint.pt`` every ``checkpoint_every`` steps, and at the end ``weights.pt``
    (the whole ``DELFNet`` state_dict) and ``summary.json``. ``cvdeep.Error`` for bad settings, an
    unreadable photo folder, backbone weights that do not fit, or an existing run without ``resume``.
    """
    started = time.time()
    task = AttentionTraining(settings, device, photos, progress)
    trainer = Trainer(out_dir, task.state, settings.steps, task.rng, task.config(), checkpoint_every, resume, progress)
    summary = trainer.run(task.step)
    summary.update(finish(task.network, task.photos, settings, progress))
    return finish_run(summary, cpu_weights(task.network), out_dir, task.device, started, {"model": settings.model})
