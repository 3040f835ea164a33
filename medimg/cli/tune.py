"""``medimg tune WORKFLOW --trials N --budget T --out BEST.yaml``: hyperparameter search with Optuna.

The work is done by :func:`medimg.training.tune.tune_workflow`.
"""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit
from medimg.cli.workflow_flags import add_set_flag


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tune",
        help="search learning rate, patch, depth and augmentation strength with Optuna; write the best workflow",
        description="Run a hyperparameter search over the workflow's `tune` section (or the default space: "
        "learning rate log-uniform in [1e-4, 1e-2], the network's depth and one less/more, augmentation "
        "strength in [0, 1]). Each trial is the workflow with the sampled values, trained as an MLflow child "
        "run under one parent run (outputs in <outputs.dir>/trial_<n>); after every validation it reports "
        "the monitored metric (val_dice, or val_loss for classification) to Optuna's median pruner, which "
        "stops unpromising trials. No trial starts after --budget. The best trial's workflow is written to "
        "--out as YAML that `medimg run` reads.",
        epilog="example: medimg tune workflows/quickstart_seg.yaml --trials 20 --budget 2h --out best.yaml",
    )
    p.add_argument("workflow", help="study workflow YAML")
    p.add_argument("--trials", type=int, required=True, help="number of trials")
    p.add_argument(
        "--budget",
        default=None,
        help="wall-clock budget of the search, e.g. 90m, 8h (no trial starts after it)",
    )
    p.add_argument("--out", required=True, help="where the best workflow is written (YAML)")
    add_set_flag(p)
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the sampler (default: the workflow's seed)"
    )
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    from medimg.config.duration import parse_duration
    from medimg.config.load import load_workflow
    from medimg.errors import ConfigError
    from medimg.training.tune import tune_workflow

    budget = None
    if args.budget is not None:
        try:
            budget = parse_duration(args.budget)
        except ValueError as exc:
            raise ConfigError(f"--budget: {exc}") from None
    wf = load_workflow(args.workflow, args.overrides)
    res = tune_workflow(wf, args.trials, budget, args.out, seed=args.seed)
    document = {
        "workflow": wf.name,
        "parent_run_id": res.parent_run_id,
        "best_value": res.best_value,
        "best_params": res.best_params,
        "best_workflow": str(res.best_workflow),
        "trials": res.trials.to_dict(orient="records"),
    }
    lines = [res.trials.to_string(index=False), f"best: {res.best_value:.4f} with {res.best_params}"]
    lines += [f"best workflow: {res.best_workflow}", f"parent MLflow run: {res.parent_run_id}"]
    emit(args, document, lines)
    return 0
