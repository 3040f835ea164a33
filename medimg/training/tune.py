"""Hyperparameter search (``medimg tune``): Optuna over a declared space, trials as MLflow child runs.

The space is the workflow's ``tune`` section (:class:`medimg.config.search.TuneSpace`), or its
defaults. Each trial is the workflow with the sampled values, run by
:func:`medimg.training.run.run_workflow` as a child of one parent MLflow run (its own outputs
folder ``<outputs.dir>/trial_<n>``). After every validation the trial reports the task's monitored
metric (``val_dice`` for segmentation, ``val_loss`` for classification) to Optuna's
``MedianPruner``; a trial the pruner stops ends its training there and is recorded as pruned
(tag ``medimg.tune.state``). The objective is the best monitored value of the trial. The search
starts no trial after ``budget`` seconds. The best trial's workflow (outputs and run name set
back to the study's) is written as YAML that loads with the strict schema.

Example:
    >>> res = tune_workflow(load_workflow("study.yaml"), trials=20, budget_s=3600, out="best.yaml")  # doctest: +SKIP
    >>> res.best_params  # doctest: +SKIP
    {'lr': 0.0031, 'depth': 4, 'augmentation_strength': 0.42}
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medimg.config.schema import Workflow
from medimg.config.search import TuneSpace
from medimg.errors import ConfigError

log = logging.getLogger(__name__)
PRUNED_TAG = "medimg.tune.state"


@dataclass
class TuneResult:
    """The search: its parent run, every trial (number, state, value, params, run id), the best."""

    parent_run_id: str
    trials: pd.DataFrame
    best_value: float
    best_params: dict[str, Any]
    best_workflow: Path


def _depth_params(wf: Workflow) -> tuple[list[int], list[int]] | None:
    """The network's channels and strides (workflow, else registry default), or None if it has none."""
    from medimg.models.networks import network_info

    params = {**network_info(wf.model.name).defaults, **wf.model.params}
    if "channels" not in params or "strides" not in params:
        return None
    channels = [int(c) for c in params["channels"]]  # type: ignore[union-attr]
    strides = [int(v) if isinstance(v, int) else 2 for v in params["strides"]]  # type: ignore[union-attr]
    return channels, strides


def resolve_space(wf: Workflow) -> TuneSpace:
    """The space searched: the workflow's ``tune`` section or the default, with the depth filled in.

    Raises:
        ConfigError: ``tune.depth`` for a network without channels/strides, or ``tune.patch_size``
            for a task without patches (names the key and the network or task).
    """
    space = (wf.tune or TuneSpace()).model_copy()
    depth = _depth_params(wf)
    if wf.tune is not None and wf.tune.depth is not None and depth is None:
        raise ConfigError(
            f"tune.depth: network {wf.model.name!r} has no channels/strides to change; "
            "remove tune.depth or use a UNet-like network"
        )
    if space.depth is None and depth is not None:
        d = len(depth[0])
        space.depth = sorted({max(2, d - 1), d, d + 1})
    if space.patch_size is not None and wf.augmentation.patch_size is None:
        raise ConfigError(
            "tune.patch_size: this workflow trains without patches (augmentation.patch_size is null)"
        )
    return space


def _sample(trial: Any, space: TuneSpace, wf: Workflow) -> dict[str, Any]:
    """One point of the space, named as the trial records it."""
    params: dict[str, Any] = {}
    if space.lr is not None:
        params["lr"] = trial.suggest_float("lr", space.lr[0], space.lr[1], log=True)
    if space.patch_size:
        choices = ["x".join(map(str, p)) for p in space.patch_size]
        params["patch_size"] = trial.suggest_categorical("patch_size", choices)
    if space.depth and _depth_params(wf) is not None:
        params["depth"] = trial.suggest_categorical("depth", list(space.depth))
    if space.augmentation_strength is not None:
        lo, hi = space.augmentation_strength
        params["augmentation_strength"] = trial.suggest_float("augmentation_strength", lo, hi)
    return params


def apply_params(wf: Workflow, params: dict[str, Any]) -> dict[str, Any]:
    """The workflow (as a dict) with a trial's values put in place.

    Example:
        >>> raw = apply_params(wf, {"lr": 0.003, "depth": 3})  # doctest: +SKIP
        >>> raw["model"]["params"]["strides"]  # doctest: +SKIP
        [2, 2]
    """
    raw = json.loads(wf.model_dump_json())
    if "lr" in params:
        raw["optim"]["lr"] = float(params["lr"])
    if "patch_size" in params:
        raw["augmentation"]["patch_size"] = [int(v) for v in str(params["patch_size"]).split("x")]
    if "depth" in params:
        depth = _depth_params(wf)
        assert depth is not None
        d, c0 = int(params["depth"]), depth[0][0]
        raw["model"]["params"]["channels"] = [c0 * 2**i for i in range(d)]
        raw["model"]["params"]["strides"] = [2] * (d - 1)
    if "augmentation_strength" in params:
        s = float(params["augmentation_strength"])
        aug = raw["augmentation"]
        aug["spatial"].update({"prob": 0.5 * s, "rotate_deg": 30.0 * s, "scale": 0.3 * s})
        aug["intensity"].update({"prob": s, "shift": 0.2 * s, "scale": 0.2 * s})
    return raw


