"""SuperPoint's recipe (DeTone et al., CVPRW 2018) as three resumable stages.

1. ``magicpoint``: the SuperPoint network's detector trained on Synthetic Shapes
   (``cvdeep.train.synthetic_shapes``), whose corners are exact, with random homographies
   and photometric changes of every sample.
2. ``adapt``: homographic adaptation: the detector run on N random warps of every
   unlabeled photo, the heatmaps warped back and averaged, NMS -> pseudo ground truth
   keypoints, written to one ``labels.npz``.
3. ``joint``: detector and descriptor trained together on pairs (photo, random warp of
   it): the cell cross-entropy with the dustbin on both images against the (warped) pseudo
   labels, plus lambda times the descriptor hinge loss over all cell pairs (positive when the
   warped cell centres are within 8 px).

The network is ``superpoint-cvdeep``'s (``SuperPointOpen``: the paper's VGG encoder, BatchNorm
after every convolution), so every stage's ``weights.pt`` loads into
``cvdeep.SuperPoint_create(model="superpoint-cvdeep", weights=...)``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import Error
from ..models import build_model
from ..nets.superpoint import SuperPoint
from ..precision import effective_precision, network_precision
from .descriptor import DEFAULT_IMAGES, bf16_supported
from .homography import HomographyConfig, sample_homography
from .loop import Trainer, cpu_weights, finish_run, seed_everything
from .patch_pairs import image_files, read_training_image
from .photometric import PhotometricConfig as PhotoPhotometric
from .photometric import augment
from .superpoint_losses import (
    descriptor_loss,
    detector_loss,
    homographic_adaptation,
    keypoint_map_to_labels,
    keypoints_to_map,
    pseudo_ground_truth,
)
from .synthetic_shapes import PhotometricConfig as ShapesPhotometric
from .synthetic_shapes import (
    SyntheticShapesConfig,
    SyntheticShapesDataset,
    photometric_augmentation,
    warp_sample,
    write_dataset,
)

log = logging.getLogger(__name__)

MODEL = "superpoint-cvdeep"


def _homography_dict(config: HomographyConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


@dataclass
class MagicPointTraining:
    """Stage 1. Defaults follow rpautrat/SuperPoint's ``magic-point_shapes.yaml`` where the CPU
    allows (Adam 1e-3, 120 x 160 images, homographic and photometric augmentation); steps and
    batch are what a 2-core machine trains in about two hours."""

    steps: int = 3000
    batch_size: int = 16
    image_size: tuple[int, int] = (120, 160)
    shapes_per_primitive: int = 2000
    lr: float = 1e-3
    homography: dict[str, Any] = field(default_factory=lambda: _homography_dict(HomographyConfig(
        patch_ratio=0.8, perspective=0.2, scale_range=(0.7, 1.4), max_angle_deg=90.0, allow_artifacts=True)))
    precision: str = "bf16"
    compile: bool = True
    seed: int = 0


@dataclass
class AdaptationSettings:
    """Stage 2. The paper uses N = 100 warps; 24 keep the export of 1,028 photos near an hour here."""

    detector: str = ""
    """``weights.pt`` of the detector to adapt (stage 1's, or a previous round's)."""
    images: str = str(DEFAULT_IMAGES)
    image_size: tuple[int, int] = (240, 320)
    homographies: int = 24
    homography: dict[str, Any] = field(default_factory=lambda: _homography_dict(HomographyConfig(
        patch_ratio=0.85, perspective=0.2, scale_range=(0.8, 1.25), max_angle_deg=30.0, allow_artifacts=True)))
    nms_radius: int = 4
    threshold: float = 0.015
    top_k: int = 600
    precision: str = "bf16"
    """The detector's convolutions in bfloat16 where the device runs it natively
    (``cvdeep.precision``); heatmaps, warps and aggregation stay float32."""
    seed: int = 0


@dataclass
class JointTraining:
    """Stage 3. The paper's constants: lambda 0.0001, lambda_d 250, m_p 1, m_n 0.2, 240 x 320."""

    labels: str = ""
    """``labels.npz`` of stage 2."""
    init: str | None = None
    """Start from these weights (stage 1's detector); the paper trains from scratch."""
    steps: int = 3000
    batch_size: int = 2
    lr: float = 1e-3
    descriptor_weight: float = 1e-4
    positive_margin: float = 1.0
    negative_margin: float = 0.2
    lambda_d: float = 250.0
    homography: dict[str, Any] = field(default_factory=lambda: _homography_dict(HomographyConfig(
        patch_ratio=0.85, perspective=0.2, scale_range=(0.8, 1.2), max_angle_deg=30.0, allow_artifacts=True)))
    precision: str = "bf16"
    compile: bool = True
    seed: int = 0


