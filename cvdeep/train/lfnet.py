"""Training LF-Net (``cvdeep.nets.lfnet``) with its two-branch scheme on homographies of unlabeled photos.

``cvdeep train lfnet`` draws pairs of views (I_i, I_j) of one photo related by a known homography
H (i pixels -> j pixels) and runs the network on both. As the paper's Figure 1(b) says, branch j
only *supervises* branch i through the warp: everything read from branch j is detached (no
gradient), the equivalent of a network copy updated at the next iteration. Both views play
branch i for the dense losses (each supervised by the other); the descriptor losses use view i's
keypoints. The seed's losses:

- ``L_im = |S_i - g(w(S_j))|^2``: w warps j's score map into i's frame, g "cleans" it (the release:
  5 x 5 NMS, the ``top_k`` strongest, each drawn as a 15 x 15 Gaussian of sigma 0.5 px, capped at
  1); the mean over the pixels of i that j sees.
- ``L_geom = lambda_ori |theta_i - theta^_j|^2 + lambda_scale |s_i - s^_j|^2``, dense: the orientation
  (unit (cos, sin)) must equal j's, read at H(p) and turned back by H's local rotation at p; the log
  scale must equal log(s_j(H(p)) / sigma(p)), sigma the local scale sqrt|det J| of H, clipped to
  the network's scale range. The release's weights 0.1 and 0.1 (``ori_weight``, ``scale_weight``).
- ``L_pair = sum_k |D_i^k - D^_j^k|^2``: the ``top_k`` keypoints of S_i (NMS, at least 16 px from
  the edge), refined by ``cvdeep.ops.softargmax``, their patches cut by ``cvdeep.ops.
  extract_patches`` at the refined position, scale and orientation of branch i (differentiable in
  all three, so the detector learns from the descriptor), against the patches at H(x) with branch
  j's scale and orientation there (detached). Weight 0.01 (``weight_det_loss``).
- ``L_tri = sum_k max(0, |D_i^k - D^_j^k|^2 - |D_i^k - D^_j^k'|^2 + C)``, C = 1 (``desc_margin``):
  k' one of j's other patches whose position lies more than ``negative_radius`` px from H(x_k) (the
  release's 32 px at 256 px crops), drawn among the hardest ``pickup`` of them, ``pickup`` decaying
  from 64 by 0.9 every 1000 steps to 5 (the release's random hard mining with its schedule).

The detector is updated by ``L_im + 0.01 L_pair + 0.1 L_ori + 0.1 L_scale`` and the descriptor by
``L_tri`` (two gradients, as the release's two optimisers), one AdamW step for both.

Data (``PhotoPairs`` of ``cvdeep.train.tr``): photos of ``images`` (default ``../shared/
train_images``, never the evaluation data), view i a ``crop`` x ``crop`` window, view j the photo
through a random homography of that window (any in-plane angle and zoom 0.71..1.41, as the
release's rotation and scale augmentation, perspective 0.1), independent photometric changes; the
pixels of j that show no photo are left out of every loss. Step k's draws come from generators
seeded (seed, k, ...), so a resumed run sees exactly what it would have seen.

Sizes (our choice for the 2-core CPU this project trains on): 2 pairs of 160 x 160 crops per
step, 64 keypoints per view (the release: 6 pairs of 256 x 256, 512 keypoints), the network as
declared (``lfnet-cvdeep``). Measured cost of one step (median of 8, 1 thread, eager, on 40 of the
training photos, on the project's 2-core AVX-512 machine while other trainings kept its load at 8
to 9): 0.84 s in bf16, 1.47 s in fp32. ``summary.json`` holds each run's own time.

Sources: the seed's LF-Net losses (``shared/seeds``); Y. Ono et al., NeurIPS 2018; vcg-uvic/
lf-net-release ``train_lfnet.py`` and ``det_tools.py`` for the constants (facts only).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import ops
from ..errors import Error
from ..models import build_model
from ..nets.lfnet import REFINE_TEMPERATURE, REFINE_WINDOW, LFNet
from .descriptor import DEFAULT_IMAGES, _init_path, bf16_supported
from .homography import (
    HomographyConfig,
    affine_rotation_deg,
    affine_scale,
    local_affine,
    sample_homography,
    valid_mask,
    warp_image,
    warp_image_tensor,
    warp_points,
)
from .lift import step_generator
from .loop import Trainer, cpu_weights, finish_run, seed_everything
from .photometric import PhotometricConfig, augment
from .tr import PhotoPairs, _warmup_cosine

log = logging.getLogger(__name__)

MODEL = "lfnet-cvdeep"


def _default_homography() -> dict[str, Any]:
    return dataclasses.asdict(HomographyConfig(patch_ratio=0.85, perspective=0.1, scale_range=(0.71, 1.41),
                                               max_angle_deg=180.0, allow_artifacts=True))


@dataclass
class LFNetTraining:
    """Everything a ``cvdeep train lfnet`` run depends on (stored beside the run, checked on resume)."""

    images: str = str(DEFAULT_IMAGES)
    steps: int = 3000
    batch_size: int = 2
    """Image pairs per step."""
    crop: int = 160
    max_side: int = 400
    top_k: int = 64
    """Keypoints per view for the descriptor losses and in the cleaned target score map."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    pair_weight: float = 0.01
    ori_weight: float = 0.1
    scale_weight: float = 0.1
    margin: float = 1.0
    negative_radius: float = 16.0
    """Pixels: j's patches closer than this to the positive's position are not negatives."""
    nms_radius: int = 2
    """NMS radius of the keypoints and of g (the release's 5 x 5)."""
    edge: int = 16
    """No training keypoint within this many pixels of the crop's edge (the release's ``crop_radius``)."""
    target_sigma: float = 0.5
    """Sigma (px) of the Gaussian drawn at each keypoint of the cleaned target (``hm_sigma``; 15 x 15)."""
    homography: dict[str, Any] = field(default_factory=_default_homography)
    photometric: bool = True
    precision: str = "bf16"
    seed: int = 0
    init: str | None = None
    network_args: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model's network arguments (experiments and tests; the shipped model uses none)."""

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 1), ("top_k", 2), ("warmup_steps", 0), ("nms_radius", 0),
                          ("edge", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise Error(f"{name}: got {value!r}; expected an integer >= {low}")
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 64:
            raise Error(f"crop: got {self.crop!r}; expected an integer >= 64")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < self.crop:
            raise Error(f"max_side: got {self.max_side!r}; expected an integer >= crop ({self.crop})")
        for name in ("lr", "margin", "target_sigma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise Error(f"{name}: got {value!r}; expected a number > 0")
        for name in ("weight_decay", "pair_weight", "ori_weight", "scale_weight", "negative_radius"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise Error(f"{name}: got {value!r}; expected a number >= 0")
        if self.precision not in ("bf16", "fp32"):
            raise Error(f"precision: got {self.precision!r}; accepted: 'bf16', 'fp32'")
        self.homography_config()

    def homography_config(self) -> HomographyConfig:
        try:
            return HomographyConfig(**self.homography)
        except TypeError as exc:
            fields = ", ".join(f.name for f in dataclasses.fields(HomographyConfig))
            raise Error(f"homography: {exc}; accepted keys: {fields}") from None


# --- data ------------------------------------------------------------------------------------------


@dataclass
class PairBatch:
    """Views i and j (B, 1, c, c) in [0, 1], homographies (B, 3, 3) float64 i -> j, and the pixels of j
    that show the photo (B, 1, c, c) bool."""

    first: torch.Tensor
    second: torch.Tensor
    homographies: torch.Tensor
    second_valid: torch.Tensor


def draw_pairs(pairs: PhotoPairs, settings: LFNetTraining, step: int) -> PairBatch:
    """Step ``step``'s pairs: a window of a photo and the photo seen through a random homography of it."""
    rng = np.random.default_rng([settings.seed, step])
    crop = settings.crop
    config = settings.homography_config()
    first, second, warps, valid = [], [], [], []
    for index in range(settings.batch_size):
        photo = pairs.photos[int(rng.integers(len(pairs.photos)))]
        height, width = photo.shape
        x0, y0 = int(rng.integers(0, width - crop + 1)), int(rng.integers(0, height - crop + 1))
        H = sample_homography(np.random.default_rng([settings.seed, step, index, 0]), crop, crop, config)
        total = H @ np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        view_i = np.ascontiguousarray(photo[y0: y0 + crop, x0: x0 + crop])
        view_j = warp_image(photo, total, (crop, crop))
        if settings.photometric:
            photometric_rng = np.random.default_rng([settings.seed, step, index, 1])
            view_i = augment(view_i, photometric_rng, PhotometricConfig())
            view_j = augment(view_j, photometric_rng, PhotometricConfig())
        first.append(view_i)
        second.append(view_j)
        warps.append(H)
        valid.append(valid_mask(total, (width, height), (crop, crop)))
    to_tensor = lambda views: torch.from_numpy(np.stack(views)).float().div_(255.0)[:, None]  # noqa: E731
    return PairBatch(to_tensor(first), to_tensor(second), torch.from_numpy(np.stack(warps)),
                     torch.from_numpy(np.stack(valid))[:, None])


# --- dense geometry --------------------------------------------------------------------------------


def pixel_grid(size: int) -> np.ndarray:
    """(size * size, 2) pixel centres (x, y) in raster order."""
    ys, xs = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    return np.c_[xs.ravel(), ys.ravel()]


def view_geometry(H: np.ndarray, size: int,
                  target_valid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every pixel p of a (size, size) view mapped by ``H`` into another: whether H(p) falls on a
    pixel of the other that shows the photo (``target_valid`` (size, size) bool), H's local rotation
    (degrees, clockwise on screen) and local scale at p; each (size, size)."""
    grid = pixel_grid(size)
    mapped = warp_points(H, grid)
    with np.errstate(invalid="ignore"):
        ij = np.round(np.nan_to_num(mapped, nan=-1.0)).astype(np.int64)
        inside = np.isfinite(mapped).all(axis=1) & (ij >= 0).all(axis=1) & (ij < size).all(axis=1)
    seen = np.zeros(len(grid), dtype=bool)
    seen[inside] = target_valid[ij[inside, 1], ij[inside, 0]]
    jacobians = local_affine(H, grid)
    rotation = np.nan_to_num(affine_rotation_deg(jacobians))
    scale = np.nan_to_num(affine_scale(jacobians), nan=1.0)
    shape = (size, size)
    as_tensor = lambda a: torch.from_numpy(a.reshape(shape))  # noqa: E731
    return as_tensor(seen), as_tensor(rotation).float(), as_tensor(scale).float()


def rotate_vectors(vectors: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) (cos, sin) fields turned by (B, H, W) angles (degrees, clockwise on screen)."""
    radians = torch.deg2rad(degrees)
    cos, sin = torch.cos(radians), torch.sin(radians)
    c, s = vectors[:, 0], vectors[:, 1]
    return torch.stack([c * cos - s * sin, s * cos + c * sin], dim=1)


def gaussian_target(points: list[torch.Tensor], size: int, sigma: float, window: int = 15) -> torch.Tensor:
    """(B, 1, size, size): a ``window`` x ``window`` Gaussian (peak 1, ``sigma`` px) at each integer (x, y)
    of each image's points, summed and capped at 1 (the release's ``g``)."""
    maps = torch.zeros((len(points), 1, size, size))
    for index, xy in enumerate(points):
        maps[index, 0, xy[:, 1].long(), xy[:, 0].long()] = 1.0
    offsets = torch.arange(window, dtype=torch.float32) - window // 2
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(line, line)[None, None]
    return F.conv2d(maps, kernel, padding=window // 2).clamp(max=1.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image, the mean of ``values`` over ``mask`` (at least one pixel); then over the images."""
    mask = mask.to(values.dtype)
    dims = tuple(range(1, values.dim()))
    return ((values * mask).sum(dim=dims) / mask.sum(dim=dims).clamp_min(1.0)).mean()


def mined_negatives(anchors: torch.Tensor, candidates: torch.Tensor, positions: torch.Tensor, radius: float,
                    usable: torch.Tensor, pickup: int, generator: torch.Generator) -> torch.Tensor:
    """(K,) squared distance from each anchor (K, D) to a negative among the candidates (K, D): one drawn
    uniformly among its ``pickup`` closest candidates that are usable and lie more than ``radius`` px
    (``positions`` (K, 2)) from the anchor's own positive (the release's random hard mining; ``pickup`` 1
    is the hardest negative); +inf when there is none."""
    distances = torch.cdist(anchors.float(), candidates.float()).pow(2)
    far = torch.cdist(positions.float(), positions.float()) > radius
    allowed = far & usable[None, :]
    ranked = distances.masked_fill(~allowed, float("inf")).sort(dim=1).values
    available = allowed.sum(dim=1).clamp(min=1, max=max(1, int(pickup)))
    draw = (torch.rand(len(anchors), generator=generator) * available.cpu()).long().to(anchors.device)
    return ranked.gather(1, draw[:, None])[:, 0]


def pickup_schedule(step: int, initial: int = 64, decay: float = 0.9, every: int = 1000, least: int = 5) -> int:
    """How many of the hardest negatives the mining draws from at ``step``: ``initial`` decaying by ``decay``
    every ``every`` steps, at least ``least`` (the release's ``init_num_mine``, ``pickup_delay``,
    ``min_num_pickup``)."""
    return max(int(initial * decay ** (step / every)), least)


class LFNetTask:
    """One run's network, optimiser and step function (``train_lfnet`` wraps it in the ``Trainer``)."""

    def __init__(self, settings: LFNetTraining, device: str | torch.device = "cpu", pairs: PhotoPairs | None = None,
                 progress: bool = False) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.rng = seed_everything(settings.seed)
        self.pairs = pairs or PhotoPairs(settings.images, settings.crop, settings.max_side, progress)
        init = _init_path(settings.init)
        network: torch.nn.Module
        if settings.network_args:
            network = LFNet(**settings.network_args).to(self.device)
            if init is not None:
                network.load_pretrained(torch.load(init, map_location="cpu", weights_only=True))
        else:
            network = build_model(MODEL, weights=init, device=self.device, pretrained=init is not None)
        if not isinstance(network, LFNet):
            raise Error(f"{MODEL}: its network is not an LFNet")
        self.network = network.train()
        self.use_bf16 = settings.precision == "bf16" and bf16_supported(self.device)
        if settings.precision == "bf16" and not self.use_bf16:
            log.warning("bf16 is not native on this %s: training in fp32", self.device.type)
        self.detector_parameters = list(self.network.detector.parameters())
        self.descriptor_parameters = list(self.network.descriptor.parameters())
        self.optimizer = torch.optim.AdamW(self.detector_parameters + self.descriptor_parameters, lr=settings.lr,
                                           weight_decay=settings.weight_decay)
        self.scheduler = _warmup_cosine(self.optimizer, settings.warmup_steps, settings.steps)
        self.state: dict[str, Any] = {"network": self.network, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def config(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.settings), "model": MODEL,
                "effective_precision": "bf16" if self.use_bf16 else "fp32", "photos": len(self.pairs)}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def _maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._autocast():
            maps = self.network(images)
        return {key: value.float() for key, value in maps.items()}

    def dense_losses(self, maps: dict[str, torch.Tensor],
                     batch: PairBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """L_im, L_ori and L_scale of both views (each supervised by the other), the targets they were
        compared with (built from the other view's detached maps: branch j) and the (2B, c, c) masks of
        the pixels whose image in the other view shows the photo."""
        settings = self.settings
        count, size = settings.batch_size, settings.crop
        homographies = batch.homographies.numpy()
        ones = np.ones((size, size), dtype=bool)
        forward = [view_geometry(H, size, batch.second_valid[n, 0].numpy()) for n, H in enumerate(homographies)]
        backward = [view_geometry(np.linalg.inv(H), size, ones) for H in homographies]
        seen = torch.stack([g[0] for g in forward] + [g[0] & batch.second_valid[n, 0] for n, g in enumerate(backward)])
        rotation = torch.stack([g[1] for g in forward] + [g[1] for g in backward]).to(self.device)
        scale = torch.stack([g[2] for g in forward] + [g[2] for g in backward]).to(self.device)
        seen = seen.to(self.device)
        # Each view's pixel p reads the other view's (detached) maps at H p.
        to_other = torch.cat([torch.linalg.inv(batch.homographies), batch.homographies]).to(self.device)
        other = lambda t: torch.cat([t[count:], t[:count]])  # noqa: E731
        read = lambda t, mode: warp_image_tensor(other(t.detach()), to_other, (size, size), mode=mode)  # noqa: E731

        score = maps["score"][:, None]
        warped_score = read(score, "bilinear")
        targets = []
        for n in range(2 * count):
            cleaned = warped_score[n: n + 1].masked_fill(~seen[n][None, None], 0.0)
            cells, _ = ops.nms(cleaned, settings.nms_radius, 0.0, settings.top_k)
            targets.append(cells[0])
        target_score = gaussian_target(targets, size, settings.target_sigma).to(self.device)
        target_orientation = F.normalize(rotate_vectors(read(maps["orientation"], "nearest"), -rotation), dim=1,
                                         eps=1e-12)
        scales = self.network.scales
        target_scale = read(maps["scale"][:, None], "nearest")[:, 0] / scale
        target_scale = target_scale.clamp(float(scales.min()), float(scales.max()))
        losses = {
            "score": masked_mean((score - target_score).pow(2)[:, 0], seen),
            "ori": masked_mean((maps["orientation"] - target_orientation).pow(2).sum(dim=1), seen),
            "scale": masked_mean((torch.log(maps["scale"]) - torch.log(target_scale)).pow(2), seen),
        }
        targets_out = {"score": target_score, "orientation": target_orientation, "scale": target_scale}
        return losses, targets_out, seen

    def step(self, index: int) -> dict[str, float]:
        settings = self.settings
        batch = draw_pairs(self.pairs, settings, index)
        images = torch.cat([batch.first, batch.second]).to(self.device)
        maps = self._maps(images)
        dense, _, seen = self.dense_losses(maps, batch)
        pair_loss, triplet_loss, statistics = self._descriptor_losses(maps, batch, seen, index)
        detector_loss = (dense["score"] + settings.pair_weight * pair_loss + settings.ori_weight * dense["ori"]
                         + settings.scale_weight * dense["scale"])
        self.optimizer.zero_grad(set_to_none=True)
        detector_grads = torch.autograd.grad(detector_loss, self.detector_parameters, retain_graph=True,
                                             allow_unused=True)
        descriptor_grads = torch.autograd.grad(triplet_loss, self.descriptor_parameters, allow_unused=True)
        for parameter, grad in zip(self.detector_parameters + self.descriptor_parameters,
                                   list(detector_grads) + list(descriptor_grads)):
            parameter.grad = grad
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": float(detector_loss.detach() + triplet_loss.detach()),
                "lr": float(self.scheduler.get_last_lr()[0]),
                **{name: float(value.detach()) for name, value in dense.items()},
                "pair": float(pair_loss.detach()), "triplet": float(triplet_loss.detach()), **statistics}

    def _descriptor_losses(self, maps: dict[str, torch.Tensor], batch: PairBatch, seen: torch.Tensor,
                           index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        settings = self.settings
        generator = step_generator(settings.seed, index)
        count, size, edge = settings.batch_size, settings.crop, settings.edge
        inner = torch.zeros((size, size), dtype=torch.bool, device=self.device)
        inner[edge: size - edge, edge: size - edge] = True
        patches_i, patches_j, positions, visible = [], [], [], []
        for n in range(count):
            score = maps["score"][n]
            allowed = (seen[n] & inner)[None, None]
            candidates = score.detach()[None, None].masked_fill(~allowed, float("-inf"))
            cells = ops.nms(candidates, settings.nms_radius, 0.0, settings.top_k)[0][0]
            refined, _ = ops.softargmax(score, cells.to(score.dtype), REFINE_WINDOW, REFINE_TEMPERATURE)
            scale_i = maps["scale"][n][cells[:, 1], cells[:, 0]]
            angle_i = LFNet.angles_of(maps["orientation"][n][:, cells[:, 1], cells[:, 0]].t())
            patches_i.append(self.network.patches(maps["image"][n: n + 1], refined, LFNet.sizes_of(scale_i), angle_i))
            with torch.no_grad():
                mapped = warp_points(batch.homographies[n].numpy(), refined.detach().cpu().double().numpy())
                xy_j = torch.from_numpy(mapped).float().to(self.device)
                ij = xy_j.round().long()
                inside = (ij >= 0).all(dim=1) & (ij < size).all(dim=1)
                ij = ij.clamp(0, size - 1)
                inside &= batch.second_valid[n, 0].to(self.device)[ij[:, 1], ij[:, 0]]
                scale_j = maps["scale"][count + n][ij[:, 1], ij[:, 0]]
                angle_j = LFNet.angles_of(maps["orientation"][count + n][:, ij[:, 1], ij[:, 0]].t())
                patches_j.append(self.network.patches(maps["image"][count + n: count + n + 1].detach(), xy_j,
                                                      LFNet.sizes_of(scale_j), angle_j))
            positions.append(xy_j)
            visible.append(inside)
        lengths = [len(p) for p in patches_i]
        with self._autocast():
            described = self.network.descriptor(torch.cat(patches_i + patches_j)).float()
        anchors_all, positives_all = described.split([sum(lengths), sum(lengths)])
        pair_terms, triplet_terms, hits, positive_d, negative_d = [], [], [], [], []
        start = 0
        for n, length in enumerate(lengths):
            anchors, positives = anchors_all[start: start + length], positives_all[start: start + length]
            start += length
            usable = visible[n]
            if int(usable.sum()) < 2:
                continue
            d_pos = (anchors - positives).pow(2).sum(dim=1)
            d_neg = mined_negatives(anchors, positives, positions[n], settings.negative_radius, usable,
                                    pickup_schedule(index), generator)
            finite = usable & torch.isfinite(d_neg)
            pair_terms.append(d_pos[usable].mean())
            if bool(finite.any()):
                triplet_terms.append(torch.clamp(settings.margin + d_pos[finite] - d_neg[finite], min=0.0).mean())
                negative_d.append(float(d_neg[finite].detach().sqrt().mean()))
            positive_d.append(float(d_pos[usable].detach().sqrt().mean()))
            with torch.no_grad():
                nearest = torch.cdist(anchors[usable], positives[usable]).argmin(dim=1)
                hits.append(float((nearest == torch.arange(int(usable.sum()), device=nearest.device)).float().mean()))
        zero = described.sum() * 0.0
        pair = torch.stack(pair_terms).mean() if pair_terms else zero
        triplet = torch.stack(triplet_terms).mean() if triplet_terms else zero
        statistics = {"pos_dist": float(np.mean(positive_d)) if positive_d else float("nan"),
                      "neg_dist": float(np.mean(negative_d)) if negative_d else float("nan"),
                      "match_acc": float(np.mean(hits)) if hits else float("nan"),
                      "keypoints": float(np.mean([int(v.sum()) for v in visible]))}
        return pair, triplet, statistics


def train_lfnet(settings: LFNetTraining, out_dir: str | os.PathLike, resume: bool = False,
                device: str | torch.device = "cpu", checkpoint_every: int = 250, progress: bool = True,
                pairs: PhotoPairs | None = None) -> dict[str, Any]:
    """Train (or resume) one run into ``out_dir``; returns its summary.

    ``out_dir`` receives ``config.json``, ``log.csv`` (the total and each loss, learning rate,
    ``pos_dist``/``neg_dist`` (descriptor distances), ``match_acc`` (share of i's keypoints whose
    nearest descriptor among j's patches is their own), ``keypoints``), ``checkpoint.pt`` and, at the
    end, ``weights.pt`` (``cvdeep.LFNet_create(weights=...)`` loads it) and ``summary.json``.
    """
    started = time.time()
    task = LFNetTask(settings, device, pairs, progress)
    trainer = Trainer(out_dir, task.state, settings.steps, task.rng, task.config(), checkpoint_every, resume, progress)
    return finish_run(trainer.run(task.step), cpu_weights(task.network), out_dir, task.device, started,
                      {"model": MODEL})
