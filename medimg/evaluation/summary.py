"""Cohort summaries of a per-case table: what ``summary.json`` holds about the metrics.

* Segmentation: for every metric column, the mean with its patient-bootstrap CI
  (NaNs skipped and counted in ``n_nan``), the median and the quartiles; per label,
  the number of cases with an empty reference, an empty prediction, or both.
* Classification: every metric of :func:`classification_metrics` with its CI at the
  cohort's operating point (fixed across resamples), and the counts (confusion matrix).

Cases that could not be scored are left out *by key*, never silently: rows with an
``error`` text (a failed prediction) and, for classification, rows without a label or
probability. A failed segmentation case is not an empty mask and must not be counted
as one.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.errors import DataError
from medimg.evaluation.bootstrap import Resampling, bootstrap_ci, bootstrap_replicates, percentile_interval
from medimg.evaluation.cls_metrics import classification_metrics, probabilities_from_frame
from medimg.evaluation.seg_metrics import METRIC_PREFIXES
from medimg.tasks import get_task

log = logging.getLogger(__name__)

SEG_COLUMN = re.compile(rf"({'|'.join(p for p in METRIC_PREFIXES if not p.startswith('empty'))})_(.+)")
COUNT_KEYS = re.compile(r"(n|n_pos|n_neg|n_classes|tp|fp|tn|fn|threshold|n_\d+|cm_\d+_\d+)")


def exclude_unscorable(
    frame: pd.DataFrame, task: str, case_key: str
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Rows that cannot be scored, left out and listed by case key and reason.

    Example:
        >>> df = pd.DataFrame({"case_key": ["a", "b"], "dice_1": [0.9, None], "error": [None, "IOError"]})
        >>> kept, excluded = exclude_unscorable(df, "segmentation", "case_key")
        >>> len(kept), excluded
        (1, {'failed': ['b']})
    """
    reasons: dict[str, pd.Series] = {}
    if "error" in frame.columns:
        reasons["failed"] = frame["error"].notna() & (frame["error"].astype(str).str.strip() != "")
    if get_task(task).target == "class":
        columns = [c for c in frame.columns if c in ("label", "prob") or re.fullmatch(r"prob_\d+", str(c))]
        missing = frame[columns].isna().any(axis=1)
        reasons["no label or probability"] = missing & ~reasons.get(
            "failed", pd.Series(False, index=frame.index)
        )
    bad = pd.Series(False, index=frame.index)
    excluded: dict[str, list[str]] = {}
    for reason, mask in reasons.items():
        if mask.any():
            excluded[reason] = [str(k) for k in frame.loc[mask, case_key]]
            log.warning(
                "%d case(s) left out (%s): %s", int(mask.sum()), reason, ", ".join(excluded[reason][:20])
            )
        bad |= mask
    if bad.all():
        raise DataError(
            f"none of the {len(frame)} cases can be scored ({', '.join(excluded)}); nothing to evaluate"
        )
    return frame.loc[~bad].reset_index(drop=True), excluded