def _network(init: str | None, device: torch.device) -> SuperPoint:
    network = build_model(MODEL, weights=init, device=device, pretrained=init is not None)
    if not isinstance(network, SuperPoint):
        raise Error(f"{MODEL} is not a SuperPoint network")
    return network.train()


def _forward(network: SuperPoint, compile_: bool) -> Any:
    if not compile_:
        return network._heads
    try:
        return torch.compile(network._heads, dynamic=False)
    except Exception as exc:
        log.warning("torch.compile unavailable (%s); training eagerly", exc)
        return network._heads


def _precision(name: str, device: torch.device) -> bool:
    if name not in ("bf16", "fp32"):
        raise Error(f"precision: got {name!r}; accepted: 'bf16', 'fp32'")
    return name == "bf16" and bf16_supported(device)


def _setup(settings: MagicPointTraining | JointTraining, init: str | None, extra: dict[str, Any],
           out_dir: str | os.PathLike, resume: bool, device: torch.device, rng: np.random.Generator,
           checkpoint_every: int, progress: bool) -> tuple[SuperPoint, Any, torch.optim.Optimizer, bool, Trainer]:
    """What stages 1 and 3 share: the network, its (compiled) forward, Adam, precision and the Trainer."""
    network = _network(init, device)
    forward = _forward(network, settings.compile)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.lr)
    use_bf16 = _precision(settings.precision, device)
    stage = extra.pop("stage")
    config = {**dataclasses.asdict(settings), "stage": stage, **extra,
              "effective_precision": "bf16" if use_bf16 else "fp32"}
    trainer = Trainer(out_dir, {"network": network, "optimizer": optimizer}, settings.steps, rng, config,
                      checkpoint_every, resume, progress)
    return network, forward, optimizer, use_bf16, trainer


def _label_generator(batch_rng: np.random.Generator) -> torch.Generator:
    """The generator of a step's random choice among several keypoints of one cell, drawn from the
    step's own seeded numpy generator, so that a resumed run makes the choices an uninterrupted one
    makes."""
    return torch.Generator().manual_seed(int(batch_rng.integers(2**62)))



# --- stage 1 -------------------------------------------------------------------------------


