"""Study plots as PNG files: learning curves, per-case distributions, subgroup forest, comparison.

Classification curves (ROC, PR, calibration) live in :mod:`medimg.evaluation.cls_plots`.

Figures are built with :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state, no
display needed) and written atomically. Each function returns the written path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medimg.io.atomic import atomic_write

DPI = 100


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path.

    Example:
        >>> save_figure(Figure(), "/tmp/empty.png").suffix  # doctest: +SKIP
        '.png'
    """
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def plot_learning_curves(history: pd.DataFrame, path: str | os.PathLike[str], epoch: str = "epoch") -> Path:
    """Loss curves (left) and other metrics (right) per epoch from a table of logged values.

    Every numeric column other than ``epoch`` is a curve; NaN gaps (values logged at other
    steps) are skipped and the last value logged in an epoch is drawn. Without an
    ``epoch`` column, ``step`` is used, else the row number.

    Example:
        >>> h = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [1.0, .6, .4], "val_dice": [.5, .7, .8]})
        >>> plot_learning_curves(h, "/tmp/curves.png").name  # doctest: +SKIP
        'curves.png'
    """
    if epoch not in history.columns and "step" in history.columns:
        epoch = "step"
    x = history[epoch] if epoch in history.columns else pd.Series(np.arange(len(history)), name="row")
    columns = [c for c in history.columns if c != epoch and pd.api.types.is_numeric_dtype(history[c])]
    losses = [c for c in columns if "loss" in str(c).lower()]
    others = [c for c in columns if c not in losses and str(c).lower() not in ("step", "global_step")]
    fig = Figure(figsize=(10, 4))
    for ax, names, title in (
        (fig.add_subplot(1, 2, 1), losses, "losses"),
        (fig.add_subplot(1, 2, 2), others, "metrics"),
    ):
        for name in names:
            series = pd.DataFrame({"x": x, "y": history[name]}).dropna().groupby("x")["y"].last()
            if not series.empty:
                ax.plot(series.index, series.to_numpy(), marker="o", markersize=3, label=str(name))
        ax.set_xlabel(str(x.name))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_case_distributions(
    per_case: pd.DataFrame, columns: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Box plot with every case as a dot, one panel per metric family (``dice``, ``hd95``...).

    Tick labels give the number of cases and of NaN values, so empties stay visible.

    Example:
        >>> plot_case_distributions(per_case, ["dice_1", "hd95_1"], "eval/distributions.png")  # doctest: +SKIP
    """
    families: dict[str, list[str]] = {}
    for c in columns:
        match = re.fullmatch(r"(.+?)_(\d+|[^_]+)$", str(c))
        families.setdefault(match.group(1) if match else str(c), []).append(str(c))
    fig = Figure(figsize=(3.2 * max(len(families), 1), 4))
    rng = np.random.default_rng(0)
    for i, (family, cols) in enumerate(families.items(), start=1):
        ax = fig.add_subplot(1, len(families), i)
        data = [per_case[c].to_numpy(float) for c in cols]
        finite = [d[np.isfinite(d)] for d in data]
        ax.boxplot([f if f.size else [np.nan] for f in finite], showfliers=False)
        for j, f in enumerate(finite, start=1):
            ax.plot(j + rng.uniform(-0.15, 0.15, f.size), f, "o", alpha=0.5, markersize=3)
        labels = [
            f"{c}\nn={f.size} NaN={d.size - f.size}" for c, d, f in zip(cols, data, finite, strict=True)
        ]
        ax.set_xticks(range(1, len(cols) + 1), labels, fontsize=7)
        ax.set_title(family)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def _ci_values(ci: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(estimate, low, high)`` as floats, ``None`` (JSON null) as NaN."""
    return tuple(np.nan if ci.get(k) is None else float(ci[k]) for k in ("estimate", "low", "high"))  # type: ignore[return-value]


def _draw_ci(ax: Any, ci: Mapping[str, Any], row: float, **style: Any) -> None:
    est, low, high = _ci_values(ci)
    if np.isfinite([est, low, high]).all():
        ax.errorbar(
            est, row, xerr=[[max(est - low, 0.0)], [max(high - est, 0.0)]], fmt="o", capsize=3, **style
        )
    elif np.isfinite(est):
        ax.plot([est], [row], "o", **{k: v for k, v in style.items() if k in ("color", "mfc")})


def plot_forest(
    subgroup: Mapping[str, Any],
    metric: str,
    path: str | os.PathLike[str],
    overall: Mapping[str, float] | None = None,
) -> Path:
    """Forest plot: each group's estimate and CI; too-small groups hollow; overall as a line.

    Args:
        subgroup: Result of :func:`medimg.evaluation.subgroups.subgroup_analysis`.
        metric: Metric to draw.
        path: PNG path.
        overall: Interval dict of the whole cohort (``estimate``, ``low``, ``high``).

    Example:
        >>> plot_forest(subgroup_analysis(df, "site", "segmentation"), "dice_1", "eval/forest.png")  # doctest: +SKIP
    """
    groups = subgroup["groups"]
    fig = Figure(figsize=(7, 1.2 + 0.45 * len(groups)))
    ax = fig.add_subplot(1, 1, 1)
    gap = subgroup["gaps"].get(metric, {})
    for row, g in enumerate(groups):
        ci = g["metrics"][metric]
        worse = gap.get("flagged") and g["group"] == gap.get("worse_group")
        color = "tab:red" if worse else ("grey" if g["too_small"] else "tab:blue")
        _draw_ci(ax, ci, row, color=color, mfc="white" if g["too_small"] else color)
    if overall is not None:
        ax.axvline(_ci_values(overall)[0], color="black", linestyle=":", label="all cases")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(
        range(len(groups)),
        [f"{g['group']} (n={g['n_cases']}{', too small' if g['too_small'] else ''})" for g in groups],
        fontsize=8,
    )
    ax.invert_yaxis()
    title = f"{metric} by {subgroup['column']}"
    if "gap" in gap:
        title += (
            f"\nlargest gap {gap['gap']['estimate']:.3g} [{gap['gap']['low']:.3g}, {gap['gap']['high']:.3g}]"
        )
        title += " - FLAGGED" if gap["flagged"] else ""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(metric)
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def plot_comparison(comparison: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Paired differences (this run - compared run) with CIs, one row per metric, zero marked.

    Each row has its own scale (Dice and HD95 in mm do not share one); a green point means
    this run is better, red the compared run, grey no difference shown.

    Args:
        comparison: Result of :func:`medimg.evaluation.compare.paired_comparison`.
        path: PNG path.

    Example:
        >>> plot_comparison(paired_comparison(run, base, "segmentation"), "eval/comparison.png")  # doctest: +SKIP
    """
    metrics = list(comparison["metrics"].items())
    fig = Figure(figsize=(7, max(2.5, 0.4 + 0.75 * len(metrics))))
    colors = {"run": "tab:green", "compare": "tab:red"}
    for row, (name, entry) in enumerate(metrics, start=1):
        ax = fig.add_subplot(len(metrics), 1, row)
        d = entry["difference"]
        est, low, high = _ci_values(d)
        _draw_ci(ax, d, 0, color=colors.get(entry["better"], "grey"))
        ax.axvline(0.0, color="black", linewidth=0.8)
        span = max(abs(v) for v in (low, high, est, 1e-6) if np.isfinite(v))
        ax.set_xlim(-1.15 * span, 1.15 * span)
        ax.set_yticks([0], [str(name)], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, axis="x")
    if metrics:
        fig.axes[0].set_title("paired difference, this run - compared run", fontsize=9)
    return save_figure(fig, path)
