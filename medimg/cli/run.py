"""``medimg run WORKFLOW.yaml``: train and score a study, tracked in MLflow."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit


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
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one workflow key (repeatable), e.g. --set optim.lr=0.001",
    )
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


def _failures(per_case) -> list[dict[str, str]]:
    """Test cases that could not be scored, with their reason (the ``error`` column of the per-case table)."""
    if per_case is None or "error" not in per_case:
        return []
    failed = per_case[per_case["error"].notna()]
    return [{"case_key": str(r.case_key), "reason": str(r.error)} for r in failed.itertuples()]


def _check(args: argparse.Namespace, wf) -> int:
    """``--check``: the workflow's ranges, the manifest, the split column, every image and mask read."""
    from medimg.config.load import config_hash
    from medimg.data.checks import check_case_files
    from medimg.training.run import prepare_data

    df = prepare_data(wf)  # the workflow's ranges, the manifest, the split column
    check_case_files(wf, df)  # every image and mask read as training reads them
    counts = df["split"].value_counts().to_dict()
    digest = config_hash(wf)
    document = {"workflow": wf.name, "config_hash": digest, "cases": len(df), "splits": counts, "ok": True}
    emit(args, document, [f"workflow OK ({wf.name}, hash {digest[:12]}); {len(df)} cases: {counts}"])
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


def _detection(args: argparse.Namespace) -> int:
    """``task: detection`` runs medimg.detection's study (not yet a registered task; docs/detection.md)."""
    from medimg.config.detection import load_detection_workflow
    from medimg.detection.study import run_detection_study
    from medimg.errors import ConfigError

    if args.check or args.folds or args.seeds or args.resume:
        raise ConfigError("a detection workflow does not take --check, --folds, --seeds or --resume yet")
    res = run_detection_study(load_detection_workflow(args.workflow, args.overrides))
    document = {"workflow": str(args.workflow), "run_id": res.run_id, "tracking_uri": res.tracking_uri,
                "out_dir": str(res.out_dir), "model_dir": str(res.model_dir), "seconds": round(res.wall_s, 3),
                "metrics": dict(sorted(res.metrics.items()))}  # fmt: skip
    lines = [f"  {key:28s} {res.metrics[key]:.4f}" for key in sorted(res.metrics)]
    emit(args, document, [*lines, f"  outputs:       {res.out_dir}", f"  MLflow run:    {res.run_id}"])
    return 0


def _generative(args: argparse.Namespace) -> int:
    """``task: anomaly`` / ``task: superres`` run medimg.generative's study (docs/generative.md)."""
    from medimg.config.generative import load_generative_workflow
    from medimg.errors import ConfigError
    from medimg.generative.run import run_generative

    if args.check or args.folds or args.seeds or args.resume:
        raise ConfigError(
            "an anomaly or superres workflow does not take --check, --folds, --seeds or --resume yet"
        )
    res = run_generative(load_generative_workflow(args.workflow, args.overrides))
    document = {"workflow": str(args.workflow), "run_id": res.run_id, "tracking_uri": res.tracking_uri,
                "out_dir": str(res.out_dir), "seconds": round(res.seconds, 3),
                "metrics": dict(sorted(res.metrics.items()))}  # fmt: skip
    lines = [f"  {key:28s} {res.metrics[key]:.4f}" for key in sorted(res.metrics)]
    emit(args, document, [*lines, f"  outputs:       {res.out_dir}", f"  MLflow run:    {res.run_id}"])
    return 0


def execute(args: argparse.Namespace) -> int:
    from medimg.config.detection import is_detection_workflow
    from medimg.config.generative import GENERATIVE_TASKS, workflow_task
    from medimg.config.load import load_workflow

    if is_detection_workflow(args.workflow):
        return _detection(args)
    if workflow_task(args.workflow) in GENERATIVE_TASKS:
        return _generative(args)
    wf = load_workflow(args.workflow, args.overrides)
    if args.check:
        return _check(args, wf)
    if args.folds or args.seeds:
        return _repeats(args, wf)
    import json

    from medimg.training.run import run_workflow

    res = run_workflow(wf, resume=args.resume)
    info_path = res.out_dir / "run.json"  # what the run recorded: status, weights sha256, model URI
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    per_case_csv = res.out_dir / "test_per_case.csv"
    document = {
        "workflow": wf.name, "run_id": res.run_id, "tracking_uri": res.tracking_uri, "status": info.get("status"),
        "out_dir": str(res.out_dir), "model_dir": str(res.model_dir), "weights_sha256": info.get("weights_sha256"),
        "per_case_csv": str(per_case_csv) if per_case_csv.is_file() else None, "seconds": round(res.seconds, 3),
        "metrics": dict(sorted(res.metrics.items())), "failures": _failures(res.per_case), "model_uri": info.get("model_uri"),
    }  # fmt: skip
    lines = [f"\n== {wf.name}: finished in {res.seconds:.0f} s =="]
    lines += [f"  {key:28s} {res.metrics[key]:.4f}" for key in sorted(res.metrics)]
    lines += [f"  outputs:       {res.out_dir}", f"  MLflow run:    {res.run_id}"]
    ui = f"mlflow ui --backend-store-uri {res.tracking_uri}"
    lines += [f"  MLflow store:  {res.tracking_uri}", f"  open the UI:   {ui}"]
    emit(args, document, lines)
    return 1 if int(res.metrics.get("n_failed", 0)) else 0
