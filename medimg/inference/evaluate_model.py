"""Evaluation of a trained model as ``medimg evaluate`` runs it: score, summarise, report, log to MLflow.

The cases come from a manifest (default: the one the run was trained with, its test split); the
per-case table, patient-level bootstrap CIs, subgroups, a paired comparison and the HTML report are
written by :func:`medimg.evaluation.report.evaluate_study` and logged to the model's MLflow run.

Example::

    from medimg.inference.evaluate_model import evaluate_model
    document, lines, code = evaluate_model("runs/quickstart_seg/model", by=["site"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def metric_history(run_id: str, uri: str):
    """The run's ``train_*``/``val_*`` metrics per epoch (a DataFrame), or None when it logged none."""
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


def run_info(model_ref: str, tracking_uri: str | None):
    """(run_id, tracking_uri, outputs dir) of a model reference, as far as they are known."""
    import json

    p = Path(model_ref)
    if p.is_dir() and (p.parent / "run.json").is_file():
        info = json.loads((p.parent / "run.json").read_text())
        return info["run_id"], tracking_uri or info["tracking_uri"], p.parent
    return None, tracking_uri, None


def evaluate_model(
    model: str,
    *,
    manifest: str | None = None,
    split: str = "test",
    by: Sequence[str] = (),
    compare: str | None = None,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    n_boot: int = 1000,
    log: bool = True,
) -> tuple[dict[str, Any], list[str], int]:
    """Score ``model`` on the labelled cases of a manifest; write and log the evaluation.

    ``model`` may be the output folder or the parent MLflow run of a ``--folds`` study: its members
    are scored as an ensemble (:mod:`medimg.inference.ensemble`) on the test split they share, and
    the evaluation is logged to the parent run with every member named.

    Returns the result document, its text lines and the exit code (1 when some cases could not be scored).
    """
    import mlflow

    from medimg.evaluation.report import evaluate_study
    from medimg.inference.ensemble import load_ensemble, make_predictor
    from medimg.inference.score import score_cases

    tm = load_ensemble([model], tracking_uri=tracking_uri)
    wf, several = tm.workflow, len(tm.members) > 1
    run_id, uri, out_root = run_info(tm.members[0].source if several else model, tracking_uri)
    run_id = run_id or tm.members[0].run_id
    uri = uri or (mlflow.get_tracking_uri() if run_id else None)
    if manifest is None:
        manifest = _default_manifest(out_root, run_id, uri)
    df = _select_cases(wf, manifest, split, by)
    per_case = score_cases(make_predictor(tm), df)
    compared = _compared_scores(compare, df, tracking_uri) if compare else None
    if several:  # the ensemble's own folder and run: the study's, not its first member's
        out_root = Path(model) if Path(model).is_dir() else None
        run_id = tm.parent_run_id or _parent_run(run_id, uri)
    out = Path(out) if out else (out_root or Path("runs") / wf.name) / "evaluation"
    history = metric_history(run_id, uri) if run_id and uri and not several else None
    ok = per_case[per_case["error"].isna()] if "error" in per_case else per_case
    res = evaluate_study(
        ok,
        wf.task,
        out,
        by=list(by),
        compare=compared,
        history=history,
        seed=wf.seed,
        n_boot=n_boot,
        title=f"{wf.name}: evaluation ({split} split)",
    )
    if run_id and uri and log:
        log_evaluation(mlflow.MlflowClient(uri), run_id, res)
    document, lines = _summary(res, ok, per_case)
    if several:
        document["ensemble"] = _log_members(tm, out, run_id if log else None, uri)
        lines.append(f"ensemble of {len(tm.members)} models: {out / 'ensemble.json'}")
    return document, lines, 1 if len(ok) < len(per_case) else 0


def _parent_run(run_id: str | None, uri: str | None) -> str | None:
    """The parent run of ``run_id`` (a ``--folds`` child), or None."""
    import mlflow

    if not run_id or not uri:
        return None
    return mlflow.MlflowClient(uri).get_run(run_id).data.tags.get("mlflow.parentRunId")


