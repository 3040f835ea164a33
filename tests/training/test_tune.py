"""medimg tune: the declared space, the values a trial changes, child runs under a parent, pruning
on validation, and a best workflow that loads with the strict schema."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from _tiny import TINY, tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.config.load import load_workflow, parse_workflow
from medimg.errors import ConfigError
from medimg.training.tune import apply_params, resolve_space


def test_the_default_space_searches_lr_depth_and_augmentation_around_the_workflow() -> None:
    wf = parse_workflow(TINY)
    space = resolve_space(wf)
    assert space.lr == (1e-4, 1e-2) and space.augmentation_strength == (0.0, 1.0)
    assert space.depth == [2, 3, 4] and space.patch_size is None  # tiny's unet has 3 levels


def test_a_trial_changes_exactly_the_keys_it_samples() -> None:
    wf = parse_workflow(TINY)
    raw = apply_params(wf, {"lr": 0.003, "depth": 4, "patch_size": "24x24x16", "augmentation_strength": 0.5})
    assert raw["optim"]["lr"] == 0.003
    assert raw["model"]["params"]["channels"] == [4, 8, 16, 32] and raw["model"]["params"]["strides"] == [
        2,
        2,
        2,
    ]
    assert raw["augmentation"]["patch_size"] == [24, 24, 16]
    assert raw["augmentation"]["spatial"] == {"prob": 0.25, "rotate_deg": 15.0, "scale": 0.15}
    assert raw["augmentation"]["intensity"]["prob"] == 0.5
    assert raw["augmentation"]["intensity"]["shift"] == pytest.approx(0.1)
    untouched = json.loads(wf.model_dump_json())
    for key in ("data", "preprocessing", "trainer", "inference", "tracking"):
        assert raw[key] == untouched[key]
    parse_workflow(raw)  # still a valid workflow


def test_a_declared_space_is_strict_and_checked_against_the_network() -> None:
    with pytest.raises(ConfigError, match=r"tune\.lr"):
        parse_workflow(tiny_workflow(tune={"lr": [0.1, 0.01]}))
    with pytest.raises(ConfigError, match="tune"):
        parse_workflow(tiny_workflow(tune={"learning_rate": [0.1, 0.2]}))
    declared = parse_workflow(tiny_workflow(tune={"lr": None, "depth": [3], "patch_size": [[16, 16, 16]]}))
    assert resolve_space(declared).depth == [3] and resolve_space(declared).lr is None
    other = tiny_workflow(model={"name": "segresnet", "params": {}}, tune={"depth": [2, 3]})
    with pytest.raises(ConfigError, match="tune.depth: network 'segresnet' has no channels/strides"):
        resolve_space(parse_workflow(other))


def test_budget_and_trials_are_refused_with_their_option(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_wf(tmp_path / "tiny.yaml", TINY)
    assert main(["tune", str(path), "--trials", "2", "--budget", "soon", "--out", "b.yaml"]) == 3
    assert "--budget: expected a duration" in capsys.readouterr().err
    assert main(["tune", str(path), "--trials", "0", "--out", "b.yaml"]) == 3
    assert "--trials 0: expected 1 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_a_small_search_runs_end_to_end_and_writes_the_best_workflow(tmp_path: Path) -> None:
    import mlflow

    wf = tiny_workflow(tune={"lr": [1e-3, 1e-2], "depth": [2, 3], "augmentation_strength": [0.0, 0.5]})
    wf["trainer"]["max_epochs"] = 2
    path = write_wf(tmp_path / "tiny.yaml", wf)
    argv = ["tune", str(path), "--trials", "3", "--budget", "30m", "--out", "best.yaml", "--json"]
    assert main(argv) == 0
    best = load_workflow(tmp_path / "best.yaml")  # the strict schema, as medimg run reads it
    trials = pd.read_csv(tmp_path / "runs" / "tiny_seg" / "tune_trials.csv")
    assert len(trials) == 3 and set(trials.state) <= {"COMPLETE", "PRUNED"}
    complete = trials[trials.state == "COMPLETE"]
    top = complete.loc[complete.value.idxmax()]
    assert best.optim.lr == pytest.approx(top.lr)
    assert len(best.model.params["channels"]) == top.depth  # type: ignore[arg-type]
    assert best.augmentation.intensity.prob == pytest.approx(top.augmentation_strength)
    assert best.outputs.dir == "runs/tiny_seg" and best.data == parse_workflow(wf).data
    # every trial is a child run of one parent, with its values and its state
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    children = [client.get_run(r) for r in trials.run_id]
    parents = {c.data.tags["mlflow.parentRunId"] for c in children}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.data.metrics["tune_best_value"] == pytest.approx(top.value)
    assert parent.data.tags["medimg.tune.best_run"] == top.run_id
    for child, row in zip(children, trials.itertuples(), strict=True):
        assert child.data.tags["medimg.tune.state"] == row.state
        assert float(child.data.params["trial.lr"]) == pytest.approx(row.lr)
        assert float(child.data.params["optim.lr"]) == pytest.approx(row.lr)
        # the value reported to Optuna is the best val_dice the child run logged
        history = [m.value for m in client.get_metric_history(child.info.run_id, "val_dice")]
        assert row.value == pytest.approx(max(history)) and row.reported == len(history)
        if row.state == "COMPLETE":
            assert len(history) == 2  # one report per epoch


def test_a_trial_below_the_median_is_stopped_at_its_validation_and_marked_pruned() -> None:
    from types import SimpleNamespace

    import optuna
    import torch

    from medimg.training.tune import _pruning_callback

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    module = SimpleNamespace(monitor="val_dice", monitor_mode="max")

    def validate(cb, trainer, epoch: int, value: float) -> None:
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val_dice": torch.tensor(value)}
        cb.on_validation_end(trainer, module)

    good = study.ask()
    cb = _pruning_callback(good)
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False)
    for epoch, v in enumerate((0.6, 0.8)):
        validate(cb, trainer, epoch, v)
    assert not cb.pruned and not trainer.should_stop and cb.best() == pytest.approx(0.8)
    study.tell(good, cb.best())
    bad = study.ask()
    cb = _pruning_callback(bad)
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False)
    validate(cb, trainer, 0, 0.1)  # below the median of the completed trial at epoch 0 (0.6)
    assert cb.pruned and trainer.should_stop and cb.values == [pytest.approx(0.1)]
    assert bad.storage.get_trial(bad._trial_id).intermediate_values == {0: pytest.approx(0.1)}


def test_a_trial_refused_by_the_data_stops_the_search_naming_the_file_and_fails_its_parent(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import mlflow

    data = {**TINY["data"], "manifest": "nowhere/manifest.csv", "synthetic": None}  # type: ignore[dict-item]
    path = write_wf(tmp_path / "tiny.yaml", tiny_workflow(data=data))
    assert main(["tune", str(path), "--trials", "2", "--out", "best.yaml"]) == 3
    assert "nowhere/manifest.csv" in capsys.readouterr().err
    assert not (tmp_path / "best.yaml").exists()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (parent,) = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert parent.info.run_name == "tiny_seg-tune" and parent.info.status == "FAILED"


def test_run_and_tune_read_workflow_overrides_alike():
    from medimg.cli.parser import build_parser

    parser = build_parser()
    sets = ["--set", "optim.lr=0.01", "--set", "trainer.max_epochs=2"]
    run = parser.parse_args(["run", "w.yaml", *sets])
    tune = parser.parse_args(["tune", "w.yaml", "--trials", "1", "--out", "b.yaml", *sets])
    assert run.overrides == tune.overrides == ["optim.lr=0.01", "trainer.max_epochs=2"]