def train_magicpoint(settings: MagicPointTraining, out_dir: str | os.PathLike, resume: bool = False,
                     device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                     checkpoint_every: int = 250, progress: bool = True) -> dict[str, Any]:
    """Train the detector on Synthetic Shapes; writes ``weights.pt`` and ``summary.json`` in ``out_dir``."""
    device = torch.device(device)
    started = time.time()
    rng = seed_everything(settings.seed)
    height, width = settings.image_size
    if height % 8 or width % 8:
        raise Error(f"image_size: got {settings.image_size}; expected multiples of 8 (SuperPoint's cells)")
    shapes = SyntheticShapesConfig(image_size=(height, width))
    cache = Path(cache_dir) if cache_dir is not None else Path(out_dir) / "shapes"
    shards = write_dataset(cache / f"shapes-{height}x{width}", settings.shapes_per_primitive, settings.seed, shapes)
    dataset = SyntheticShapesDataset(shards)
    images, corners = dataset.images, dataset.corners
    homography = HomographyConfig(**settings.homography)
    photometric = ShapesPhotometric(enable=True)
    network, forward, optimizer, use_bf16, trainer = _setup(
        settings, None, {"stage": "magicpoint", "synthetic_images": len(images)}, out_dir, resume, device, rng,
        checkpoint_every, progress)

    def step(index: int) -> dict[str, float]:
        batch_rng = np.random.default_rng([settings.seed, index])
        picks = batch_rng.integers(len(images), size=settings.batch_size)
        warped_images, maps, valids = [], [], []
        for pick in picks:
            image = photometric_augmentation(images[pick], batch_rng, photometric)
            H = sample_homography(batch_rng, height, width, homography)
            warped, points, visible = warp_sample(image, corners[pick], H, border_margin=2)
            warped_images.append(warped)
            maps.append(keypoints_to_map(torch.from_numpy(points), (height, width)))
            valids.append(torch.from_numpy(visible))
        batch = torch.from_numpy(np.stack(warped_images)).float().div_(255.0)[:, None].to(device)
        keypoint_map, valid = torch.stack(maps).to(device), torch.stack(valids).to(device)
        labels = keypoint_map_to_labels(keypoint_map, 8, _label_generator(batch_rng))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits, _ = forward(batch)
        loss = detector_loss(logits.float(), labels, valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    return finish_run(trainer.run(step), cpu_weights(network), out_dir, device, started, {})


REPEATABILITY_KEYPOINTS = 300
"""Keypoints per image of the repeatability report after stage 1 (the strongest)."""


def detector_repeatability(weights: str | os.PathLike, max_keypoints: int = REPEATABILITY_KEYPOINTS,
                           baseline: str = "sift", device: str = "cpu",
                           sequences: list[str] | None = None) -> dict[str, float] | None:
    """Repeatability (%) of the detector in ``weights`` and of ``baseline`` on the shared evaluation
    pairs (``cvdeep.eval``, its ``max_keypoints`` strongest keypoints per image; ``sequences``: a
    subset by name, default all), as SuperPoint's
    paper reports for MagicPoint; None when the shared data is not found (``default_shared_data``).
    The pairs only measure: nothing is trained or chosen on them."""
    from ..eval.datasets import default_shared_data
    from ..eval.runner import BenchConfig, run

    if default_shared_data() is None:
        return None
    trained = f"{MODEL}[weights={Path(weights).resolve()}]"
    results = run(BenchConfig(dataset="shared", root=None, features=[trained, baseline],
                              max_keypoints=max_keypoints, device=device, sequences=sequences),
                  show_progress=False)
    names = {trained: "trained", baseline: baseline}
    return {names[r["feature"]]: round(100 * r["summary"]["all"]["repeatability"], 1) for r in results["results"]}


# --- stage 2 -------------------------------------------------------------------------------


def export_pseudo_labels(settings: AdaptationSettings, out_file: str | os.PathLike, device: str | torch.device = "cpu",
                         progress: bool = True) -> dict[str, Any]:
    """Homographic adaptation of every photo of ``settings.images``; resumable (photos already in
    ``out_file``'s partial state are skipped). Writes ``out_file`` (npz: ``paths``, ``keypoints``
    concatenated (N, 2) in pixels of the photo resized to ``image_size``, ``offsets``)."""
    device = torch.device(device)
    if not settings.detector:
        raise Error("detector: give the weights.pt of the detector to adapt (the magicpoint stage's)")
    network = build_model(MODEL, weights=settings.detector, device=device).eval()
    height, width = settings.image_size
    homography = HomographyConfig(**settings.homography)
    files = image_files(Path(settings.images))
    out_file = Path(out_file)
    partial = out_file.with_suffix(".partial.npz")
    done: dict[str, np.ndarray] = {}
    if partial.is_file():
        with np.load(partial, allow_pickle=False) as saved:
            offsets = saved["offsets"]
            for i, name in enumerate(saved["paths"]):
                done[str(name)] = saved["keypoints"][offsets[i]: offsets[i + 1]]

    precision = effective_precision(settings.precision, device)

    def heatmap(batch: torch.Tensor) -> torch.Tensor:
        with network_precision(precision, device):
            return network(batch)["scores"]

    started = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), initial=len(done), desc="homographic adaptation", unit="photo")
    root = Path(settings.images)
    for index, path in enumerate(files):
        name = str(path.relative_to(root))
        if name in done:
            continue
        rng = np.random.default_rng([settings.seed, index])
        photo = cv2.resize(read_training_image(path, 0), (width, height), interpolation=cv2.INTER_AREA)
        image = torch.from_numpy(photo).float().div_(255.0)[None, None].to(device)
        warps = torch.from_numpy(np.stack([sample_homography(rng, height, width, homography)
                                           for _ in range(settings.homographies)])).float()
        aggregated = homographic_adaptation(heatmap, image, warps)
        keypoints, _ = pseudo_ground_truth(aggregated, settings.nms_radius, settings.threshold, settings.top_k)
        done[name] = keypoints.cpu().numpy().astype(np.float32).reshape(-1, 2)
        if bar is not None:
            bar.update(1)
        if len(done) % 50 == 0:
            _save_labels(partial, done)
    if bar is not None:
        bar.close()
    _save_labels(out_file, done)
    partial.unlink(missing_ok=True)
    counts = [len(v) for v in done.values()]
    summary = {"photos": len(done), "keypoints_mean": float(np.mean(counts)) if counts else 0.0,
               "seconds": round(time.time() - started, 1), "settings": dataclasses.asdict(settings)}
    out_file.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _save_labels(path: Path, done: dict[str, np.ndarray]) -> None:
    names = sorted(done)
    offsets = np.cumsum([0] + [len(done[n]) for n in names]).astype(np.int64)
    keypoints = np.concatenate([done[n] for n in names]) if names else np.zeros((0, 2), np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, paths=np.array(names), keypoints=keypoints, offsets=offsets)
    tmp.replace(path)


