"""The training loop's checkpoints: what a resume accepts, refuses and records."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.train.loop import Trainer


def _trainer(out, config, steps, resume=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(_: int) -> dict[str, float]:
        loss = model(torch.ones(1, 3)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    trainer = Trainer(out, {"model": model, "optimizer": optimizer}, steps, np.random.default_rng(0), config,
                      checkpoint_every=2, resume=resume, progress=False)
    return trainer, step


def test_resume_may_change_only_the_effective_precision(tmp_path):
    bf16 = {"lr": 0.1, "effective_precision": "bf16"}
    trainer, step = _trainer(tmp_path, bf16, 2)
    trainer.run(step)
    with pytest.raises(cvdeep.Error, match=r"other settings \(lr\)"):
        _trainer(tmp_path, {**bf16, "lr": 0.2}, 4, resume=True)
    trainer, step = _trainer(tmp_path, {**bf16, "effective_precision": "fp32"}, 4, resume=True)
    assert trainer.step == 2
    summary = trainer.run(step)
    assert [(s["from_step"], s["effective_precision"]) for s in summary["segments"]] == [(0, "bf16"), (2, "fp32")]
    assert json.loads((tmp_path / "summary.json").read_text())["segments"] == summary["segments"]
    # the next resume compares with the precision the run went on in
    trainer, _ = _trainer(tmp_path, {**bf16, "effective_precision": "fp32"}, 6, resume=True)
    assert len(trainer.segments) == 3


def test_model_card_names_the_precision_of_each_segment():
    from cvdeep.train.card import _precision

    one = {"steps": 40, "config": {"effective_precision": "bf16"}}
    assert _precision(one) == "bf16"
    segments = [{"from_step": step, "effective_precision": precision}
                for step, precision in ((0, "bf16"), (10, "bf16"), (30, "fp32"), (35, "fp32"))]
    mixed = {"steps": 40, "config": {"effective_precision": "fp32"}, "segments": segments}
    assert _precision(mixed) == "bf16 (steps 0-30), fp32 (steps 30-40)"


def test_a_signal_stops_the_run_after_its_step_with_a_checkpoint(tmp_path):
    """SIGINT mid-run: the step finishes, the checkpoint holds it (between the every-2 ones) and
    resuming ends with the weights of an uninterrupted run; the handlers are put back."""
    import os
    import signal

    from cvdeep.train.loop import TrainingStopped

    config = {"lr": 0.1}
    straight, step = _trainer(tmp_path / "straight", config, 5)
    straight.run(step)
    expected = straight.state["model"].weight.detach().clone()

    stopped, step = _trainer(tmp_path / "stopped", config, 5)

    def interrupted_step(index: int) -> dict[str, float]:
        if index == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return step(index)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingStopped, match="stopped at step 3 of 5") as caught:
        stopped.run(interrupted_step)
    assert caught.value.step == 3 and signal.getsignal(signal.SIGINT) is before
    assert torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)["step"] == 3
    assert not (tmp_path / "stopped" / "summary.json").exists()
    resumed, step = _trainer(tmp_path / "stopped", config, 5, resume=True)
    assert resumed.step == 3
    resumed.run(step)
    torch.testing.assert_close(resumed.state["model"].weight, expected, rtol=0, atol=0)
    assert len((tmp_path / "stopped" / "log.csv").read_text().splitlines()) == 1 + 5


def test_the_train_command_reports_a_stopped_run_and_exits_130(monkeypatch, tmp_path, capsys):
    from cvdeep.cli import main
    from cvdeep.train import cli as train_cli
    from cvdeep.train.loop import TrainingStopped

    def stopped(args):
        raise TrainingStopped(tmp_path, 7, 10)

    monkeypatch.setattr(train_cli, "run", stopped)
    assert main(["train", "descriptor", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "stopped at step 7 of 10" in err and "--resume" in err


def test_plot_draws_runs_in_panels_up_to_a_step_and_skips_empty_cells(tmp_path):
    """`cvdeep train plot`: one PNG; a metric written only at checkpoints (empty elsewhere) plots as
    points; --max-step cuts the curves; a missing column is an Error naming the columns there are."""
    pytest.importorskip("matplotlib")
    import cv2

    from cvdeep.cli import main

    for name, scale in (("a", 1.0), ("b", -0.01)):
        run = tmp_path / name
        run.mkdir()
        rows = ["step,seconds,loss,holdout_fpr95"]
        rows += [f"{i},{i * 0.1:.1f},{scale * (1 + 1 / i):.5f},{0.5 / i if i % 50 == 0 else ''}" for i in range(1, 301)]
        (run / "log.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "curves.png"
    assert main(["train", "plot", f"first={tmp_path / 'a'}", str(tmp_path / "b"), "--out", str(out),
                 "--panels", "--max-step", "200"]) == 0
    two_panels = cv2.imread(str(out))
    assert two_panels is not None and two_panels.shape[0] > two_panels.shape[1] * 0.6  # 2 axes stacked
    assert main(["train", "plot", str(tmp_path / "a"), "--out", str(out), "--metric", "holdout_fpr95"]) == 0
    assert cv2.imread(str(out)).shape[0] < two_panels.shape[0]
    assert main(["train", "plot", str(tmp_path / "a"), "--out", str(out), "--metric", "nope"]) == 1
