"""``medimg run WORKFLOW.yaml``: train and score a study, tracked in MLflow."""

from __future__ import annotations

import argparse


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
    return p


def execute(args: argparse.Namespace) -> int:
    from medimg.config.load import config_hash, load_workflow

    wf = load_workflow(args.workflow, args.overrides)
    if args.check:
        from medimg.data.checks import check_case_files
        from medimg.training.run import prepare_data

        df = prepare_data(wf)  # the workflow's ranges, the manifest, the split column
        check_case_files(wf, df)  # every image and mask read as training reads them
        counts = df["split"].value_counts().to_dict()
        print(f"workflow OK ({wf.name}, hash {config_hash(wf)[:12]}); {len(df)} cases: {counts}")
        return 0
    if args.folds or args.seeds:
        from medimg.errors import ConfigError
        from medimg.training.repeats import run_repeats

        try:
            seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [wf.seed]
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r}: expected integers separated by commas") from None
        if args.folds is not None and args.folds < 2:
            raise ConfigError(f"--folds {args.folds}: expected 2 or more")
        parent, table = run_repeats(wf, args.folds, seeds)
        print(table.to_string(index=False))
        print(f"parent MLflow run: {parent}")
        return 0
    from medimg.training.run import run_workflow

    res = run_workflow(wf, resume=args.resume)
    print(f"\n== {wf.name}: finished in {res.seconds:.0f} s ==")
    for key in sorted(res.metrics):
        print(f"  {key:28s} {res.metrics[key]:.4f}")
    print(f"  outputs:       {res.out_dir}")
    print(f"  MLflow run:    {res.run_id}")
    print(f"  MLflow store:  {res.tracking_uri}")
    print(f"  open the UI:   mlflow ui --backend-store-uri {res.tracking_uri}")
    failed = int(res.metrics.get("n_failed", 0))
    return 1 if failed else 0
