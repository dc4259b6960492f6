"""The training loop every ``cvdeep train`` task shares: steps, checkpoints, resume, logs.

A task supplies a ``step(step_index) -> dict of floats`` closure over its model, data and
loss; ``run`` calls it ``total_steps`` times with a progress bar, appends each step's
metrics to ``<out>/log.csv``, and every ``checkpoint_every`` steps (and at the end) writes
``<out>/checkpoint.pt`` atomically: the state of every registered module and optimizer,
the random generators (torch, NumPy, Python) and the step. ``resume=True`` continues from
that file exactly where it stopped, so a run killed at any moment loses at most
``checkpoint_every`` steps and, for a deterministic task, ends with the same weights as an
uninterrupted run with the same seed. SIGINT (Ctrl-C) or SIGTERM stops a run cleanly instead:
the step under way finishes, the checkpoint is written and ``run`` raises
:class:`TrainingStopped`; a second signal stops at once. ``timeout -s INT 1h cvdeep train ...``
is thus a session-sized chunk of a long run.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import platform
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Error
from ..weights import sha256_of

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
SUMMARY = "summary.json"

Stateful = Any  # anything with state_dict() / load_state_dict(): modules, optimizers, schedulers, losses


class TrainingStopped(Exception):
    """A run was asked to stop (SIGINT/SIGTERM); its checkpoint at ``step`` is written and ``resume`` continues it."""

    def __init__(self, out: Path, step: int, total_steps: int) -> None:
        super().__init__(f"stopped at step {step} of {total_steps}; the checkpoint is in {out}: run the same command "
                         "with --resume to continue")
        self.out, self.step, self.total_steps = out, step, total_steps


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, Python and NumPy; returns the NumPy generator the task should draw from."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return np.random.default_rng(seed)


def _numpy_global_state() -> list[Any]:
    """NumPy's legacy global state as plain values and a tensor (loadable with weights_only=True)."""
    state = np.random.get_state()
    assert isinstance(state, tuple)  # the legacy global generator is MT19937, whose legacy state is a tuple
    name, keys, position, has_gauss, cached = state
    return [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]


def _set_numpy_global_state(state: list[Any]) -> None:
    name, keys, position, has_gauss, cached = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))


