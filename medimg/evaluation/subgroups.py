"""Subgroup (fairness) analysis: per-group metrics with CIs and the largest gap with its CI.

Any column of the per-case table works as a grouping (scanner manufacturer, site, sex,
age band...). Cases without a value form the group ``"(missing)"``, so none vanish.
For each metric, the largest gap is taken between the groups with the highest and the
lowest estimate among groups large enough to conclude; its CI comes from resampling
patients independently inside each of the two groups. A gap whose CI excludes zero is
*flagged*, and the worse of the two groups is named.

A group is *too small to conclude* when it has fewer than ``min_patients`` patients or,
for classification, fewer than ``min_events`` cases of a class. Its estimates are shown
with their (wide) CIs but it takes no part in the gap.

Classification metrics use one operating point for every group (the cohort's Youden
threshold unless one is given), so sensitivity and specificity are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medimg.errors import DataError
from medimg.evaluation.bootstrap import (
    Resampling,
    bootstrap_mean_replicates,
    bootstrap_replicates,
    percentile_interval,
)
from medimg.evaluation.cls_metrics import classification_metrics, probabilities_from_frame
from medimg.evaluation.compare import CLS_COMPARED, higher_is_better, seg_quality_columns
from medimg.evaluation.undefined import annotate
from medimg.tasks import get_task

MISSING_GROUP = "(missing)"


def group_labels(
    frame: pd.DataFrame, by: str, max_groups: int = 8
) -> tuple[pd.Series, list[str], str | None]:
    """Group name of every case, the groups in display order, and the binning used (if any).

    A numeric column with more than ``max_groups`` distinct values (age, BMI...) is cut
    into quartiles, named by their value ranges; anything else is used as it is.

    Example:
        >>> df = pd.DataFrame({"age": range(20, 60)})
        >>> labels, order, binning = group_labels(df, "age")
        >>> order, binning
        (['20-29', '30-39', '40-49', '50-59'], 'quartiles')
    """
    if by not in frame.columns:
        raise DataError(
            f"subgroup column '{by}' is not in the per-case table; columns are {sorted(map(str, frame.columns))}"
        )
    column = frame[by]
    if (
        pd.api.types.is_numeric_dtype(column)
        and not pd.api.types.is_bool_dtype(column)
        and column.nunique() > max_groups
    ):
        bins = pd.qcut(column, 4, duplicates="drop")
        names = {
            iv: f"{_num(column[bins == iv].min())}-{_num(column[bins == iv].max())}"
            for iv in bins.cat.categories
        }
        labels = bins.astype(object).map(lambda iv: MISSING_GROUP if pd.isna(iv) else names[iv])
        order = [names[iv] for iv in bins.cat.categories] + ([MISSING_GROUP] if column.isna().any() else [])
        return labels, order, "quartiles"
    labels = column.map(lambda v: MISSING_GROUP if pd.isna(v) else str(v))
    return labels, sorted(labels.unique(), key=lambda g: (g == MISSING_GROUP, g)), None


def _num(value: float) -> str:
    return f"{value:g}"


def _replicates(
    frame: pd.DataFrame, task: str, metrics: Sequence[str], threshold: float | None, r: Resampling
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    if get_task(task).target == "mask":  # per-case overlap: the mean of each column
        return bootstrap_mean_replicates(frame, metrics, r)
    y_all, p_all = probabilities_from_frame(frame)
    rows = pd.DataFrame({"__row": np.arange(len(frame))})
    rows["__patient"] = frame[r.patient_key].to_numpy() if r.patient_key else np.arange(len(frame))

    def statistic(sub: pd.DataFrame) -> dict[str, float]:
        r = sub["__row"].to_numpy()
        values = classification_metrics(y_all[r], p_all[r], threshold)
        return {m: values.get(m, float("nan")) for m in metrics}

    return bootstrap_replicates(rows, statistic, r.by("__patient"))


def default_metrics(frame: pd.DataFrame, task: str) -> list[str]:
    """Metrics analysed per group: quality columns (segmentation) or cohort metrics (classification).

    Example:
        >>> default_metrics(pd.DataFrame({"label": [0, 1], "prob": [0.2, 0.7]}), "classification")[:2]
        ['auroc', 'auprc']
    """
    if get_task(task).target == "mask":
        return seg_quality_columns(frame)
    _, prob = probabilities_from_frame(frame)
    names = (
        ["auroc", "auprc", "sensitivity", "specificity", "balanced_accuracy", "brier", "ece"]
        if prob.ndim == 1
        else ["auroc_macro", "accuracy", "balanced_accuracy", "brier", "ece"]
    )
    return [n for n in names if n in CLS_COMPARED]


def subgroup_analysis(
    per_case: pd.DataFrame,
    by: str,
    task: str,
    *,
    metrics: Sequence[str] | None = None,
    threshold: float | None = None,
    resampling: Resampling | None = None,
    min_patients: int = 10,
    min_events: int = 5,
) -> dict[str, Any]:
    """Per-group metrics with bootstrap CIs and, per metric, the largest between-group gap.

    Args:
        per_case: Per-case table (segmentation metric columns, or ``label`` + ``prob``).
        by: Column to group by.
        task: ``"segmentation"`` or ``"classification"``.
        metrics: Metrics to analyse; default :func:`default_metrics`.
        threshold: Classification operating point for every group; default: cohort Youden.
        resampling: The patient column (bootstrap unit; ``None``: one case per patient), the
            replicates per group, the seed (group ``i`` draws from ``seed + 1 + i``) and the
            coverage (:class:`Resampling`'s defaults when ``None``).
        min_patients: Fewer patients than this makes a group too small to conclude.
        min_events: Classification: fewer cases of any class than this is too small.

    Returns:
        ``{"column", "threshold", "groups": [{"group", "n_cases", "n_patients", "too_small",
        "metrics": {name: Interval dict}}], "gaps": {name: {"highest_group", "lowest_group",
        "worse_group", "gap": Interval dict, "flagged"}}}``.

    Example:
        >>> df = pd.DataFrame({"patient_key": range(40), "site": ["A"] * 20 + ["B"] * 20,
        ...                    "dice_1": [0.9] * 20 + [0.6] * 20})
        >>> res = subgroup_analysis(df, "site", "segmentation", resampling=Resampling(n_boot=200))
        >>> res["gaps"]["dice_1"]["worse_group"], res["gaps"]["dice_1"]["flagged"]
        ('B', True)
    """
    get_task(task)  # a registered task, or ConfigError naming the known ones
    r = resampling or Resampling()
    groups, order, binning = group_labels(per_case, by)
    names = list(metrics) if metrics is not None else default_metrics(per_case, task)
    threshold = _cohort_threshold(per_case, task, threshold)
    out: dict[str, Any] = {"column": by, "binning": binning, "threshold": threshold, "groups": [], "gaps": {}}
    reps_of: dict[str, dict[str, np.ndarray]] = {}
    point_of: dict[str, dict[str, float]] = {}
    eligible: list[str] = []
    for i, value in enumerate(order):
        sub = per_case[groups.to_numpy() == value]
        row, point_of[value], reps_of[value] = _analyse_group(
            sub, value, task, names, threshold, r.reseeded(1 + i), (min_patients, min_events)
        )
        out["groups"].append(row)
        if not row["too_small"]:
            eligible.append(value)
    for m in names:
        out["gaps"][m] = _largest_gap(m, eligible, point_of, reps_of, r.level)
    return out


def _cohort_threshold(per_case: pd.DataFrame, task: str, threshold: float | None) -> float | None:
    """The operating point of every group: the one given, else the cohort's Youden threshold (binary)."""
    if get_task(task).target == "class" and threshold is None:
        y, prob = probabilities_from_frame(per_case)
        threshold = classification_metrics(y, prob).get("threshold") if prob.ndim == 1 else None
    return threshold


def _analyse_group(
    sub: pd.DataFrame,
    value: str,
    task: str,
    names: list[str],
    threshold: float | None,
    r: Resampling,
    minimum: tuple[int, int],
) -> tuple[dict[str, Any], dict[str, float], dict[str, np.ndarray]]:
    """One group's row (sizes, too-small flag, metric intervals) and its bootstrap point and replicates;
    ``minimum``: the fewest patients, and cases of each class, a group needs to conclude."""
    min_patients, min_events = minimum
    n_patients = sub[r.patient_key].nunique() if r.patient_key else len(sub)
    too_small = n_patients < min_patients
    if get_task(task).target == "class":  # every class needs enough cases
        y, prob = probabilities_from_frame(sub)
        n_classes = prob.shape[1] if prob.ndim == 2 else 2
        too_small = too_small or int(np.bincount(y.astype(int), minlength=n_classes).min()) < min_events
    point, reps = _replicates(sub, task, names, threshold, r)
    row = {
        "group": value,
        "n_cases": len(sub),
        "n_patients": int(n_patients),
        "too_small": bool(too_small),
        "metrics": annotate(
            {m: percentile_interval(point[m], reps[m], r.level).to_dict() for m in names}, sub, task
        ),
    }
    return row, point, reps


def _largest_gap(
    m: str,
    eligible: list[str],
    point_of: dict[str, dict[str, float]],
    reps_of: dict[str, dict[str, np.ndarray]],
    level: float,
) -> dict[str, Any]:
    """The gap of metric ``m`` between the highest and lowest groups large enough to conclude."""
    candidates = [g for g in eligible if np.isfinite(point_of[g][m])]
    if len(candidates) < 2:
        why = "fewer than two groups large enough to conclude"
        if len(candidates) < len(eligible):
            why += f" with a defined value ({len(eligible) - len(candidates)} undefined)"
        return {"flagged": False, "reason": why}
    high = max(candidates, key=lambda g: point_of[g][m])
    low = min(candidates, key=lambda g: point_of[g][m])
    gap = percentile_interval(point_of[high][m] - point_of[low][m], reps_of[high][m] - reps_of[low][m], level)
    return {
        "highest_group": high,
        "lowest_group": low,
        "worse_group": low if higher_is_better(m) else high,
        "gap": gap.to_dict(),
        "flagged": gap.excludes(0.0),
    }