def _pruning_callback(trial: Any) -> Any:
    """A Lightning callback that reports each validation to the trial and stops a pruned one."""
    from lightning.pytorch.callbacks import Callback

    class ReportToTrial(Callback):
        def __init__(self) -> None:
            self.values: list[float] = []
            self.pruned = False
            self.mode = "max"

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking:
                return
            value = trainer.callback_metrics.get(pl_module.monitor)
            if value is None:
                return
            self.mode = pl_module.monitor_mode
            v = float(value)
            self.values.append(v)
            trial.report(v, step=trainer.current_epoch)
            if trial.should_prune():
                self.pruned = True
                trainer.should_stop = True

        def best(self) -> float:
            if not self.values:
                return float("nan")
            return max(self.values) if self.mode == "max" else min(self.values)

    return ReportToTrial()


def _direction(wf: Workflow) -> str:
    from medimg.training.tasks import task_class

    return "maximize" if task_class(wf.task).monitor_mode == "max" else "minimize"


def tune_workflow(
    wf: Workflow, trials: int, budget_s: float | None, out: str | Path, seed: int | None = None
) -> TuneResult:
    """Search the workflow's space with Optuna; write the best workflow to ``out`` (YAML).

    Raises:
        ConfigError: A space that does not fit the workflow, or no trial that finished with a
            validation value (names the parent run).
    """
    import optuna

    from medimg.config.load import parse_workflow
    from medimg.training.run import run_workflow

    if trials < 1:
        raise ConfigError(f"--trials {trials}: expected 1 or more")
    space = resolve_space(wf)
    parent, client = _start_parent_run(wf, trials, budget_s, space)
    study = _create_study(wf, seed)
    base = Path(wf.outputs.dir)
    rows: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = _sample(trial, space, wf)
        raw = apply_params(wf, params)
        raw["outputs"]["dir"] = str(base / f"trial_{trial.number}")
        raw["tracking"]["run_name"] = f"{wf.name}-trial{trial.number}"
        child = parse_workflow(raw, source=f"tune trial {trial.number}")
        reporter = _pruning_callback(trial)
        res = run_workflow(child, parent_run_id=parent, callbacks=[reporter])
        state = "PRUNED" if reporter.pruned else "COMPLETE"
        client.set_tag(res.run_id, PRUNED_TAG, state)
        for k, v in params.items():
            client.log_param(res.run_id, f"trial.{k}", str(v))
        value = reporter.best()
        row = {"trial": trial.number, "state": state, "value": value, "reported": len(reporter.values)}
        rows.append({**row, "run_id": res.run_id, **params})
        if reporter.pruned:
            raise optuna.TrialPruned()
        if math.isnan(value):
            raise ConfigError(f"tune trial {trial.number} (run {res.run_id}): no validation value was logged")
        return value

    t0 = time.perf_counter()
    try:
        study.optimize(objective, n_trials=trials, timeout=budget_s, catch=())
    except BaseException:  # a refused case, a NaN loss, Ctrl-C: the search is FAILED, its cause shown
        client.set_terminated(parent, "FAILED")
        raise
    table = pd.DataFrame(rows)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        client.set_terminated(parent, "FAILED")
        raise ConfigError(f"tune (MLflow run {parent}): no trial completed; every one was pruned or failed")
    return _record_best(wf, study, table, client, parent, out, base, t0)


def _start_parent_run(wf: Workflow, trials: int, budget_s: float | None, space: TuneSpace) -> tuple[str, Any]:
    """Start the search's parent MLflow run and log its settings; return its id and a client."""
    import mlflow

    from medimg.training.tracking import make_logger, resolve_tracking_uri

    uri = resolve_tracking_uri(wf.tracking.uri)
    parent = make_logger(uri, wf.tracking.experiment, f"{wf.tracking.run_name or wf.name}-tune").run_id
    client = mlflow.MlflowClient(uri)
    client.log_param(parent, "tune.trials", str(trials))
    client.log_param(parent, "tune.budget_s", str(budget_s))
    client.log_param(parent, "tune.space", json.dumps(space.model_dump()))
    return parent, client


def _create_study(wf: Workflow, seed: int | None) -> Any:
    """An Optuna study in the workflow's direction: a seeded TPE sampler and a median pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        direction=_direction(wf),
        sampler=optuna.samplers.TPESampler(seed=wf.seed if seed is None else seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )


def _record_best(
    wf: Workflow,
    study: Any,
    table: pd.DataFrame,
    client: Any,
    parent: str,
    out: str | Path,
    base: Path,
    t0: float,
) -> TuneResult:
    """Write the best trial's workflow to ``out`` and the trials table; log both and finish the parent run."""
    from medimg.config.load import parse_workflow, workflow_to_yaml
    from medimg.io.atomic import atomic_write_text

    best = study.best_trial
    raw = apply_params(wf, best.params)
    best_wf = parse_workflow(raw, source="best trial")  # the strict schema, as `medimg run` reads it
    out_path = atomic_write_text(Path(out), workflow_to_yaml(best_wf))
    base.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base / "tune_trials.csv", table.to_csv(index=False))
    client.log_artifact(parent, str(out_path), "tune")
    client.log_artifact(parent, str(base / "tune_trials.csv"), "tune")
    client.log_metric(parent, "tune_best_value", float(best.value))
    client.log_metric(parent, "tune_seconds", time.perf_counter() - t0)
    client.set_tag(parent, "medimg.tune.best_run", str(table[table.trial == best.number].run_id.iloc[0]))
    client.set_terminated(parent, "FINISHED")
    return TuneResult(parent, table, float(best.value), dict(best.params), out_path)
