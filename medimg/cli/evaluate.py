"""``medimg evaluate MODEL``: per-case metrics, CIs, subgroups, comparison and an HTML report."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="score a trained model on labelled cases: per-case CSV, CIs, subgroups, plots, HTML report",
        description="Score a trained model (model folder, MLflow run id, or .ckpt) on the cases of a "
        "manifest (default: the test split of the manifest the run was trained with), in each case's "
        "original geometry. Writes per_case.csv (Dice, HD95, surface metrics... or probability, "
        "prediction, correct), summary.json with patient-level bootstrap CIs, subgroup analyses (--by), "
        "a paired comparison with a second model (--compare), PNG plots and a self-contained "
        "report.html; all are logged to the model's MLflow run when it has one.",
        epilog="example: medimg evaluate runs/quickstart_seg/model --by site --by manufacturer",
    )
    p.add_argument("model", help="model folder, MLflow run id (runs:/<id>), or .ckpt")
    p.add_argument("--manifest", default=None, help="manifest CSV of labelled cases (default: the run's)")
    p.add_argument(
        "--split", default="test", help="which split of the manifest to score ('all' for every row)"
    )
    p.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="COLUMN",
        help="manifest metadata column for a subgroup analysis (repeatable), e.g. --by site",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="MODEL2",
        help="second model (or a per_case.csv) scored on the same cases for a paired comparison",
    )
    p.add_argument("--out", default=None, help="output folder (default: <run outputs>/evaluation)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (for run ids and logging)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--no-log", action="store_true", help="do not log the outputs to MLflow")
    add_json_flag(p)
    return p


def _history(run_id: str, uri: str):
    import mlflow
    import pandas as pd

    client = mlflow.MlflowClient(uri)
    step_to_epoch = {m.step: int(m.value) for m in client.get_metric_history(run_id, "epoch")}
    rows: dict[int, dict[str, float]] = {}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith(("train_", "val_")):
            for m in client.get_metric_history(run_id, key):
                ep = step_to_epoch.get(m.step)
                if ep is not None:
                    rows.setdefault(ep, {"epoch": ep})[key] = m.value
    return pd.DataFrame(sorted(rows.values(), key=lambda r: r["epoch"])) if rows else None


def _run_info(model_ref: str, tracking_uri: str | None):
    """(run_id, tracking_uri, outputs dir) of a model reference, as far as they are known."""
    import json
    from pathlib import Path

    p = Path(model_ref)
    if p.is_dir() and (p.parent / "run.json").is_file():
        info = json.loads((p.parent / "run.json").read_text())
        return info["run_id"], tracking_uri or info["tracking_uri"], p.parent
    return None, tracking_uri, None


def execute(args: argparse.Namespace) -> int:
    from pathlib import Path

    import mlflow

    from medimg.data.manifest import read_manifest
    from medimg.errors import ConfigError, DataError
    from medimg.evaluation.report import evaluate_study
    from medimg.evaluation.undefined import format_estimate
    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor
    from medimg.inference.score import score_cases
    from medimg.io.csvsafe import read_csv_unescaped

    tm = load_trained(args.model, tracking_uri=args.tracking_uri)
    wf = tm.workflow
    run_id, uri, out_root = _run_info(args.model, args.tracking_uri)
    run_id = run_id or tm.run_id
    uri = uri or (mlflow.get_tracking_uri() if run_id else None)
    manifest = args.manifest
    if manifest is None:
        if out_root is not None and (out_root / "manifest.csv").is_file():
            manifest = str(out_root / "manifest.csv")
        elif run_id:
            manifest = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="data/manifest.csv", tracking_uri=uri
            )
        else:
            raise ConfigError(
                "--manifest is required when MODEL carries no run (a manifest CSV of labelled cases)"
            )
    data_cfg = wf.data.model_copy(update={"manifest": manifest, "root": None, "synthetic": None})
    df = read_manifest(data_cfg, wf.task)
    if args.split != "all":
        if "split" not in df:
            raise DataError(f"{manifest}: no 'split' column; use --split all to score every row")
        df = df[df["split"] == args.split]
        if df.empty:
            raise DataError(f"{manifest}: no case in split {args.split!r}")
    for col in args.by:
        if col not in df:
            raise DataError(f"{manifest}: --by {col!r} is not a column; columns are {list(df.columns)}")
    per_case = score_cases(Predictor(tm.model, wf), df)
    compare = None
    if args.compare:
        if args.compare.endswith(".csv"):
            compare = read_csv_unescaped(args.compare)
        else:
            other = load_trained(args.compare, tracking_uri=args.tracking_uri)
            compare = score_cases(Predictor(other.model, other.workflow), df)
    out = Path(args.out) if args.out else (out_root or Path("runs") / wf.name) / "evaluation"
    history = _history(run_id, uri) if run_id and uri else None
    ok = per_case[per_case["error"].isna()] if "error" in per_case else per_case
    res = evaluate_study(
        ok,
        wf.task,
        out,
        by=args.by,
        compare=compare,
        history=history,
        seed=wf.seed,
        n_boot=args.n_boot,
        title=f"{wf.name}: evaluation ({args.split} split)",
    )
    if run_id and uri and not args.no_log:
        _log_to_mlflow(mlflow.MlflowClient(uri), run_id, res)
    metrics = {
        k: m for k, m in res.summary.get("metrics", {}).items() if isinstance(m, dict) and "estimate" in m
    }
    document = {"evaluated": len(ok), "cases": len(per_case), "report_html": str(res.report_html),
                "summary_json": str(res.summary_json), "metrics": metrics}  # fmt: skip
    lines = [f"evaluated {len(ok)} of {len(per_case)} cases -> {res.report_html}"]
    emit(args, document, lines + [f"  {name:24s} {format_estimate(m)}" for name, m in metrics.items()])
    return 1 if len(ok) < len(per_case) else 0


def _log_to_mlflow(client, run_id: str, res) -> None:
    """Artifacts, the defined cohort metrics (``eval_*``), and a tag saying why each undefined one is missing."""
    from medimg.evaluation.summary import flat_metrics
    from medimg.evaluation.undefined import undefined_tags

    for path in res.artifacts:
        client.log_artifact(run_id, str(path), "evaluation/report")
    for key, value in flat_metrics(res.summary).items():
        client.log_metric(run_id, key, value)
    for key, reason in undefined_tags(res.summary).items():
        client.set_tag(run_id, key, reason)
