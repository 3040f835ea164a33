"""Plots: every function writes a real, non-blank PNG, also for awkward inputs (NaNs, one class)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from medimg.evaluation import cls_plots, plots
from medimg.evaluation.bootstrap import Resampling
from medimg.evaluation.subgroups import subgroup_analysis


def _assert_drawn(path: Path, min_size: tuple[int, int] = (200, 200)) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)[..., :3]
    assert img.shape[0] >= min_size[0] and img.shape[1] >= min_size[1]
    assert img.mean(axis=-1).std() > 0.05 and (img.mean(axis=-1) < 0.5).mean() > 0.002


def test_classification_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    prob = np.clip(0.4 * y + rng.random(120) * 0.6, 0, 1)
    _assert_drawn(cls_plots.plot_roc(y, prob, tmp_path / "roc.png", threshold=0.5))
    _assert_drawn(cls_plots.plot_pr(y, prob, tmp_path / "pr.png"))
    _assert_drawn(cls_plots.plot_calibration(y, prob, tmp_path / "cal.png"))
    _assert_drawn(cls_plots.plot_probability_distributions(y, prob, tmp_path / "dist.png"))
    three = rng.dirichlet(np.ones(3), 120)
    labels = rng.integers(0, 3, 120)
    _assert_drawn(cls_plots.plot_roc(labels, three, tmp_path / "roc3.png"))
    _assert_drawn(cls_plots.plot_calibration(labels, three, tmp_path / "cal3.png"))
    assert not list(tmp_path.glob("*.part*"))


def test_learning_curves_with_gaps(tmp_path: Path) -> None:
    history = pd.DataFrame(
        {"epoch": [0, 0, 1, 1, 2, 2], "step": range(6), "train_loss": [1, np.nan, 0.7, np.nan, 0.5, np.nan],
         "val_loss": [np.nan, 1.1, np.nan, 0.8, np.nan, 0.7], "val_dice": [np.nan, 0.4, np.nan, 0.6, np.nan, 0.7]}
    )  # fmt: skip
    _assert_drawn(plots.plot_learning_curves(history, tmp_path / "lc.png"))


def test_distributions_and_forest_with_nans_and_small_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"patient_key": range(30), "site": ["A"] * 14 + ["B"] * 14 + ["C"] * 2,
                       "dice_1": rng.random(30), "hd95_1": rng.random(30) * 5})  # fmt: skip
    df.loc[[0, 5], "hd95_1"] = np.nan
    _assert_drawn(plots.plot_case_distributions(df, ["dice_1", "hd95_1"], tmp_path / "d.png"))
    result = subgroup_analysis(df, "site", "segmentation", resampling=Resampling(n_boot=50), min_patients=5)
    overall = {"estimate": float(df["dice_1"].mean()), "low": 0.4, "high": 0.6}
    _assert_drawn(plots.plot_forest(result, "dice_1", tmp_path / "f.png", overall), min_size=(100, 300))


def test_comparison_plot_with_undefined_values(tmp_path: Path) -> None:
    entry = {"difference": {"estimate": 0.04, "low": 0.01, "high": 0.07}, "better": "run"}
    undefined = {"difference": {"estimate": None, "low": None, "high": None}, "better": "no difference shown"}
    comparison = {"metrics": {"dice_1": entry, "hd95_1": undefined}}
    _assert_drawn(plots.plot_comparison(comparison, tmp_path / "c.png"))
