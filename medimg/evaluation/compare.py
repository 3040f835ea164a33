"""Paired comparison of two runs evaluated on the same cases.

Cases are matched on ``case_key``; only cases present in both runs are compared (the
counts of unmatched cases are reported). Differences are always ``run - baseline``.

* **Segmentation**: for each quality metric the per-case difference is formed (pairs
  where either side is NaN, e.g. HD95 of an empty mask, are left out and counted), its
  mean gets a patient-level bootstrap CI, and a Wilcoxon signed-rank test runs on the
  per-patient mean differences (patients are the independent units).
* **Classification**: cohort metrics (AUROC, AUPRC, Brier, ECE, sensitivity,
  specificity at each run's own operating point) are recomputed on the same patient
  resamples for both runs, giving a CI of each difference; the Wilcoxon signed-rank
  test runs on per-patient mean squared errors (Brier loss) and, for binary tasks,
  DeLong's test compares the two AUROCs.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from medimg.errors import DataError
from medimg.evaluation.bootstrap import (
    Resampling,
    bootstrap_mean_replicates,
    bootstrap_replicates,
    percentile_interval,
)
from medimg.evaluation.cls_metrics import auroc, classification_metrics, probabilities_from_frame
from medimg.evaluation.seg_metrics import HIGHER_IS_BETTER
from medimg.tasks import get_task

CLS_COMPARED: dict[str, bool] = {
    "auroc": True,
    "auprc": True,
    "auroc_macro": True,
    "auprc_macro": True,
    "balanced_accuracy": True,
    "sensitivity": True,
    "specificity": True,
    "accuracy": True,
    "brier": False,
    "ece": False,
}
"""Classification metrics compared between runs, and whether higher is better."""


def seg_quality_columns(frame: pd.DataFrame) -> list[str]:
    """Per-label quality metric columns (``dice_1``, ``hd95_2``...) of a per-case table.

    Example:
        >>> seg_quality_columns(pd.DataFrame(columns=["case_key", "dice_1", "vol_ref_ml_1", "hd95_1"]))
        ['dice_1', 'hd95_1']
    """
    pattern = re.compile(rf"({'|'.join(HIGHER_IS_BETTER)})_.+")
    return [str(c) for c in frame.columns if pattern.fullmatch(str(c))]


def higher_is_better(metric: str) -> bool:
    """Direction of a metric column name (``dice_1`` -> True, ``hd95_1`` -> False).

    Example:
        >>> higher_is_better("dice_1"), higher_is_better("hd95_2"), higher_is_better("brier")
        (True, False, False)
    """
    for prefix, better in {**HIGHER_IS_BETTER, **CLS_COMPARED}.items():
        if metric == prefix or metric.startswith(prefix + "_"):
            return better
    return True


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero, NaN when empty.

    Example:
        >>> wilcoxon_p(np.zeros(5)), round(wilcoxon_p(np.arange(1.0, 11.0)), 4)
        (1.0, 0.002)
    """
    d = np.asarray(differences, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def delong_p(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> float:
    """Two-sided p-value of DeLong's test for two correlated AUROCs on the same cases.

    Example:
        >>> y = np.array([0, 0, 0, 1, 1, 1])
        >>> delong_p(y, np.array([.1, .2, .3, .7, .8, .9]), np.array([.1, .2, .3, .7, .8, .9]))
        1.0
    """
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return float("nan")
    v10, v01 = [], []
    for score in (np.asarray(score_a, float), np.asarray(score_b, float)):
        pos, neg = score[y], score[~y]
        tz = stats.rankdata(np.r_[pos, neg])
        v10.append((tz[:m] - stats.rankdata(pos)) / n)
        v01.append(1.0 - (tz[m:] - stats.rankdata(neg)) / m)
    cov = np.cov(np.vstack(v10)) / m + np.cov(np.vstack(v01)) / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = auroc(y, score_a) - auroc(y, score_b)
    if var <= 1e-15:
        return 1.0 if abs(diff) < 1e-12 else 0.0
    return float(2 * stats.norm.sf(abs(diff) / np.sqrt(var)))


def _pair(run: pd.DataFrame, baseline: pd.DataFrame, case_key: str) -> tuple[pd.DataFrame, dict[str, int]]:
    for name, frame in (("run", run), ("compare", baseline)):
        if case_key not in frame.columns:
            raise DataError(f"{name} per-case table has no '{case_key}' column; cases are paired on it")
        if frame[case_key].duplicated().any():
            raise DataError(
                f"{name} per-case table repeats values of '{case_key}'; each case must appear once"
            )
    merged = run.merge(baseline, on=case_key, how="inner", suffixes=("", "__baseline"))
    counts = {
        "n_pairs": len(merged),
        "n_only_in_run": int((~run[case_key].isin(baseline[case_key])).sum()),
        "n_only_in_compare": int((~baseline[case_key].isin(run[case_key])).sum()),
    }
    if merged.empty:
        raise DataError(f"the two runs share no '{case_key}' value; a paired comparison needs the same cases")
    return merged, counts


def _patient_mean(values: np.ndarray, patients: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame({"p": patients, "v": values}).dropna()
    return frame.groupby("p", sort=False)["v"].mean().to_numpy()


def paired_comparison(
    run: pd.DataFrame,
    baseline: pd.DataFrame,
    task: str,
    *,
    case_key: str = "case_key",
    resampling: Resampling | None = None,
) -> dict[str, Any]:
    """Compare ``run`` against ``baseline`` on their shared cases (differences are run - baseline).

    Args:
        run: Per-case table of the run under study.
        baseline: Per-case table of the run compared against (same columns).
        task: ``"segmentation"`` or ``"classification"``.
        case_key: Column pairing the cases of both runs.
        resampling: The bootstrap's patient column (``None``: one case per patient), replicates,
            seed and coverage (:class:`Resampling`'s defaults when ``None``).

    Returns:
        ``{"n_pairs", "n_only_in_run", "n_only_in_compare", "metrics": {name: {"run",
        "baseline", "difference": Interval dict, "p_value", "test", "n", "better"}}}``.

    Example:
        >>> a = pd.DataFrame({"case_key": list("abcdef"), "dice_1": [.9, .8, .85, .9, .7, .8]})
        >>> b = a.assign(dice_1=a["dice_1"] - 0.1)
        >>> r = paired_comparison(a, b, "segmentation", resampling=Resampling(None, n_boot=200))
        >>> round(r["metrics"]["dice_1"]["difference"]["estimate"], 3), r["metrics"]["dice_1"]["better"]
        (0.1, 'run')
    """
    r = resampling or Resampling()
    patient_key = r.patient_key
    merged, counts = _pair(run, baseline, case_key)
    if patient_key and patient_key not in merged.columns:
        raise DataError(f"run per-case table has no '{patient_key}' column; the bootstrap resamples patients")
    patients = merged[patient_key].to_numpy() if patient_key else merged[case_key].to_numpy()
    out: dict[str, Any] = {**counts, "n_patients": len(pd.unique(patients)), "metrics": {}}
    if get_task(task).target == "mask":
        out["metrics"] = _compare_segmentation(run, merged, patients, r.by("__patient"))
    else:
        out["metrics"] = _compare_classification(merged, patients, r.by("__patient"))
    return out


def _compare_segmentation(
    run: pd.DataFrame, merged: pd.DataFrame, patients: np.ndarray, r: Resampling
) -> dict[str, Any]:
    """Per quality metric: bootstrap CI of the mean per-case difference, Wilcoxon on patient means."""
    metrics: dict[str, Any] = {}
    columns = [c for c in seg_quality_columns(run) if c + "__baseline" in merged.columns]
    diffs = pd.DataFrame({c: merged[c] - merged[c + "__baseline"] for c in columns})
    diffs["__patient"] = patients
    point, reps = bootstrap_mean_replicates(diffs, columns, r)
    for c in columns:
        ok = diffs[c].notna()
        metrics[c] = _entry(
            float(merged.loc[ok, c].mean()),
            float(merged.loc[ok, c + "__baseline"].mean()),
            percentile_interval(point[c], reps[c], r.level),
            wilcoxon_p(_patient_mean(diffs[c].to_numpy(), patients)),
            "wilcoxon signed-rank, per-patient mean differences",
            int(ok.sum()),
            higher_is_better(c),
        )
    return metrics


def _paired_probabilities(merged: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and the probabilities of both runs; the runs must agree on every label."""
    y, p_run = probabilities_from_frame(merged)
    y_base, p_base = probabilities_from_frame(
        merged[[c for c in merged.columns if c.endswith("__baseline")]].rename(
            columns=lambda c: c[: -len("__baseline")]
        )
    )
    if not np.array_equal(y, y_base):
        raise DataError(
            "the two runs disagree on 'label' for some shared cases; compare runs on the same reference"
        )
    return y, p_run, p_base


def _compare_classification(merged: pd.DataFrame, patients: np.ndarray, r: Resampling) -> dict[str, Any]:
    """Cohort metrics of both runs on the same patient resamples, with a test per metric where one applies."""
    metrics: dict[str, Any] = {}
    y, p_run, p_base = _paired_probabilities(merged)
    t_run = classification_metrics(y, p_run).get("threshold")
    t_base = classification_metrics(y, p_base).get("threshold")
    idx = pd.DataFrame({"__row": np.arange(len(y)), "__patient": patients})

    def difference(frame: pd.DataFrame) -> dict[str, float]:
        rows = frame["__row"].to_numpy()
        a = classification_metrics(y[rows], p_run[rows], t_run)
        b = classification_metrics(y[rows], p_base[rows], t_base)
        return (
            {k: a[k] - b[k] for k in CLS_COMPARED if k in a}
            | {f"{k}__run": a[k] for k in CLS_COMPARED if k in a}
            | {f"{k}__baseline": b[k] for k in CLS_COMPARED if k in b}
        )

    point, reps = bootstrap_replicates(idx, difference, r)
    p_brier = _brier_p(y, p_run, p_base, patients)
    for k in CLS_COMPARED:
        if k not in point:
            continue
        p_value, test = _cls_test(k, y, p_run, p_base, p_brier)
        metrics[k] = _entry(
            point[f"{k}__run"], point[f"{k}__baseline"], percentile_interval(point[k], reps[k], r.level),
            p_value, test, len(y), higher_is_better(k),
        )  # fmt: skip
    return metrics


def _brier_p(y: np.ndarray, p_run: np.ndarray, p_base: np.ndarray, patients: np.ndarray) -> float:
    """Wilcoxon p-value of the per-patient mean squared-error (Brier loss) differences."""
    onehot = np.eye(p_run.shape[1])[y] if p_run.ndim == 2 else y
    sq_run = np.sum((p_run - onehot) ** 2, axis=-1) if p_run.ndim == 2 else (p_run - y) ** 2
    sq_base = np.sum((p_base - onehot) ** 2, axis=-1) if p_base.ndim == 2 else (p_base - y) ** 2
    return wilcoxon_p(_patient_mean(sq_run - sq_base, patients))


def _cls_test(
    k: str, y: np.ndarray, p_run: np.ndarray, p_base: np.ndarray, p_brier: float
) -> tuple[float, str]:
    """The p-value and test of metric ``k``: DeLong for a binary AUROC, Wilcoxon for Brier, else none."""
    if k == "auroc" and p_run.ndim == 1:
        return delong_p(y, p_run, p_base), "DeLong test of correlated AUROCs"
    if k == "brier":
        return p_brier, "wilcoxon signed-rank, per-patient mean squared error"
    return float("nan"), "bootstrap CI only"


def _entry(
    run_value: float, base_value: float, diff: Any, p_value: float, test: str, n: int, better_high: bool
) -> dict[str, Any]:
    if diff.excludes(0.0):
        better = "run" if (diff.estimate > 0) == better_high else "compare"
    else:
        better = "no difference shown"
    return {
        "run": run_value,
        "baseline": base_value,
        "difference": diff.to_dict(),
        "p_value": p_value,
        "test": test,
        "n": n,
        "higher_is_better": better_high,
        "better": better,
    }