# --- stage 3 -------------------------------------------------------------------------------


def train_joint(settings: JointTraining, out_dir: str | os.PathLike, resume: bool = False,
                device: str | torch.device = "cpu", images: str | os.PathLike = DEFAULT_IMAGES,
                checkpoint_every: int = 250, progress: bool = True) -> dict[str, Any]:
    """Joint detector + descriptor training on pseudo-labelled photos and their random warps."""
    device = torch.device(device)
    started = time.time()
    rng = seed_everything(settings.seed)
    if not settings.labels:
        raise Error("labels: give the labels.npz the adapt stage wrote")
    with np.load(settings.labels, allow_pickle=False) as saved:
        names, offsets, all_points = [str(n) for n in saved["paths"]], saved["offsets"], saved["keypoints"]
    summary_path = Path(settings.labels).with_suffix(".json")
    size = json.loads(summary_path.read_text())["settings"]["image_size"] if summary_path.is_file() else (240, 320)
    height, width = int(size[0]), int(size[1])
    root = Path(images)
    photos = [cv2.resize(read_training_image(root / n, 0), (width, height), interpolation=cv2.INTER_AREA)
              for n in names]
    points = [all_points[offsets[i]: offsets[i + 1]] for i in range(len(names))]
    homography = HomographyConfig(**settings.homography)
    photometric = PhotoPhotometric()
    network, forward, optimizer, use_bf16, trainer = _setup(
        settings, settings.init, {"stage": "joint", "images": str(images), "image_size": [height, width],
                                  "photos": len(photos)}, out_dir, resume, device, rng, checkpoint_every, progress)

    def step(index: int) -> dict[str, float]:
        batch_rng = np.random.default_rng([settings.seed, index])
        picks = batch_rng.integers(len(photos), size=settings.batch_size)
        first, second, maps_a, maps_b, valid_b, warps = [], [], [], [], [], []
        for pick in picks:
            H = sample_homography(batch_rng, height, width, homography)
            image_a = augment(photos[pick], batch_rng, photometric)
            warped, moved, visible = warp_sample(photos[pick], points[pick], H, border_margin=3)
            first.append(image_a)
            second.append(augment(warped, batch_rng, photometric))
            maps_a.append(keypoints_to_map(torch.from_numpy(points[pick]), (height, width)))
            maps_b.append(keypoints_to_map(torch.from_numpy(moved), (height, width)))
            valid_b.append(torch.from_numpy(visible))
            warps.append(torch.from_numpy(H).float())
        batch = torch.from_numpy(np.stack(first + second)).float().div_(255.0)[:, None].to(device)
        labels = keypoint_map_to_labels(torch.stack(maps_a + maps_b).to(device), 8, _label_generator(batch_rng))
        valid_b_t = torch.stack(valid_b).to(device)
        valid = torch.cat([torch.ones_like(valid_b_t), valid_b_t])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits, descriptors = forward(batch)
        logits, descriptors = logits.float(), descriptors.float()
        detection = detector_loss(logits, labels, valid)
        count = settings.batch_size
        description = descriptor_loss(descriptors[:count], descriptors[count:], torch.stack(warps).to(device),
                                      valid_b_t, settings.positive_margin, settings.negative_margin,
                                      settings.lambda_d)
        loss = detection + settings.descriptor_weight * description
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), "detector_loss": float(detection.detach()),
                "descriptor_loss": float(description.detach())}

    return finish_run(trainer.run(step), cpu_weights(network), out_dir, device, started, {})
