"""Classification metrics of a cohort: discrimination, operating point, calibration.

Binary (``prob`` 1-D, probability of the positive class) returns a flat dict:
``n, n_pos, n_neg, auroc, auprc, threshold, sensitivity, specificity, ppv, npv,
accuracy, balanced_accuracy, f1, tp, fp, tn, fn, brier, ece``.

Multi-class (``prob`` 2-D, one column per class) returns one-vs-rest metrics per class
(``auroc_<k>``, ``auprc_<k>``, ``threshold_<k>``, ``sensitivity_<k>``, ``specificity_<k>``,
``n_<k>``), their macro means (``auroc_macro``, ``auprc_macro``), arg-max metrics
(``accuracy``, ``balanced_accuracy`` = mean per-class recall), the confusion matrix as
``cm_<true>_<pred>`` counts, the multi-class Brier score (mean over cases of
``sum_k (p_k - onehot_k)^2``) and the top-label ECE.

Definitions: AUROC is scikit-learn's ``roc_auc_score`` (the Mann-Whitney probability,
ties counted one half); AUPRC is its ``average_precision_score`` (step-wise precision
weighted by recall gain, not the trapezoidal ``auc(precision_recall_curve)``); a case is called positive when
``prob >= threshold``; the default threshold maximises Youden's J (sensitivity +
specificity - 1) over the observed scores; ECE uses ``n_bins`` equal-width bins and
weights ``|observed rate - mean predicted|`` by the bin's share of cases. Metrics that
are undefined for the data (AUROC with one class only) are NaN, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from medimg.errors import DataError


def _both_classes(y: np.ndarray) -> bool:
    return bool(0 < np.count_nonzero(y) < y.size)


def _roc(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """AUROC and Youden's threshold of a binary problem from one scikit-learn ROC curve.

    The area is ``auc(roc_curve(...))``, which is what ``roc_auc_score`` computes for a binary
    problem, without its input checks repeated on every bootstrap replicate. The threshold
    is the observed score maximising sensitivity + specificity - 1, ties to the highest.
    With one class only: NaN and 0.5.
    """
    if not _both_classes(y):
        return float("nan"), 0.5
    fpr, tpr, thresholds = skm.roc_curve(y, score, drop_intermediate=False)
    # index 0 is scikit-learn's "nothing called positive" point above the highest score
    best = 1 + int(np.argmax(tpr[1:] - fpr[1:]))
    return float(skm.auc(fpr, tpr)), float(thresholds[best])


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn; ties count one half); NaN with one class.

    ``score`` 1-D is the positive-class score of 0/1 labels; 2-D (``n x K``) gives the
    one-vs-rest macro mean over the classes present with others (as scikit-learn's
    ``roc_auc_score(multi_class="ovr")`` when every class is present).

    Example:
        >>> auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
        >>> auroc(np.array([0, 1, 2]), np.eye(3))
        1.0
    """
    s = np.asarray(score, float)
    if s.ndim == 2:
        y = np.asarray(y_true)
        return _nanmean([auroc(y == k, s[:, k]) for k in range(s.shape[1])])
    return _roc(np.asarray(y_true).astype(bool), s)[0]


