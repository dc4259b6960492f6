"""Helpers of the training tests: synthetic photo folders and a run killed in the middle."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
import torch

import cvdeep


def write_wedge_photos(folder: Path) -> Path:
    """Four 200 x 240 gray images in ``folder``: bright wedges pointing anywhere and dark discs on blurred
    noise, so that SIFT finds corners and blobs (the LIFT and LF-Net training tests)."""
    rng = np.random.default_rng(1)
    for index in range(4):
        image = 60 + cv2.GaussianBlur(rng.random((200, 240)).astype(np.float32), (0, 0), 3.0) * 40
        for _ in range(40):
            cx, cy, r, a = rng.uniform(10, 230), rng.uniform(10, 190), rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)
            corners = np.array([[cx + r * np.cos(a), cy + r * np.sin(a)],
                                [cx + 0.6 * r * np.cos(a + 2.5), cy + 0.6 * r * np.sin(a + 2.5)],
                                [cx + 0.6 * r * np.cos(a - 2.5), cy + 0.6 * r * np.sin(a - 2.5)]])
            cv2.fillPoly(image, [np.round(corners * 16).astype(np.int32)], float(rng.uniform(170, 250)),
                         lineType=cv2.LINE_AA, shift=4)
        for _ in range(8):
            centre = tuple(int(v) for v in rng.integers(10, 190, 2))
            cv2.circle(image, centre, int(rng.integers(3, 8)), float(rng.uniform(0, 40)), -1)
        cv2.imwrite(str(folder / f"{index}.png"), np.clip(image, 0, 255).astype(np.uint8))
    return folder


def stop_during_step(monkeypatch: pytest.MonkeyPatch, module: ModuleType, train: Callable[[], Any],
                     index: int = 3) -> None:
    """Run ``train()`` with ``module.Trainer`` dying during step ``index`` (a process killed mid-run; the
    last checkpoint is the one before), check it died, and put the real ``Trainer`` back."""
    real = module.Trainer

    class Killed(real):  # type: ignore[misc, valid-type]
        def run(self, step_fn):
            def dying(step):
                if step == index:
                    raise KeyboardInterrupt
                return step_fn(step)

            return super().run(dying)

    monkeypatch.setattr(module, "Trainer", Killed)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(module, "Trainer", real)


def resume_matches_uninterrupted(monkeypatch: pytest.MonkeyPatch, module: ModuleType, train: Callable[..., Any],
                                 tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train(out_dir, **options)`` (a ``train_*`` of ``module`` with its settings bound) run whole into
    ``tmp_path/whole``, and into ``tmp_path/stopped`` killed during step 3 (checkpoint at step 2), refused
    there without ``resume``, then resumed: the two runs' weights must be equal. Returns both summaries."""
    whole = train(tmp_path / "whole", checkpoint_every=2, progress=False)
    stop_during_step(monkeypatch, module, lambda: train(tmp_path / "stopped", checkpoint_every=2, progress=False))
    with pytest.raises(cvdeep.Error, match="resume"):
        train(tmp_path / "stopped", checkpoint_every=2, progress=False)
    resumed = train(tmp_path / "stopped", resume=True, checkpoint_every=2, progress=False)
    first, second = torch.load(whole["weights"]), torch.load(resumed["weights"])
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    return whole, resumed