def _atomic_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Trainer:
    """Runs a step function with checkpoints, resume, CSV logs and a progress bar.

    ``state`` names every object whose ``state_dict`` must survive a restart (model,
    optimizer, scheduler, a loss with running statistics, ...). ``rng`` is the task's
    NumPy generator; its state is checkpointed too. ``config`` (a JSON-able dict) is
    stored beside the run and checked on resume, so a run is never continued with other
    settings, with one exception: ``effective_precision`` (bf16 autocast runs only where the
    CPU has native BF16, so a run resumed on another machine may have to go on in fp32). Each
    session's first step, precision and processor are kept in ``segments``, which the summary
    and the model card report.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        state: Mapping[str, Stateful],
        total_steps: int,
        rng: np.random.Generator,
        config: Mapping[str, Any],
        checkpoint_every: int = 500,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        if total_steps < 1:
            raise Error(f"steps: got {total_steps}; expected at least 1")
        if checkpoint_every < 1:
            raise Error(f"checkpoint_every: got {checkpoint_every}; expected at least 1")
        self.out = Path(out_dir)
        self.state = dict(state)
        self.total_steps = int(total_steps)
        self.rng = rng
        self.config = json.loads(json.dumps(dict(config), default=str))
        self.checkpoint_every = int(checkpoint_every)
        self.progress = progress
        self.step = 0
        self.elapsed = 0.0  # seconds of training, summed over resumed sessions
        self.segments: list[dict[str, Any]] = []
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint = self.out / CHECKPOINT
        if resume and checkpoint.is_file():
            self._restore(checkpoint)
        elif checkpoint.is_file():
            raise Error(f"{checkpoint} exists: pass resume=True (--resume) to continue it, or choose another output "
                        "directory")
        else:
            (self.out / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            (self.out / LOG).unlink(missing_ok=True)
        self.segments.append(self._segment(self.step, self.config))

    @staticmethod
    def _segment(step: int, config: Mapping[str, Any], processor: str | None = None) -> dict[str, Any]:
        return {"from_step": step, "effective_precision": config.get("effective_precision"),
                "processor": processor or processor_name()}

    # --- checkpoints ---------------------------------------------------------------------

    def save(self) -> Path:
        """Write the checkpoint now (atomically) and return its path."""
        payload = {
            "step": self.step,
            "elapsed": self.elapsed,
            "config": self.config,
            "segments": self.segments,
            "state": {name: obj.state_dict() for name, obj in self.state.items()},
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy_global": _numpy_global_state(),
                "numpy": self.rng.bit_generator.state,
            },
        }
        path = self.out / CHECKPOINT
        _atomic_save(payload, path)
        return path

    def _restore(self, path: Path) -> None:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise Error(f"{path}: not a readable cvdeep training checkpoint ({type(exc).__name__}: {exc})") from exc
        changed = sorted(k for k in set(payload["config"]) | set(self.config)
                         if payload["config"].get(k) != self.config.get(k))
        if changed == ["effective_precision"]:
            log.warning("resuming %s in %s (it ran in %s so far): this CPU has no native BF16", path,
                        self.config["effective_precision"], payload["config"]["effective_precision"])
        elif changed:
            raise Error(f"{path}: was trained with other settings ({', '.join(changed)}); resume with the same "
                        "command, or start a new output directory")
        for name, obj in self.state.items():
            obj.load_state_dict(payload["state"][name])
        torch.set_rng_state(payload["rng"]["torch"])
        random.setstate(payload["rng"]["python"])
        _set_numpy_global_state(payload["rng"]["numpy_global"])
        self.rng.bit_generator.state = payload["rng"]["numpy"]
        self.step = int(payload["step"])
        self.elapsed = float(payload.get("elapsed", 0.0))
        # checkpoints written before segments were recorded: one segment from step 0, processor unknown
        self.segments = list(payload.get("segments") or [self._segment(0, payload["config"], "not recorded")])
        self._truncate_log(self.step)
        log.info("resumed %s at step %d", path, self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint (they will be written again)."""
        path = self.out / LOG
        if not path.is_file():
            return
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            return
        fields = list(rows[0])
        kept = [row for row in rows if int(row["step"]) <= step]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)

    # --- the loop ----------------------------------------------------------------------

    def run(self, step_fn: Callable[[int], Mapping[str, float]]) -> dict[str, Any]:
        """Call ``step_fn(i)`` for the remaining steps; returns the summary written to summary.json."""
        bar = None
        if self.progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is a core dependency; keep working without it all the same
                bar = None
            else:
                bar = tqdm(total=self.total_steps, initial=self.step, desc=f"training {self.out.name}", unit="step")
        log_path = self.out / LOG
        writer = None
        handle = open(log_path, "a", newline="")
        stop_requests: list[int] = []
        previous = self._catch_stop_signals(stop_requests)
        try:
            while self.step < self.total_steps:
                started = time.perf_counter()
                metrics = {k: float(v) for k, v in step_fn(self.step).items()}
                self.elapsed += time.perf_counter() - started
                self.step += 1
                row = {"step": self.step, "seconds": round(self.elapsed, 3), **metrics}
                if writer is None:
                    writer = csv.DictWriter(handle, fieldnames=list(row))
                    if log_path.stat().st_size == 0:
                        writer.writeheader()
                writer.writerow(row)
                handle.flush()  # the log is how a background run is watched
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:3]})
                if self.step % self.checkpoint_every == 0 or self.step == self.total_steps or stop_requests:
                    self.save()
                if stop_requests and self.step < self.total_steps:
                    raise TrainingStopped(self.out, self.step, self.total_steps)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            handle.close()
            if bar is not None:
                bar.close()
        summary = {"steps": self.step, "train_seconds": round(self.elapsed, 1), "config": self.config,
                   "segments": self.segments}
        (self.out / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary


    @staticmethod
    def _catch_stop_signals(requests: list[int]) -> dict[int, Any]:
        """Route SIGINT/SIGTERM to ``requests`` (checked between steps); the first one restores the
        previous handlers so that a second signal acts at once. Returns the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be set from the main thread
        previous: dict[int, Any] = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

        def request_stop(number: int, frame: Any) -> None:
            requests.append(number)
            log.warning("stopping after this step (signal %d); signal again to stop at once", number)
            for other, handler in previous.items():
                signal.signal(other, handler)

        for number in previous:
            signal.signal(number, request_stop)
        return previous


def cpu_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``network``'s state_dict on the CPU with floating tensors as float32 (a bf16 run ships fp32 weights)."""
    return {k: v.detach().cpu().float() if v.is_floating_point() else v.cpu() for k, v in network.state_dict().items()}


def processor_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows (e.g. x86_64)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU and thread count: what ``summary.json`` says a run ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{processor_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"


def finish_run(summary: dict[str, Any], weights: dict[str, torch.Tensor], out_dir: str | os.PathLike,
               device: torch.device, started: float, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The end of every ``train_*``: save ``weights`` as ``<out>/weights.pt`` and write the trainer's
    ``summary`` with the file, its hash, the wall time since ``started``, the hardware, torch's
    version and ``extra`` to ``<out>/summary.json``; one place, so every run records the same."""
    path = Path(out_dir) / "weights.pt"
    torch.save(weights, path)
    summary.update({"weights": str(path), "weights_sha256": sha256_of(path),
                    "session_wall_seconds": round(time.time() - started, 1), "hardware": hardware(device),
                    "torch": torch.__version__, **extra})
    (Path(out_dir) / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A run's ``log.csv`` as column name -> float array; an empty cell reads as NaN."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: np.array([float(row[key] or "nan") for row in rows]) for key in rows[0]}


def plot_curves(runs: Mapping[str, str | os.PathLike], out: str | os.PathLike, metric: str = "loss",
                smooth: int = 50, max_step: int | None = None, panels: bool = False) -> Path:
    """Plot ``metric`` against step for several runs (label -> run directory or log.csv) into a PNG.

    Needs matplotlib (the ``plot`` extra). A moving average over ``smooth`` steps is drawn
    over the raw curve; steps where the metric is empty (e.g. ``holdout_fpr95``, written at
    checkpoints only) are left out. ``max_step`` cuts the curves there (a short run against
    the first steps of a long one); ``panels`` gives each run its own axis, for losses on
    different scales (an ablation of losses).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise Error("plotting loss curves needs matplotlib: pip install 'cvdeep[plot]'") from None
    rows = len(runs) if panels else 1
    figure, axes = plt.subplots(rows, 1, figsize=(7, 4 if rows == 1 else 2.4 * rows), sharex=True, squeeze=False)
    for index, (label, run) in enumerate(runs.items()):
        axis = axes[index if panels else 0][0]
        path = Path(run)
        columns = read_log(path / LOG if path.is_dir() else path)
        if metric not in columns:
            raise Error(f"{path}: no {metric!r} column; it has {', '.join(columns)}")
        steps, values = columns["step"], columns[metric]
        keep = np.isfinite(values) & (steps <= (max_step if max_step is not None else np.inf))
        steps, values = steps[keep], values[keep]
        sparse = len(values) < smooth
        line = axis.plot(steps, values, marker="o" if sparse else None, alpha=1.0 if sparse else 0.25,
                         linewidth=0.8)[0]
        if not sparse and smooth > 1:
            kernel = np.ones(smooth) / smooth
            axis.plot(steps[smooth - 1:], np.convolve(values, kernel, mode="valid"), color=line.get_color(),
                      label=label)
        else:
            line.set_label(label)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[-1][0].set_xlabel("step")
    figure.tight_layout()
    out = Path(out)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
