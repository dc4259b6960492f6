"""Model cards of the weights cvdeep trains and ships (``docs/models/<name>.md``).

A card is written from the run directory the training left (``config.json``,
``summary.json``, ``log.csv``) plus what only a person can state: the exact command, the
measured results, the deviations from the paper and where the run was trained. Writing it
from the run keeps the figures that the run itself recorded (steps, seconds, hardware,
sha256) from being copied by hand.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..weights import TRAINED_LICENSE
from .loop import read_log


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _precision(summary: Mapping[str, Any]) -> str:
    """The run's precision, per segment when a resume changed it (``Trainer.segments``)."""
    segments = summary.get("segments") or []
    if len({segment["effective_precision"] for segment in segments}) < 2:
        return str(summary.get("config", {}).get("effective_precision", "-"))
    ends = [segment["from_step"] for segment in segments[1:]] + [summary.get("steps")]
    parts: list[tuple[str, int, Any]] = []
    start = 0
    for segment, end in zip(segments, ends):
        if parts and parts[-1][0] == segment["effective_precision"]:
            parts[-1] = (segment["effective_precision"], parts[-1][1], end)
        else:
            parts.append((segment["effective_precision"], start, end))
        start = end
    return ", ".join(f"{precision} (steps {first}-{last})" for precision, first, last in parts)


def render_card(
    name: str,
    title: str,
    runs: Sequence[str | os.PathLike],
    commands: Sequence[str],
    results: str,
    deviations: Sequence[str],
    packaged_file: str,
    packaged_sha256: str,
    trained_where: str,
    paper: str,
    notes: Sequence[str] = (),
) -> str:
    """The card's Markdown. ``runs`` are the run directories of each stage, in order;
    ``results`` is a Markdown block of measured figures with the commands that reproduce them."""
    lines = [f"# {name}: {title}", "", f"Paper: {paper}.", "",
             f"Weights: `cvdeep/pretrained/{packaged_file}`, sha256 `{packaged_sha256}`; "
             f"`cvdeep models` lists it as `{name}`.", "",
             f"**Licence: {TRAINED_LICENSE}.**", "", "## How it was trained", ""]
    lines += ["```bash", *commands, "```", ""]
    total = 0.0
    table = ["| stage | steps | training time | hardware | precision | final loss |",
             "| --- | ---: | ---: | --- | --- | ---: |"]
    for run in runs:
        run = Path(run)
        summary: Mapping[str, Any] = json.loads((run / "summary.json").read_text())
        config: Mapping[str, Any] = summary.get("config", {})
        log = read_log(run / "log.csv")
        tail: np.ndarray | list[float] = log["loss"][-100:] if "loss" in log else []
        final = f"{sum(tail) / len(tail):.4g}" if len(tail) else "-"
        seconds = float(summary.get("train_seconds", 0.0))
        total += seconds
        table.append(f"| {config.get('stage', run.name)} | {summary.get('steps')} | {_hours(seconds)} | "
                     f"{summary.get('hardware', '-')} | {_precision(summary)} | {final} |")
    lines += table + ["", f"Total training time {_hours(total)}. {trained_where}", ""]
    lines += ["Data: the 1,028 photos of `shared/train_images` (BSDS500, SUN-Hays80, an ImageNet class sample), "
              "never the evaluation images. The configuration of each run is its `config.json`, reproduced by the "
              "command above.", ""]
    lines += ["## Measured", "", results.strip(), "", "## Deviations from the paper", ""]
    lines += [f"- {item}" for item in deviations]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {item}" for item in notes]
    return "\n".join(lines) + "\n"
