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
from medimg.evaluation.bootstrap import Resampling
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
from medimg.tasks import get_task

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
    resampling = Resampling(patient_key, n_boot, seed, level)
    study = _Study(task, Path(out_dir), by, case_key, resampling, min_patients, title)
    frame, dropped = study.checked_frame(per_case)
    study.out_dir.mkdir(parents=True, exist_ok=True)
    frame, summary, plot_paths = study.analyse(frame, dropped, history, compare)
    return study.write(frame, summary, plot_paths)


@dataclass(frozen=True)
class _Study:
    """The settings of one :func:`evaluate_study` call, and its steps."""

    task: str
    out_dir: Path
    by: Sequence[str]
    case_key: str
    resampling: Resampling
    min_patients: int
    title: str

    @property
    def patient_key(self) -> str | None:
        """The patient column, the bootstrap unit (``None``: every case its own patient)."""
        return self.resampling.patient_key

    @property
    def keys(self) -> list[str]:
        """The case column and, when there is one, the patient column."""
        return [self.case_key] + ([self.patient_key] if self.patient_key else [])

    def checked_frame(self, per_case: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """The per-case table without identifying columns (and their names), checked before any write."""
        get_task(self.task)  # a registered task, or ConfigError naming the known ones
        if per_case.empty:
            raise DataError("per-case table is empty; nothing to evaluate")
        for key in self.keys:
            if key not in per_case.columns:
                raise DataError(f"per-case table has no '{key}' column; expected it next to the metrics")
        frame, dropped = drop_identifying_columns(per_case.reset_index(drop=True), keep=self.keys)
        for column in self.by:  # checked before anything is written
            if column not in frame.columns:
                why = (
                    "is identifying and never analysed"
                    if column in dropped
                    else "is not in the per-case table"
                )
                raise DataError(
                    f"subgroup column '{column}' {why}; columns are {sorted(map(str, frame.columns))}"
                )
        return frame, dropped

    def analyse(
        self,
        frame: pd.DataFrame,
        dropped: list[str],
        history: pd.DataFrame | None,
        compare: pd.DataFrame | None,
    ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Path]]:
        """Cohort metrics, plots, subgroups and the comparison: the frame, summary and plots."""
        frame, excluded = exclude_unscorable(frame, self.task, self.case_key)
        masks = get_task(self.task).target == "mask"  # scored by overlap, else by discrimination
        body = (segmentation_summary if masks else classification_summary)(frame, self.resampling)
        annotate(body["metrics"], frame, self.task)
        summary = self.summary_head(frame, dropped, excluded, body)
        if masks:
            frame, plot_paths, primary = self.segmentation_plots(frame)
        else:
            frame, plot_paths, primary = self.classification_plots(frame, body["threshold"])
        if history is not None and not history.empty:
            plot_paths["learning_curves"] = plots.plot_learning_curves(
                history, self.out_dir / "learning_curves.png"
            )
        for column in self.by:
            self.add_subgroups(frame, column, body, summary, plot_paths, primary)
        if compare is not None:
            self.add_comparison(frame, compare, summary, plot_paths)
        return frame, summary, plot_paths

    def summary_head(
        self, frame: pd.DataFrame, dropped: list[str], excluded: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The summary before subgroups, comparison and flags are filled in."""
        patient_key = self.patient_key
        return {
            "title": self.title,
            "task": self.task,
            "n_cases": len(frame),
            "n_patients": int(frame[patient_key].nunique()) if patient_key else len(frame),
            "bootstrap": {
                "unit": "patient" if patient_key else "case",
                "n_boot": self.resampling.n_boot,
                "seed": self.resampling.seed,
                "level": self.resampling.level,
                "interval": "percentile",
            },  # fmt: skip
            "dropped_columns": dropped,
            "excluded_cases": excluded,
            **body,
            "subgroups": {},
            "comparison": None,
            "flags": [],
        }

    def segmentation_plots(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Path], list[str]]:
        """Distribution plot of the quality columns; the primary metrics are Dice, NSD and HD95."""
        quality = seg_quality_columns(frame)
        plot_paths = {
            "distributions": plots.plot_case_distributions(frame, quality, self.out_dir / "distributions.png")
        }
        primary = [c for c in quality if c.startswith(("dice_", "nsd_", "hd95_"))]
        return frame, plot_paths, primary

    def classification_plots(
        self, frame: pd.DataFrame, t: float | None
    ) -> tuple[pd.DataFrame, dict[str, Path], list[str]]:
        """ROC, PR, calibration and distribution plots; per-case squared error and call at ``t``."""
        out_dir = self.out_dir
        y, prob = probabilities_from_frame(frame)
        plot_paths: dict[str, Path] = {}
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
        return frame, plot_paths, primary

    def add_subgroups(
        self,
        frame: pd.DataFrame,
        column: str,
        body: dict[str, Any],
        summary: dict[str, Any],
        plot_paths: dict[str, Path],
        primary: list[str],
    ) -> None:
        """Subgroup analysis of one column: its result, its flagged gaps and forest plots."""
        level = self.resampling.level
        result = subgroup_analysis(frame, column, self.task, threshold=body.get("threshold"),
                                   resampling=self.resampling, min_patients=self.min_patients)  # fmt: skip
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
                    result, metric, self.out_dir / f"{name}.png", summary["metrics"].get(metric)
                )

    def add_comparison(
        self,
        frame: pd.DataFrame,
        compare: pd.DataFrame,
        summary: dict[str, Any],
        plot_paths: dict[str, Path],
    ) -> None:
        """Paired comparison with a second run: its result, its plot and a flag per differing metric."""
        level = self.resampling.level
        compare_frame, _ = drop_identifying_columns(compare.reset_index(drop=True), keep=self.keys)
        compare_frame, _ = exclude_unscorable(compare_frame, self.task, self.case_key)
        comparison = paired_comparison(
            frame, compare_frame, self.task, case_key=self.case_key, resampling=self.resampling
        )
        summary["comparison"] = comparison
        if comparison["metrics"]:
            plot_paths["comparison"] = plots.plot_comparison(comparison, self.out_dir / "comparison.png")
        for metric, entry in comparison["metrics"].items():
            if entry["better"] != "no difference shown":
                d = entry["difference"]
                p_value = entry["p_value"]
                p_text = f", {entry['test'].split(',')[0]} p={p_value:.2g}" if math.isfinite(p_value) else ""
                summary["flags"].append(
                    f"compare: {metric} differs (run - compare {d['estimate']:.3g}, {level:.0%} CI {d['low']:.3g} to "
                    f"{d['high']:.3g}{p_text}); better: {entry['better']}"
                )

    def write(self, frame: pd.DataFrame, summary: dict[str, Any], plot_paths: dict[str, Path]) -> StudyResult:
        """Write ``per_case.csv``, ``summary.json`` and ``report.html``."""
        from medimg.evaluation.html_report import render_report

        out_dir = self.out_dir
        if get_task(self.task).target == "mask":
            frame = frame.assign(undefined=per_case_notes(frame))
        per_case_csv = out_dir / "per_case.csv"
        atomic_write_text(per_case_csv, escape_frame(frame, ("image", "target")).to_csv(index=False))
        summary["files"] = {
            "per_case": per_case_csv.name,
            "plots": {k: p.name for k, p in plot_paths.items()},
        }
        summary = json_safe(summary)
        summary_json = atomic_write_text(
            out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False)
        )
        report_html = atomic_write_text(out_dir / "report.html", render_report(summary, plot_paths))
        return StudyResult(out_dir, per_case_csv, summary_json, report_html, plot_paths, summary)
