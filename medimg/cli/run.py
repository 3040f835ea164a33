"""``medimg run WORKFLOW.yaml``: train and score a study, tracked in MLflow."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit
from medimg.cli.workflow_flags import add_set_flag


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="run a study workflow (train, validate, score the test split, log to MLflow)",
        description="Run the study described by a workflow YAML: generate or read the data, train the "
        "network in Lightning, score the test split in each scan's own geometry, and log the resolved "
        "workflow, its hash, the manifest, metrics and the best weights to MLflow.",
        epilog="example: medimg run workflows/quickstart_seg.yaml --set trainer.max_epochs=5",
    )
    p.add_argument("workflow", help="study workflow YAML (see docs/workflow.md)")
    add_set_flag(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in outputs.dir")
    p.add_argument(
        "--folds",
        type=int,
        default=None,
        help="k-fold cross-validation: k child runs under one parent MLflow run (mean, sd, 95%% CI)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        metavar="S1,S2,...",
        help="repeat with these seeds as child runs under one parent run",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the workflow and the data (files, label geometry) and stop before training",
    )
    add_json_flag(p)
    return p


def _check(args: argparse.Namespace, wf) -> int:
    """``--check``: the workflow, its data and its plan checked without training (nothing written)."""
    from medimg.training.check import check_workflow

    emit(args, *check_workflow(wf))
    return 0


def _repeats(args: argparse.Namespace, wf) -> int:
    """``--folds``/``--seeds``: child runs under one parent MLflow run."""
    from medimg.errors import ConfigError
    from medimg.training.repeats import run_repeats

    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [wf.seed]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected integers separated by commas") from None
    if args.folds is not None and args.folds < 2:
        raise ConfigError(f"--folds {args.folds}: expected 2 or more")
    parent, table = run_repeats(wf, args.folds, seeds)
    document = {"workflow": wf.name, "parent_run_id": parent, "runs": table.to_dict(orient="records")}
    emit(args, document, [table.to_string(index=False), f"parent MLflow run: {parent}"])
    return 0


def _emit(args: argparse.Namespace, document: dict, lines: list[str], code: int) -> int:
    emit(args, document, lines)
    return code


def _own_study(args: argparse.Namespace) -> int | None:
    """A task with its own study (detection, anomaly, superres: ``Task.study``) runs it; else ``None``."""
    from medimg.config.load import workflow_task_name
    from medimg.tasks import get_task, task_entry, task_names

    name = workflow_task_name(args.workflow)
    if name not in task_names() or get_task(name).study is None:
        return None  # the common stages (or the schema's error naming the known tasks)
    task = get_task(name)
    flags = {"check": args.check, "folds": args.folds, "seeds": args.seeds, "resume": args.resume}
    taken = task.take_run_flags(args.workflow, flags)  # the others, when given, are refused by name
    return _emit(args, *task_entry(task, "study")(args.workflow, args.overrides, **taken))


def execute(args: argparse.Namespace) -> int:
    from medimg.config.load import load_workflow

    code = _own_study(args)  # docs/detection.md, docs/generative.md
    if code is not None:
        return code
    wf = load_workflow(args.workflow, args.overrides)
    if args.check:
        return _check(args, wf)
    if args.folds or args.seeds:
        return _repeats(args, wf)
    from medimg.training.run import run_and_report

    return _emit(args, *run_and_report(wf, resume=args.resume))
