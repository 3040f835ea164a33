"""Metrics that have no value, and why: reported as *undefined* with a reason, never as a number.

Conventions (as nnU-Net for overlaps; distances undefined where there is no surface):

* Dice, IoU and NSD are 1 when prediction and reference are both empty and 0 when
  exactly one is empty;
* HD95 and ASSD are undefined when either mask is empty (both empty included: there is
  no surface to measure from or to); RVD is undefined when the reference is empty;
* AUROC, AUPRC, sensitivity, specificity... are undefined when the cases hold one
  class only (e.g. a subgroup without positives).

A per-case undefined value is NaN in the tables, with the reason in the per-case
CSV's ``undefined`` column; a cohort or subgroup estimate no case defines is ``null``
in ``summary.json`` with an ``undefined`` reason next to it, printed ``undefined``
by ``medimg evaluate`` and in the HTML report, and not logged as an MLflow metric
(a ``medimg.undefined.<metric>`` tag says why).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from medimg.tasks import get_task

UNDEFINED = "undefined"
_SEG = re.compile(r"(hd95|assd|rvd|dice|iou|nsd|vol_ref_ml|vol_pred_ml|avd_ml)_(.+)")


def is_undefined(value: Any) -> bool:
    """True for None and NaN/inf (what an undefined metric is stored as)."""
    return value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(float(value)))


def seg_case_reason(metric: str, empty_ref: bool, empty_pred: bool) -> str | None:
    """Why one case's segmentation metric (``hd95``, ``assd``, ``rvd``...) is undefined, or None.

    Example:
        >>> seg_case_reason("hd95", empty_ref=False, empty_pred=True)
        'prediction empty'
        >>> seg_case_reason("dice", empty_ref=True, empty_pred=True) is None
        True
    """
    if metric in ("hd95", "assd") and (empty_ref or empty_pred):
        if empty_ref and empty_pred:
            return "both masks empty"
        return "prediction empty" if empty_pred else "reference empty"
    if metric == "rvd" and empty_ref:
        return "reference empty"
    return None


def _flags(row: Mapping[str, Any], label: str) -> tuple[bool, bool]:
    ref, pred = row.get(f"empty_ref_{label}"), row.get(f"empty_pred_{label}")
    return bool(ref) and not is_undefined(ref), bool(pred) and not is_undefined(pred)


def per_case_notes(frame: pd.DataFrame) -> pd.Series:
    """The per-case CSV's ``undefined`` column: ``"hd95_2, assd_2: prediction empty"`` or ``""``.

    Example:
        >>> df = pd.DataFrame({"hd95_2": [np.nan], "assd_2": [np.nan], "empty_ref_2": [0.0], "empty_pred_2": [1.0]})
        >>> per_case_notes(df).tolist()
        ['hd95_2, assd_2: prediction empty']
    """
    columns = [(c, m.group(1), m.group(2)) for c in frame.columns if (m := _SEG.fullmatch(str(c)))]
    notes = []
    for row in frame.to_dict("records"):
        by_reason: dict[str, list[str]] = {}
        for column, metric, label in columns:
            if is_undefined(row.get(column)):
                reason = seg_case_reason(metric, *_flags(row, label)) or "not computed"
                by_reason.setdefault(reason, []).append(column)
        notes.append("; ".join(f"{', '.join(cols)}: {why}" for why, cols in by_reason.items()))
    return pd.Series(notes, index=frame.index, dtype=object)


def cohort_reason(frame: pd.DataFrame, metric: str, task: str) -> str:
    """Why no case (of a cohort or subgroup) gives ``metric`` a value.

    Example:
        >>> df = pd.DataFrame({"hd95_2": [np.nan] * 3, "empty_ref_2": [0.0] * 3, "empty_pred_2": [1.0] * 3})
        >>> cohort_reason(df, "hd95_2", "segmentation")
        'no case defines it: prediction empty in 3 of 3 cases'
    """
    if get_task(task).target == "class":
        return _classification_reason(frame, metric)
    m = _SEG.fullmatch(metric)
    if not m or metric not in frame:
        return "no case defines it"
    counts: dict[str, int] = {}
    for row in frame.to_dict("records"):
        if is_undefined(row.get(metric)):
            why = seg_case_reason(m.group(1), *_flags(row, m.group(2))) or "not computed"
            counts[why] = counts.get(why, 0) + 1
    parts = ", ".join(f"{why} in {n}" for why, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"no case defines it: {parts} of {len(frame)} cases" if parts else "no case defines it"


def _classification_reason(frame: pd.DataFrame, metric: str) -> str:
    if "label" not in frame:
        return "no reference labels"
    labels = frame["label"].dropna()
    counts = labels.astype(int).value_counts().sort_index()
    if len(counts) < 2:
        shown = ", ".join(f"class {k}: {v}" for k, v in counts.items()) or "no cases"
        return f"one class only ({shown}); {metric} needs cases of both classes"
    return f"not defined for these cases ({len(labels)} cases, classes {', '.join(map(str, counts.index))})"


def annotate(metrics: dict[str, Any], frame: pd.DataFrame, task: str) -> dict[str, Any]:
    """Add ``"undefined": reason`` to every metric entry (a dict with an ``estimate``) that has none.

    Example:
        >>> df = pd.DataFrame({"label": [1, 1], "prob": [0.2, 0.9]})
        >>> annotate({"auroc": {"estimate": float("nan")}}, df, "classification")["auroc"]["undefined"]
        'one class only (class 1: 2); auroc needs cases of both classes'
    """
    for name, entry in metrics.items():
        if isinstance(entry, dict) and "estimate" in entry and is_undefined(entry["estimate"]):
            entry[UNDEFINED] = cohort_reason(frame, name, task)
    return metrics


def format_estimate(entry: Mapping[str, Any], digits: int = 4) -> str:
    """``"0.8123  [0.7900, 0.8400]"``, or ``"undefined (reason)"`` for a metric no case defines.

    Example:
        >>> format_estimate({"estimate": 0.5, "low": 0.4, "high": 0.6})
        '0.5000  [0.4000, 0.6000]'
        >>> format_estimate({"estimate": None, "undefined": "prediction empty in 2 of 2 cases"})
        'undefined (prediction empty in 2 of 2 cases)'
    """
    if is_undefined(entry.get("estimate")):
        return f"{UNDEFINED} ({entry.get(UNDEFINED) or 'no value'})"

    def num(value: Any) -> str:
        return UNDEFINED if is_undefined(value) else f"{float(value):.{digits}f}"

    return f"{num(entry['estimate'])}  [{num(entry.get('low'))}, {num(entry.get('high'))}]"


def undefined_tags(summary: Mapping[str, Any], prefix: str = "medimg.undefined.") -> dict[str, str]:
    """MLflow tags for the cohort metrics that are undefined (they are not logged as metrics).

    Example:
        >>> undefined_tags({"metrics": {"hd95_2": {"estimate": None, "undefined": "prediction empty in 3 of 3 cases"}}})
        {'medimg.undefined.hd95_2': 'prediction empty in 3 of 3 cases'}
    """
    return {
        f"{prefix}{name}": str(entry.get(UNDEFINED) or "no value")[:5000]
        for name, entry in summary.get("metrics", {}).items()
        if isinstance(entry, dict) and is_undefined(entry.get("estimate"))
    }