def segmentation_summary(frame: pd.DataFrame, resampling: Resampling) -> dict[str, Any]:
    """``{"metrics": {column: CI + n, n_nan, median, q1, q3}, "labels", "empty_cases"}``.

    Example:
        >>> df = pd.DataFrame({"patient_key": [1, 2], "dice_1": [0.9, 0.0], "hd95_1": [2.0, np.nan],
        ...                    "empty_ref_1": [0.0, 0.0], "empty_pred_1": [0.0, 1.0]})
        >>> s = segmentation_summary(df, Resampling(n_boot=20))
        >>> s["metrics"]["hd95_1"]["n_nan"], s["empty_cases"]["1"]["prediction_empty_only"]
        (1, 1)
    """
    columns = [str(c) for c in frame.columns if SEG_COLUMN.fullmatch(str(c))]
    if not columns:
        raise DataError(
            f"per-case table has no segmentation metric columns (expected e.g. 'dice_1'); got {list(frame.columns)}"
        )
    cis = bootstrap_ci(frame, columns, resampling)
    metrics = {}
    for c in columns:
        values = frame[c].to_numpy(float)
        finite = values[np.isfinite(values)]
        q1, median, q3 = np.percentile(finite, [25, 50, 75]) if finite.size else (np.nan,) * 3
        metrics[c] = {**cis[c].to_dict(), "n": int(finite.size), "n_nan": int(values.size - finite.size),
                      "median": median, "q1": q1, "q3": q3}  # fmt: skip
    labels = sorted({str(c)[len("empty_ref_") :] for c in frame.columns if str(c).startswith("empty_ref_")})
    empties = {}
    for label in labels:
        ref = frame[f"empty_ref_{label}"].fillna(0).astype(bool)
        pred = frame.get(f"empty_pred_{label}", pd.Series(0.0, index=frame.index)).fillna(0).astype(bool)
        empties[label] = {"both_empty": int((ref & pred).sum()), "reference_empty_only": int((ref & ~pred).sum()),
                          "prediction_empty_only": int((~ref & pred).sum())}  # fmt: skip
    return {"metrics": metrics, "labels": labels, "empty_cases": empties}


def classification_summary(frame: pd.DataFrame, resampling: Resampling) -> dict[str, Any]:
    """``{"metrics": {name: CI}, "counts": {n, tp, ..., cm_i_j}, "threshold"}``.

    Example:
        >>> df = pd.DataFrame({"label": [0, 0, 1, 1], "prob": [0.1, 0.3, 0.6, 0.9]})
        >>> s = classification_summary(df, Resampling(None, n_boot=20))
        >>> s["metrics"]["auroc"]["estimate"], s["counts"]["tp"], s["threshold"]
        (1.0, 2.0, 0.6)
    """
    y, prob = probabilities_from_frame(frame)
    full = classification_metrics(y, prob)
    threshold = full.get("threshold") if prob.ndim == 1 else None
    rows = pd.DataFrame({"__row": np.arange(len(frame))})
    patient_key = resampling.patient_key
    rows["__patient"] = frame[patient_key].to_numpy() if patient_key else np.arange(len(frame))

    def statistic(sub: pd.DataFrame) -> dict[str, float]:
        r = sub["__row"].to_numpy()
        return classification_metrics(y[r], prob[r], threshold)

    point, reps = bootstrap_replicates(rows, statistic, resampling.by("__patient"))
    return {
        "metrics": {
            k: percentile_interval(v, reps[k], resampling.level).to_dict()
            for k, v in point.items()
            if not COUNT_KEYS.fullmatch(k)
        },
        "counts": {k: v for k, v in point.items() if COUNT_KEYS.fullmatch(k)},
        "threshold": threshold,
    }


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as ``None``, numpy scalars as Python ones, paths as file names.

    Example:
        >>> json_safe({"a": float("nan"), "b": np.int64(3), "c": [np.float32(0.5)]})
        {'a': None, 'b': 3, 'c': [0.5]}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return value.name
    return value


def flat_metrics(summary: dict[str, Any], prefix: str = "eval_") -> dict[str, float]:
    """Cohort estimates and CI bounds as flat finite floats, ready for ``mlflow.log_metrics``.

    Keys are ``<prefix><metric>``, ``<prefix><metric>_ci_low`` and ``<prefix><metric>_ci_high``;
    undefined values are left out (MLflow rejects NaN).

    Example:
        >>> flat_metrics({"metrics": {"dice_1": {"estimate": 0.8, "low": 0.7, "high": None}}})
        {'eval_dice_1': 0.8, 'eval_dice_1_ci_low': 0.7}
    """
    out: dict[str, float] = {}
    for name, entry in summary.get("metrics", {}).items():
        for key, suffix in (("estimate", ""), ("low", "_ci_low"), ("high", "_ci_high")):
            value = entry.get(key)
            if value is not None and math.isfinite(float(value)):
                out[f"{prefix}{name}{suffix}"] = float(value)
    return out