def _log_members(ens: Any, out: Path, run_id: str | None, uri: str | None) -> list[dict[str, Any]]:
    """``ensemble.json`` (every member's source, run, weights hash) in ``out``; logged and tagged in the run."""
    import json

    import mlflow

    from medimg.io.atomic import atomic_write_text

    members = ens.records()
    doc = {"weights_sha256": ens.weights_sha256, "parent_run_id": run_id, "members": members}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ensemble.json", json.dumps(doc, indent=2) + "\n")
    if run_id and uri:
        client = mlflow.MlflowClient(uri)
        client.log_artifact(run_id, str(out / "ensemble.json"), "evaluation")
        client.set_tag(
            run_id, "medimg.ensemble_members", ",".join(m["run_id"] or m["source"] for m in members)
        )
        client.set_tag(run_id, "medimg.ensemble_weights_sha256", ens.weights_sha256)
    return members


def _default_manifest(out_root: Path | None, run_id: str | None, uri: str | None) -> str:
    """The manifest the run was trained with: beside the model folder, else the run's artifact."""
    import mlflow

    from medimg.errors import ConfigError

    if out_root is not None and (out_root / "manifest.csv").is_file():
        return str(out_root / "manifest.csv")
    if run_id:
        return mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="data/manifest.csv", tracking_uri=uri
        )
    raise ConfigError("--manifest is required when MODEL carries no run (a manifest CSV of labelled cases)")


def _select_cases(wf: Any, manifest: str, split: str, by: Sequence[str]):
    """The manifest's rows of ``split`` (every row for ``all``); each ``by`` column must exist."""
    from medimg.data.manifest import read_manifest
    from medimg.errors import DataError

    data_cfg = wf.data.model_copy(update={"manifest": manifest, "root": None, "synthetic": None})
    df = read_manifest(data_cfg, wf.task)
    if split != "all":
        if "split" not in df:
            raise DataError(f"{manifest}: no 'split' column; use --split all to score every row")
        df = df[df["split"] == split]
        if df.empty:
            raise DataError(f"{manifest}: no case in split {split!r}")
    for col in by:
        if col not in df:
            raise DataError(f"{manifest}: --by {col!r} is not a column; columns are {list(df.columns)}")
    return df


def _compared_scores(compare: str, df: Any, tracking_uri: str | None):
    """Per-case scores to compare with: a CSV as it is, or another model scored on the same cases."""
    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor
    from medimg.inference.score import score_cases
    from medimg.io.csvsafe import read_csv_unescaped

    if compare.endswith(".csv"):
        return read_csv_unescaped(compare)
    other = load_trained(compare, tracking_uri=tracking_uri)
    return score_cases(Predictor(other.model, other.workflow, postprocessing=other.postprocessing), df)


def _summary(res: Any, ok: Any, per_case: Any) -> tuple[dict[str, Any], list[str]]:
    """The result document (with the cohort metrics that have an estimate) and its text lines."""
    from medimg.evaluation.undefined import format_estimate

    metrics = {
        k: m for k, m in res.summary.get("metrics", {}).items() if isinstance(m, dict) and "estimate" in m
    }
    document = {"evaluated": len(ok), "cases": len(per_case), "report_html": str(res.report_html),
                "summary_json": str(res.summary_json), "metrics": metrics}  # fmt: skip
    lines = [f"evaluated {len(ok)} of {len(per_case)} cases -> {res.report_html}"]
    lines += [f"  {name:24s} {format_estimate(m)}" for name, m in metrics.items()]
    return document, lines


def log_evaluation(client, run_id: str, res) -> None:
    """Artifacts, the defined cohort metrics (``eval_*``), and a tag saying why each undefined one is missing."""
    from medimg.evaluation.summary import flat_metrics
    from medimg.evaluation.undefined import undefined_tags

    for path in res.artifacts:
        client.log_artifact(run_id, str(path), "evaluation/report")
    for key, value in flat_metrics(res.summary).items():
        client.log_metric(run_id, key, value)
    for key, reason in undefined_tags(res.summary).items():
        client.set_tag(run_id, key, reason)
