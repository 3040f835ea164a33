"""The study evaluation: per-case table in; per-case CSV, summary JSON, plots and HTML report out.

:func:`evaluate_study` is what ``medimg evaluate`` calls. It never takes a cohort down
for one bad case: failed cases (an ``error`` text) are left out and listed by key, NaN
metrics (empty masks) stay in the CSV with the reason in its ``undefined`` column, are
counted in the summary and are visible in the plots; an estimate no case defines is
reported as undefined with its reason (:mod:`medimg.evaluation.undefined`). Columns that look like identifying data (patient names, IDs, birth dates,
accession numbers) are dropped before anything is written; keys are expected to be
pseudonymous already.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.errors import DataError
from medimg.evaluation import cls_plots, plots
from medimg.evaluation.cls_metrics import probabilities_from_frame
from medimg.evaluation.compare import paired_comparison, seg_quality_columns
from medimg.evaluation.privacy import drop_identifying_columns
from medimg.evaluation.subgroups import subgroup_analysis
from medimg.evaluation.summary import (
    classification_summary,
    exclude_unscorable,
    json_safe,
    segmentation_summary,
)
from medimg.evaluation.undefined import annotate, per_case_notes
from medimg.io.atomic import atomic_write_text
from medimg.io.csvsafe import escape_frame

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """What :func:`evaluate_study` wrote, for logging to MLflow.

    Attributes:
        out_dir: Folder of the outputs.
        per_case_csv: Per-case metrics.
        summary_json: Cohort metrics with CIs, subgroups, comparison, flags.
        report_html: Self-contained HTML study report.
        plots: Plot name -> PNG path.
        summary: The content of ``summary.json``.

    Example:
        >>> for path in result.artifacts:  # doctest: +SKIP
        ...     mlflow_client.log_artifact(run_id, str(path), "evaluation")
    """

    out_dir: Path
    per_case_csv: Path
    summary_json: Path
    report_html: Path
    plots: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def artifacts(self) -> list[Path]:
        """Every written file (CSV, JSON, HTML, PNGs)."""
        return [self.per_case_csv, self.summary_json, self.report_html, *self.plots.values()]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def evaluate_study(
    per_case: pd.DataFrame,
    task: str,
    out_dir: Path,
    *,
    by: Sequence[str] = (),
    compare: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
    case_key: str = "case_key",
    patient_key: str | None = "patient_key",
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    min_patients: int = 10,
    title: str = "Study evaluation",
) -> StudyResult:
    """Evaluate a study and write ``per_case.csv``, ``summary.json``, PNG plots and ``report.html``.

    Args:
        per_case: One row per case: ``case_key``, ``patient_key``, metadata columns and,
            for segmentation, the columns of ``segmentation_case_metrics``; for
            classification ``label`` plus ``prob`` or ``prob_0..prob_{K-1}``.
        task: ``"segmentation"`` or ``"classification"``.
        out_dir: Output folder (created).
        by: Metadata columns for subgroup analyses.
        compare: Per-case table of a second run on the same cases (paired comparison,
            differences are this run minus ``compare``).
        history: Epoch-wise logged values for learning curves (``epoch`` + metric columns).
        case_key: Case column (pseudonymous).
        patient_key: Patient column, the bootstrap unit; ``None`` when every case is a
            different patient.
        seed: Seed of every bootstrap.
        n_boot: Bootstrap replicates.
        level: CI coverage.
        min_patients: Subgroups with fewer patients are flagged as too small to conclude.
        title: Report title (must not contain identifying data).

    Returns:
        :class:`StudyResult` with the paths and the summary dict.

    Raises:
        DataError: When required columns are missing or the task is unknown.

    Example:
        >>> res = evaluate_study(frame, "segmentation", Path("eval"), by=["site"])  # doctest: +SKIP
        >>> res.summary["metrics"]["dice_1"]["estimate"]  # doctest: +SKIP
        0.87
    """
    from medimg.evaluation.html_report import render_report

    if task not in ("segmentation", "classification"):
        raise DataError(f"task must be 'segmentation' or 'classification'; got '{task}'")
    if per_case.empty:
        raise DataError("per-case table is empty; nothing to evaluate")
    keys = [case_key] + ([patient_key] if patient_key else [])
    for key in keys:
        if key not in per_case.columns:
            raise DataError(f"per-case table has no '{key}' column; expected it next to the metrics")
    frame, dropped = drop_identifying_columns(per_case.reset_index(drop=True), keep=keys)
    for column in by:  # checked before anything is written
        if column not in frame.columns:
            why = "is identifying and never analysed" if column in dropped else "is not in the per-case table"
            raise DataError(
                f"subgroup column '{column}' {why}; columns are {sorted(map(str, frame.columns))}"
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame, excluded = exclude_unscorable(frame, task, case_key)
    opts = {"patient_key": patient_key, "n_boot": n_boot, "seed": seed, "level": level}
    body = (segmentation_summary if task == "segmentation" else classification_summary)(frame, **opts)
    annotate(body["metrics"], frame, task)
    summary: dict[str, Any] = {
        "title": title,
        "task": task,
        "n_cases": len(frame),
        "n_patients": int(frame[patient_key].nunique()) if patient_key else len(frame),
        "bootstrap": {
            "unit": "patient" if patient_key else "case",
            "n_boot": n_boot,
            "seed": seed,
            "level": level,
            "interval": "percentile",
        },  # fmt: skip
        "dropped_columns": dropped,
        "excluded_cases": excluded,
        **body,
        "subgroups": {},
        "comparison": None,
        "flags": [],
    }
    plot_paths: dict[str, Path] = {}
    if task == "segmentation":
        quality = seg_quality_columns(frame)
        plot_paths["distributions"] = plots.plot_case_distributions(
            frame, quality, out_dir / "distributions.png"
        )
        primary = [c for c in quality if c.startswith(("dice_", "nsd_", "hd95_"))]
    else:
        y, prob = probabilities_from_frame(frame)
        t = body["threshold"]
        plot_paths["roc"] = cls_plots.plot_roc(y, prob, out_dir / "roc.png", threshold=t)
        plot_paths["pr"] = cls_plots.plot_pr(y, prob, out_dir / "pr.png")
        plot_paths["calibration"] = cls_plots.plot_calibration(y, prob, out_dir / "calibration.png")
        plot_paths["distributions"] = cls_plots.plot_probability_distributions(
            y, prob, out_dir / "distributions.png"
        )
        frame = frame.assign(
            squared_error=(prob - y) ** 2
            if prob.ndim == 1
            else np.sum((prob - np.eye(prob.shape[1])[y]) ** 2, axis=1)
        )
        if t is not None:
            frame = frame.assign(called_positive=(prob >= t).astype(int))
        primary = (
            ["auroc", "sensitivity", "specificity"]
            if prob.ndim == 1
            else ["auroc_macro", "balanced_accuracy"]
        )
    if history is not None and not history.empty:
        plot_paths["learning_curves"] = plots.plot_learning_curves(history, out_dir / "learning_curves.png")
    for column in by:
        result = subgroup_analysis(frame, column, task, patient_key=patient_key, n_boot=n_boot, seed=seed, level=level,
                                   min_patients=min_patients, threshold=body.get("threshold"))  # fmt: skip
        summary["subgroups"][column] = result
        for metric, gap in result["gaps"].items():
            if gap.get("flagged"):
                summary["flags"].append(
                    f"{metric}: group '{gap['worse_group']}' of '{column}' is worse; largest gap "
                    f"{gap['gap']['estimate']:.3g} ({level:.0%} CI {gap['gap']['low']:.3g} to {gap['gap']['high']:.3g})"
                )
        for metric in primary:
            if metric in result["gaps"]:
                name = f"forest_{_safe_name(column)}_{_safe_name(metric)}"
                plot_paths[name] = plots.plot_forest(
                    result, metric, out_dir / f"{name}.png", summary["metrics"].get(metric)
                )
    if compare is not None:
        compare_frame, _ = drop_identifying_columns(compare.reset_index(drop=True), keep=keys)
        compare_frame, _ = exclude_unscorable(compare_frame, task, case_key)
        comparison = paired_comparison(frame, compare_frame, task, case_key=case_key, patient_key=patient_key,
                                       n_boot=n_boot, seed=seed, level=level)  # fmt: skip
        summary["comparison"] = comparison
        if comparison["metrics"]:
            plot_paths["comparison"] = plots.plot_comparison(comparison, out_dir / "comparison.png")
        for metric, entry in comparison["metrics"].items():
            if entry["better"] != "no difference shown":
                d = entry["difference"]
                p_value = entry["p_value"]
                p_text = f", {entry['test'].split(',')[0]} p={p_value:.2g}" if math.isfinite(p_value) else ""
                summary["flags"].append(
                    f"compare: {metric} differs (run - compare {d['estimate']:.3g}, {level:.0%} CI {d['low']:.3g} to "
                    f"{d['high']:.3g}{p_text}); better: {entry['better']}"
                )
    if task == "segmentation":
        frame = frame.assign(undefined=per_case_notes(frame))
    per_case_csv = out_dir / "per_case.csv"
    atomic_write_text(per_case_csv, escape_frame(frame, ("image", "target")).to_csv(index=False))
    summary["files"] = {"per_case": per_case_csv.name, "plots": {k: p.name for k, p in plot_paths.items()}}
    summary = json_safe(summary)
    summary_json = atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False))
    report_html = atomic_write_text(out_dir / "report.html", render_report(summary, plot_paths))
    return StudyResult(out_dir, per_case_csv, summary_json, report_html, plot_paths, summary)