def auprc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision (scikit-learn's ``average_precision_score``); NaN without positives.

    Example:
        >>> round(auprc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 4)
        0.8333
    """
    y = np.asarray(y_true).astype(bool)
    if not y.any():
        return float("nan")
    return float(skm.average_precision_score(y, np.asarray(score, float)))


def _bin_stats(y_true: np.ndarray, prob: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """Per equal-width bin: edges, case count, summed probability, summed outcome."""
    y = np.asarray(y_true, float)
    prob = np.asarray(prob, float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges[1:-1], prob, side="left"), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    return edges, counts, np.bincount(index, prob, n_bins), np.bincount(index, y, n_bins)


def calibration_bins(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width reliability bins: ``bin_low, bin_high, n, mean_prob, observed_rate``.

    Bins are closed on the right (``(0.1, 0.2]``; the first is ``[0, 0.1]``); empty bins are left out.
    These are the bins of scikit-learn's ``calibration_curve(strategy="uniform")``, counted here
    because that function returns neither the case count nor the edges of each bin, which the
    reliability table shows and the ECE weights by.

    Example:
        >>> calibration_bins(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9]), n_bins=2)["n"].tolist()
        [1, 2]
    """
    edges, counts, sum_p, sum_y = _bin_stats(y_true, prob, n_bins)
    keep = counts > 0
    return pd.DataFrame(
        {
            "bin_low": edges[:-1][keep],
            "bin_high": edges[1:][keep],
            "n": counts[keep],
            "mean_prob": sum_p[keep] / counts[keep],
            "observed_rate": sum_y[keep] / counts[keep],
        }
    )


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE: case-weighted mean of ``|observed rate - mean predicted|`` over equal-width bins.

    Example:
        >>> expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0]))
        0.0
    """
    _, counts, sum_p, sum_y = _bin_stats(y_true, prob, n_bins)
    total = counts.sum()
    if total == 0:
        return float("nan")
    return float(np.abs(sum_y - sum_p).sum() / total)


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _binary(y: np.ndarray, prob: np.ndarray, threshold: float | None, n_bins: int) -> dict[str, float]:
    area, youden = _roc(y, prob)
    t = youden if threshold is None else float(threshold)
    called = prob >= t
    tp = int(np.sum(called & y))
    fp = int(np.sum(called & ~y))
    fn = int(np.sum(~called & y))
    tn = int(np.sum(~called & ~y))
    sens = _safe_div(tp, tp + fn)
    spec = _safe_div(tn, tn + fp)
    ppv = _safe_div(tp, tp + fp)
    return {
        "n": float(y.size),
        "n_pos": float(y.sum()),
        "n_neg": float((~y).sum()),
        "auroc": area,
        "auprc": auprc(y, prob),
        "threshold": t,
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ppv,
        "npv": _safe_div(tn, tn + fn),
        "accuracy": _safe_div(tp + tn, y.size),
        "balanced_accuracy": _nanmean([sens, spec]),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
        "brier": float(np.mean((prob - y) ** 2)),
        "ece": expected_calibration_error(y, prob, n_bins),
    }


def _multiclass(y: np.ndarray, prob: np.ndarray, threshold: float | None, n_bins: int) -> dict[str, float]:
    n_classes = prob.shape[1]
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(
            f"labels must lie in 0..{n_classes - 1} for {n_classes} probability columns; got {sorted(set(y))}"
        )
    out: dict[str, float] = {"n": float(y.size), "n_classes": float(n_classes)}
    for k in range(n_classes):
        one = _binary(y == k, prob[:, k], threshold, n_bins)
        for key in ("auroc", "auprc", "threshold", "sensitivity", "specificity"):
            out[f"{key}_{k}"] = one[key]
        out[f"n_{k}"] = one["n_pos"]
    out["auroc_macro"] = _nanmean([out[f"auroc_{k}"] for k in range(n_classes)])
    out["auprc_macro"] = _nanmean([out[f"auprc_{k}"] for k in range(n_classes)])
    pred = prob.argmax(axis=1)
    out["accuracy"] = float(np.mean(pred == y))
    out["balanced_accuracy"] = _nanmean(
        [_safe_div(np.sum((pred == k) & (y == k)), np.sum(y == k)) for k in range(n_classes)]
    )
    for i in range(n_classes):
        for j in range(n_classes):
            out[f"cm_{i}_{j}"] = float(np.sum((y == i) & (pred == j)))
    onehot = np.eye(n_classes)[y]
    out["brier"] = float(np.mean(np.sum((prob - onehot) ** 2, axis=1)))
    out["ece"] = expected_calibration_error(pred == y, prob.max(axis=1), n_bins)
    return out


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    threshold: float | None = None,
    n_bins: int = 10,
) -> dict[str, float]:
    """All classification metrics of a cohort as a flat dict (see the module docstring).

    Args:
        y_true: Integer labels, ``0/1`` for binary, ``0..K-1`` for ``K`` classes.
        prob: Positive-class probability (1-D) or per-class probabilities (2-D, ``n x K``).
        threshold: Operating point (``prob >= threshold`` is positive); ``None`` picks
            Youden's J on these data (per class, one-vs-rest, for multi-class).
        n_bins: Number of equal-width calibration bins of the ECE.

    Returns:
        Flat ``dict[str, float]``; counts are floats too, undefined values are NaN.

    Raises:
        DataError: When lengths differ, probabilities leave [0, 1] or labels are not
            valid class indices.

    Example:
        >>> m = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.5)
        >>> m["auroc"], m["sensitivity"], m["specificity"], m["tp"]
        (0.75, 0.5, 1.0, 1.0)
    """
    y = np.asarray(y_true)
    p = np.asarray(prob, float)
    if y.shape[0] != p.shape[0] or y.ndim != 1:
        raise DataError(f"labels ({y.shape}) and probabilities ({p.shape}) must describe the same cases")
    if y.size == 0:
        raise DataError("no cases to evaluate (empty labels)")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise DataError("probabilities must be finite values in [0, 1]")
    if not np.all(np.equal(np.mod(y, 1), 0)):
        raise DataError(f"labels must be integers; got {y[:5].tolist()}...")
    y = y.astype(int)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 1:
        if not set(np.unique(y)) <= {0, 1}:
            raise DataError(f"binary labels must be 0 or 1; got {sorted(set(y.tolist()))}")
        return _binary(y.astype(bool), p, threshold, n_bins)
    return _multiclass(y, p, threshold, n_bins)


def probabilities_from_frame(frame: pd.DataFrame, label: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities from a per-case table.

    With three or more class columns ``prob_0..prob_{K-1}`` the task is multi-class and
    those columns are used (a ``prob`` column then is ignored); otherwise ``prob`` is the
    positive-class probability, or ``prob_1`` when only ``prob_0, prob_1`` exist.

    Example:
        >>> y, p = probabilities_from_frame(pd.DataFrame({"label": [0, 1], "prob": [0.2, 0.9]}))
        >>> p.tolist()
        [0.2, 0.9]
    """
    if label not in frame.columns:
        raise DataError(f"per-case table has no '{label}' column; expected integer class labels")
    class_cols = sorted(
        (c for c in frame.columns if re.fullmatch(r"prob_\d+", str(c))), key=lambda c: int(c.split("_")[1])
    )
    expected = [f"prob_{k}" for k in range(len(class_cols))]
    if class_cols and class_cols != expected:
        raise DataError(f"probability columns {class_cols} must be exactly {expected}")
    if len(class_cols) >= 3:
        p = frame[class_cols].to_numpy(float)
    elif "prob" in frame.columns:
        p = frame["prob"].to_numpy(float)
    elif len(class_cols) == 2:
        p = frame["prob_1"].to_numpy(float)
    else:
        raise DataError(
            "per-case table needs a 'prob' column (binary) or 'prob_0', 'prob_1', ... (multi-class)"
        )
    labels = frame[label].to_numpy()
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        labels = labels.astype(int)
    return labels, p
