"""Classification plots as PNG files: ROC, precision-recall, calibration, predicted probabilities.

Binary tasks take the positive-class probability (1-D); multi-class tasks take one column
per class (2-D) and are drawn one-vs-rest (calibration: top-label confidence).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medimg.evaluation.cls_metrics import auprc, auroc, calibration_bins, expected_calibration_error
from medimg.evaluation.plots import save_figure


def _one_vs_rest(y: np.ndarray, prob: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if prob.ndim == 1:
        return [("positive", y.astype(bool), prob)]
    return [(f"class {k}", y == k, prob[:, k]) for k in range(prob.shape[1])]


def plot_roc(
    y: np.ndarray, prob: np.ndarray, path: str | os.PathLike[str], threshold: float | None = None
) -> Path:
    """ROC curve (one-vs-rest per class for 2-D ``prob``), AUROC in the legend, operating point marked.

    Example:
        >>> plot_roc(y, prob, "eval/roc.png", threshold=0.42)  # doctest: +SKIP
    """
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    for name, target, score in _one_vs_rest(np.asarray(y), np.asarray(prob, float)):
        if target.all() or not target.any():
            continue
        fpr, tpr, _ = roc_curve(target, score)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(target, score):.3f})")
        if threshold is not None and prob.ndim == 1:
            called = score >= threshold
            ax.plot(
                [np.mean(called[~target])],
                [np.mean(called[target])],
                "ko",
                label=f"threshold {threshold:.3g}",
            )
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def plot_pr(y: np.ndarray, prob: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Precision-recall curve (one-vs-rest per class), AUPRC and prevalence shown.

    Example:
        >>> plot_pr(y, prob, "eval/pr.png")  # doctest: +SKIP
    """
    from sklearn.metrics import precision_recall_curve

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    for name, target, score in _one_vs_rest(np.asarray(y), np.asarray(prob, float)):
        if not target.any():
            continue
        precision, recall, _ = precision_recall_curve(target, score)
        line = ax.step(recall, precision, where="post", label=f"{name} (AUPRC {auprc(target, score):.3f})")
        ax.axhline(target.mean(), linestyle=":", color=line[0].get_color())
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path)


def plot_calibration(y: np.ndarray, prob: np.ndarray, path: str | os.PathLike[str], n_bins: int = 10) -> Path:
    """Reliability diagram (observed rate vs mean predicted per bin) over a histogram of predictions.

    For 2-D ``prob`` the top-label confidence against top-label correctness is shown.

    Example:
        >>> plot_calibration(y, prob, "eval/calibration.png")  # doctest: +SKIP
    """
    y = np.asarray(y)
    prob = np.asarray(prob, float)
    if prob.ndim == 2:
        y, prob = (prob.argmax(axis=1) == y).astype(int), prob.max(axis=1)
    bins = calibration_bins(y, prob, n_bins)
    fig = Figure(figsize=(5, 6))
    ax = fig.add_subplot(4, 1, (1, 3))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot(
        bins["mean_prob"],
        bins["observed_rate"],
        "o-",
        label=f"model (ECE {expected_calibration_error(y, prob, n_bins):.3f})",
    )
    ax.set(ylabel="observed rate", title="Calibration", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="upper left")
    hist = fig.add_subplot(4, 1, 4)
    hist.hist(prob, bins=np.linspace(0, 1, n_bins + 1), color="grey")
    hist.set(xlabel="predicted probability", ylabel="cases", xlim=(0, 1))
    return save_figure(fig, path)


def plot_probability_distributions(y: np.ndarray, prob: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Histogram of the predicted probability of the true class, one colour per true class.

    Example:
        >>> plot_probability_distributions(y, prob, "eval/distributions.png")  # doctest: +SKIP
    """
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, float)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    p_pos = prob if prob.ndim == 1 else None
    for k in np.unique(y):
        values = p_pos[y == k] if p_pos is not None else prob[y == k, k]
        ax.hist(values, bins=np.linspace(0, 1, 21), alpha=0.6, label=f"true class {k} (n={values.size})")
    ax.set(xlabel="predicted probability of " + ("the positive class" if p_pos is not None else "the true class"),
           ylabel="cases", title="Per-case predictions")  # fmt: skip
    ax.legend(fontsize=8)
    return save_figure(fig, path)
