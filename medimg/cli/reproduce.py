"""``medimg reproduce RUN_ID``: retrain a run from its MLflow record and compare metrics."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reproduce",
        help="retrain a run from its MLflow record (workflow, data hashes, seed) and compare its metrics",
        description="Rebuild the workflow from the run's artifacts, check that every data file still has "
        "the sha256 recorded by the run (a clear error names each changed or missing file), retrain with "
        "the run's own split and seed, log a new run tagged medimg.reproduces=RUN_ID, and print the "
        "original and reproduced test metrics side by side. Exit code 0 when they agree within "
        "--tolerance (exact by default; use trainer.deterministic: true for bit-exact runs).",
        epilog="example: medimg reproduce 3f2a9c0d1e... --tracking-uri sqlite:///runs/mlflow.db",
    )
    p.add_argument("run_id", help="MLflow run id of a finished medimg run")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)",
    )
    p.add_argument("--out", default=None, help="outputs folder of the reproduction")
    p.add_argument(
        "--tolerance", type=float, default=0.0, help="largest accepted metric difference (default 0)"
    )
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    import os

    from medimg.training.reproduce import reproduce_runner
    from medimg.training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///runs/mlflow.db"
    )
    rep = reproduce_runner(args.run_id, uri)(args.run_id, uri, args.out)  # the run's task's (medimg.tasks)
    ok = rep.identical(args.tolerance)
    document = {
        "original_run": rep.original_run,
        "reproduction_run": rep.new_run,
        "reproduced": ok,
        "tolerance": args.tolerance,
        "metrics": rep.table.to_dict(orient="records"),
    }
    emit(args, document, [f"original run {rep.original_run} -> reproduction {rep.new_run}",
                          rep.table.to_string(index=False),
                          "REPRODUCED: identical" if ok else f"NOT REPRODUCED within tolerance {args.tolerance}"])  # fmt: skip
    return 0 if ok else 1
