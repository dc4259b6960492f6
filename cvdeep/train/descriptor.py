"""Training a patch descriptor (HyNet/SDGMNet, HardNet, L2-Net, TFeat, ...) on unlabeled photos.

The recipe is the one the descriptor papers share, with the data made self-supervised:
patch pairs labelled by known homographies of unlabeled photos
(``cvdeep.train.patch_pairs``), batches of distinct points, and one of the losses of
``cvdeep.train.losses`` (SDGM, HardNet's hardest-in-batch triplet, DeepDesc's mined
hinge, SOSNet, HyNet, L2-Net's). The network is the registry's own (``build_model(name,
pretrained=False)``), fed through ``PatchDescriptor.embed`` exactly as inference feeds it,
so the trained file loads into ``cvdeep.<Name>_create(weights=...)`` unchanged.

A held-out slice of the photos (never used for batches) gives the patch-verification
FPR95 logged at each checkpoint; the shared evaluation images are never read here.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Error
from ..eval.patch_metrics import fpr_at_recall
from ..models import build_model, get_model
from ..nets.patch_descriptor import PatchDescriptor
from .loop import Trainer, cpu_weights, finish_run, seed_everything
from .losses import LOSSES, make_loss
from .patch_pairs import PatchPairConfig, PatchPairs, cached_patch_pairs

log = logging.getLogger(__name__)

DEFAULT_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "train_images"
"""``../shared/train_images`` beside a source checkout; pass ``images=`` anywhere else."""


@dataclass
class DescriptorTraining:
    """Everything a descriptor training run depends on (stored beside the run, checked on resume)."""

    model: str = "sdgmnet-cvdeep"
    """Registry name whose network is trained (its family and network arguments)."""
    loss: str = "sdgm"
    """One of ``cvdeep.train.losses.LOSSES``."""
    loss_options: dict[str, Any] = field(default_factory=dict)
    images: str = str(DEFAULT_IMAGES)
    """A folder of unlabeled photos (searched recursively)."""
    steps: int = 3000
    batch_size: int = 512
    """Distinct points per batch (each gives an anchor and a positive patch)."""
    optimizer: str = "adam"
    """``adam`` (the default here: robust for short CPU runs) or ``sgd`` (momentum 0.9, the papers' choice)."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    """Linear learning-rate warm-up, then a cosine decay to 0 at ``steps``."""
    flip: bool = True
    rot90: bool = False
    """Flip / rotate both patches of a pair alike (rotation-invariant training only makes sense
    for patches that are not already rotated to their keypoint's angle)."""
    holdout_fraction: float = 0.04
    """Share of the photos kept out of training for the logged FPR95."""
    precision: str = "bf16"
    """``bf16`` autocast where the CPU (AVX-512-BF16/AMX) or GPU supports it, else ``fp32``."""
    compile: bool = True
    """``torch.compile`` the network (inductor); falls back to eager when that fails."""
    seed: int = 0
    init: str | None = None
    """Weights to start from (a registry name or a file): fine-tuning instead of training from scratch."""
    pairs: dict[str, Any] = field(default_factory=lambda: {
        "homographies_per_image": 2, "views_per_point": 3,
        "position_jitter": 0.15, "scale_jitter": 0.1, "angle_jitter_deg": 10.0,
    })
    """``PatchPairConfig`` overrides: two homographies per photo, three views per point, and
    keypoint jitter that mimics a detector's own noise (our choice, not tuned on evaluation data)."""

    def __post_init__(self) -> None:
        family, _ = get_model(self.model)
        if family.kind != "patch":
            raise Error(f"model: {self.model!r} is a {family.kind}, not a patch descriptor; accepted: the patch "
                        "descriptors of `cvdeep models` (e.g. sdgmnet-cvdeep, hardnet-cvdeep, l2net-cvdeep)")
        if self.loss not in LOSSES:
            raise Error(f"loss: got {self.loss!r}; accepted: {', '.join(LOSSES)}")
        for name, low in (("steps", 1), ("batch_size", 2), ("warmup_steps", 0)):
            if int(getattr(self, name)) < low:
                raise Error(f"{name}: got {getattr(self, name)!r}; expected an integer >= {low}")
        if self.optimizer not in ("adam", "sgd"):
            raise Error(f"optimizer: got {self.optimizer!r}; accepted: 'adam', 'sgd'")
        if self.precision not in ("bf16", "fp32"):
            raise Error(f"precision: got {self.precision!r}; accepted: 'bf16', 'fp32'")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise Error(f"holdout_fraction: got {self.holdout_fraction!r}; expected a number in [0, 0.5)")
        self.pair_config()  # validates the overrides

    def pair_config(self) -> PatchPairConfig:
        try:
            return PatchPairConfig(**self.pairs)
        except TypeError as exc:
            fields = ", ".join(f.name for f in dataclasses.fields(PatchPairConfig))
            raise Error(f"pairs: {exc}; accepted keys: {fields}") from None


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (not emulated) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available()) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def split_holdout(pairs: PatchPairs, fraction: float, seed: int) -> tuple[PatchPairs, PatchPairs | None]:
    """(training rows, held-out rows) split by photo, so no held-out point's photo is trained on."""
    if fraction <= 0:
        return pairs, None
    images = np.unique(pairs.image_id)
    rng = np.random.default_rng([seed, 7])
    held = rng.choice(images, size=max(1, round(fraction * images.size)), replace=False)
    mask = np.isin(pairs.image_id, held)
    return pairs.subset(~mask), pairs.subset(mask)


