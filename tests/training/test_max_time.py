"""trainer.max_time: training ends at the budget with its schedule complete, and resume keeps what is left.

Tolerance, stated: the trained time lies in [75 %, 105 %] of the budget. The time budget stops
training when the measured schedule is complete, holding back one validation, one step and 2 %
of the budget for the final validation and checkpoint; past the budget, Lightning's Timer stops
it without another validation (an overrun of one step and a checkpoint write at most). With a
20 s budget on a loaded 2-core machine one step takes 0.3-1.2 s and one validation 0.8-3 s, so
the reserve alone is 5-20 % of the budget and a validation faster than the last ones leaves
that much unused (measured while writing this test: 84-97 % of 20 s). With a budget of minutes
the same seconds are a few per cent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from _run_kill import kill_at_checkpoint
from _tiny import tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.config.duration import format_duration, parse_duration
from medimg.config.load import parse_workflow
from medimg.errors import ConfigError

LR = 1e-3
MIN_LR = LR * 0.01  # warmup_cosine's floor: min_lr_ratio 0.01


def _budget_workflow(budget: str, out: str) -> dict:
    wf = tiny_workflow()
    wf["trainer"] = {"max_time": budget, "max_epochs": 1, "accelerator": "cpu"}
    wf["optim"] = {"batch_size": 2, "lr": LR, "scheduler": "cosine", "warmup_epochs": 0}
    wf["tracking"]["log_checkpoint"] = False
    wf["outputs"]["dir"] = out
    return wf


def _state(ckpt: Path) -> tuple[float, int, list[float], list[int]]:
    """Trained seconds (Lightning's Timer), global step, last learning rates, schedule lengths."""
    c = torch.load(ckpt, map_location="cpu", weights_only=True)
    sched = c["lr_schedulers"][0]
    return (
        float(c["callbacks"]["Timer"]["time_elapsed"]["train"]),
        int(c["global_step"]),
        [float(v) for v in sched["_last_lr"]],
        [int(f["total_steps"]) for f in sched["lr_lambdas"]],
    )


def _metrics(out: Path) -> tuple[mlflow.MlflowClient, str, dict[str, float]]:
    info = json.loads((out / "run.json").read_text())
    client = mlflow.MlflowClient(info["tracking_uri"])
    return client, info["run_id"], client.get_run(info["run_id"]).data.metrics


def test_durations_and_the_schema_error():
    assert parse_duration("90s") == 90 and parse_duration("20m") == 1200 and parse_duration("8h") == 28800
    assert format_duration(1200) == "20m" and format_duration(parse_duration("1.5h")) == "90m"
    for bad in ("20", "20 minutes", "-5m", "0s", "m"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    raw = {"task": "classification", "data": {"manifest": "m.csv"}, "trainer": {"max_time": "20 min"}}
    with pytest.raises(ConfigError) as err:
        parse_workflow(raw, "wf.yaml")
    assert "trainer.max_time" in str(err.value) and "20m" in str(err.value)


@pytest.mark.slow
def test_max_time_ends_at_the_budget_with_the_schedule_complete(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    budget = 20.0
    start = time.monotonic()
    assert main(["run", str(write_wf(tmp_path / "wf.yaml", _budget_workflow("20s", "runs/budget")))]) == 0
    wall = time.monotonic() - start
    out = tmp_path / "runs/budget"
    trained, step, last_lr, totals = _state(out / "checkpoints/last.ckpt")
    assert 0.75 * budget <= trained <= 1.05 * budget, trained
    assert step > 3  # the epoch count (max_epochs: 1) did not stop it: the budget did
    assert totals == [step, step] and last_lr == pytest.approx([MIN_LR, MIN_LR])  # schedule complete
    _client, _run_id, m = _metrics(out)
    assert m["budget_s"] == budget and m["budget_remaining_s"] == pytest.approx(budget, abs=0.5)
    assert 0.75 * budget <= m["budget_elapsed_s"] <= 1.05 * budget
    assert m["budget_schedule_steps"] == step and m["budget_val_every_n_epochs"] >= 1
    assert wall > trained  # the whole run (data, test scoring) also ran; training alone kept the budget


@pytest.mark.slow
def test_resume_keeps_the_remaining_budget(tmp_path):
    budget = 30.0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    wf = write_wf(tmp_path / "wf.yaml", _budget_workflow("30s", "runs/killed"))
    cmd = [sys.executable, "-m", "medimg", "run", str(wf)]
    ckpt = tmp_path / "runs/killed/checkpoints/last.ckpt"
    kill_at_checkpoint(
        cmd,
        tmp_path,
        env,
        ckpt,
        lambda c: _state(c)[0] >= 8.0,
        "no checkpoint after 8.0 s of training appeared",
    )
    spent, step_killed, _lr, _totals = _state(ckpt)  # what the checkpoint recorded before the kill
    assert 8.0 <= spent < 0.8 * budget
    res = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    trained, step, last_lr, totals = _state(ckpt)
    assert step > step_killed
    assert 0.75 * budget <= trained <= 1.05 * budget, trained  # the two parts together keep the budget
    assert totals == [step, step] and last_lr == pytest.approx([MIN_LR, MIN_LR])
    client, run_id, _m = _metrics(tmp_path / "runs/killed")
    remaining = [m.value for m in client.get_metric_history(run_id, "budget_remaining_s")]
    assert remaining[0] == pytest.approx(budget, abs=0.5)  # the first start had the whole budget
    assert remaining[-1] == pytest.approx(budget - spent, abs=0.5)  # the resumed one what was left


class _Timer:  # Lightning's Timer as TimeBudget reads it
    def __init__(self, remaining: float) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float:
        return self.remaining


def _trainer_at(step: int, planned: int, remaining: float):
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from medimg.training.optim import warmup_cosine

    timer = _Timer(remaining)
    timer.__class__ = type("T", (_Timer, Timer), {})  # isinstance(.., Timer) without its set-up
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(planned, 0))
    for _ in range(step):
        opt.step()
        sched.step()
    return SimpleNamespace(
        callbacks=[timer], global_step=step, should_stop=False, check_val_every_n_epoch=1,
        lr_scheduler_configs=[SimpleNamespace(scheduler=sched)],
    ), sched  # fmt: skip


def test_a_budget_spent_before_the_planned_end_ends_the_schedule_at_that_step():
    from medimg.training.budget import NEVER, TimeBudget

    cb = TimeBudget(20.0)
    cb.total_steps, cb.step_s = 358, 0.05
    trainer, sched = _trainer_at(351, 358, remaining=0.03)  # less than one more step's time left
    cb.on_train_epoch_end(trainer, None)  # a validation at the epoch's end spent the budget
    assert trainer.should_stop and trainer.check_val_every_n_epoch == NEVER
    assert cb.total_steps == 351 and sched.lr_lambdas[0].total_steps == 351
    assert sched.get_last_lr() == pytest.approx([MIN_LR])  # the weights ended at the minimum rate
    trainer, sched = _trainer_at(200, 358, remaining=5.0)  # time left: nothing changes
    cb.total_steps = 358
    cb.on_train_epoch_end(trainer, None)
    assert not trainer.should_stop and cb.total_steps == 358 and sched.get_last_lr()[0] > 10 * MIN_LR