def batch_stream(pairs: PatchPairs, batch_size: int, seed: int, start_step: int, flip: bool,
                 rot90: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches for steps ``start_step, start_step + 1, ...``: epoch ``e`` is shuffled by the
    generator seeded ``(seed, e)``, so a resumed run sees exactly the batches it would have seen."""
    per_epoch = pairs.num_points // batch_size
    if per_epoch < 1:
        raise Error(f"batch_size {batch_size} exceeds the {pairs.num_points} distinct training points")
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        batches = pairs.batches(batch_size, np.random.default_rng([seed, epoch]), flip=flip, rot90=rot90)
        for index, batch in enumerate(batches):
            if index >= skip:
                yield batch[0], batch[1]
        skip = 0
        epoch += 1


def holdout_fpr95(network: PatchDescriptor, holdout: PatchPairs, limit: int = 2048) -> float:
    """Patch-verification FPR at 95% recall on held-out pairs: each pair against a shifted
    partner as its non-matching pair (Brown et al.'s protocol: as many negatives as positives)."""
    rows = min(len(holdout), limit)
    anchor = torch.from_numpy(holdout.patches[:rows, 0]).float().div_(255.0)[:, None]
    positive = torch.from_numpy(holdout.patches[:rows, 1]).float().div_(255.0)[:, None]
    was_training = network.training
    network.eval()
    with torch.inference_mode():
        a = torch.cat([network.embed(part) for part in anchor.split(512)]).float()
        p = torch.cat([network.embed(part) for part in positive.split(512)]).float()
    network.train(was_training)
    negatives = torch.roll(p, 1, dims=0)
    same = holdout.point_id[:rows] == np.roll(holdout.point_id[:rows], 1)
    distances = torch.cat([(a - p).norm(dim=1), (a - negatives).norm(dim=1)[torch.from_numpy(~same)]])
    labels = np.concatenate([np.ones(rows, bool), np.zeros(int((~same).sum()), bool)])
    return float(fpr_at_recall(distances.numpy(), labels))


def _schedule(optimizer: torch.optim.Optimizer, settings: DescriptorTraining) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, total = settings.warmup_steps, settings.steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + float(np.cos(np.pi * min(progress, 1.0))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_descriptor(settings: DescriptorTraining, out_dir: str | os.PathLike, resume: bool = False,
                     device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                     checkpoint_every: int = 250, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one descriptor run into ``out_dir``; returns its summary.

    ``out_dir`` receives ``config.json``, ``log.csv`` (loss, learning rate, held-out FPR95,
    the loss's running statistics), ``checkpoint.pt`` and, at the end, ``weights.pt`` (the
    network's state_dict alone, what ``cvdeep train export`` ships) and ``summary.json``.
    """
    device = torch.device(device)
    rng = seed_everything(settings.seed)
    pairs = cached_patch_pairs(settings.images, settings.pair_config(), seed=settings.seed, cache_dir=cache_dir,
                               progress=progress)
    training, holdout = split_holdout(pairs, settings.holdout_fraction, settings.seed)
    network = build_model(settings.model, weights=_init_path(settings.init), device=device,
                          pretrained=settings.init is not None)
    if not isinstance(network, PatchDescriptor):
        raise Error(f"{settings.model}: its network is not a patch descriptor")
    network.train()
    forward = _compiled(network) if settings.compile else network.embed
    options = dict(settings.loss_options)
    if settings.loss == "sdgm":
        options.setdefault("total_steps", settings.steps)
    criterion = make_loss(settings.loss, **options).to(device)
    if settings.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr,
                                                             weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.SGD(network.parameters(), lr=settings.lr, momentum=0.9,
                                    weight_decay=settings.weight_decay)
    scheduler = _schedule(optimizer, settings)
    use_bf16 = settings.precision == "bf16" and bf16_supported(device)
    if settings.precision == "bf16" and not use_bf16:
        log.warning("bf16 is not native on this %s: training in fp32", device.type)
    config = {**dataclasses.asdict(settings), "effective_precision": "bf16" if use_bf16 else "fp32",
              "training_points": training.num_points, "holdout_points": 0 if holdout is None else holdout.num_points}
    trainer = Trainer(out_dir, {"network": network, "optimizer": optimizer, "scheduler": scheduler,
                                "loss": criterion}, settings.steps, rng, config, checkpoint_every, resume, progress)
    stream = batch_stream(training, settings.batch_size, settings.seed, trainer.step, settings.flip, settings.rot90)
    holdout_fpr = float("nan")

    def step(index: int) -> dict[str, float]:
        nonlocal holdout_fpr
        anchor, positive = next(stream)
        patches = torch.cat([anchor, positive]).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            descriptors = forward(patches)
        first, second = descriptors.float().chunk(2)
        loss = criterion(first, second)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if holdout is not None and ((index + 1) % checkpoint_every == 0 or index + 1 == settings.steps):
            holdout_fpr = holdout_fpr95(network, holdout)
        metrics = {"loss": float(loss.detach()), "lr": float(scheduler.get_last_lr()[0]), "holdout_fpr95": holdout_fpr}
        statistics = getattr(criterion, "statistics", None)
        if callable(statistics):
            metrics.update(statistics())
        return metrics

    started = time.time()
    summary = trainer.run(step)
    return finish_run(summary, cpu_weights(network), out_dir, device, started, {"holdout_fpr95": holdout_fpr})


def _init_path(init: str | None) -> str | None:
    """A registry name resolves to its file through the hub; a path is used as is."""
    if init is None or os.path.exists(init):
        return init
    from ..models import get_weight_spec
    from ..weights import resolve

    return str(resolve(get_weight_spec(init)))


def _compiled(network: PatchDescriptor) -> Any:
    """``torch.compile`` of ``network.embed``; eager when the compiler is unavailable here."""
    try:
        return torch.compile(network.embed, dynamic=False)
    except Exception as exc:  # no C++ compiler, unsupported platform: training still works, slower
        log.warning("torch.compile unavailable (%s); training eagerly", exc)
        return network.embed
