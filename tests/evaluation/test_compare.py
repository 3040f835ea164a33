"""Paired comparison of two runs: CI of the difference, Wilcoxon and DeLong p-values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medimg.errors import DataError
from medimg.evaluation.bootstrap import Resampling
from medimg.evaluation.compare import delong_p, paired_comparison


def _seg_runs(n: int = 40, shift: float = 0.03) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    base = pd.DataFrame(
        {
            "case_key": [f"c{i}" for i in range(n)],
            "patient_key": [f"p{i // 2}" for i in range(n)],
            "dice_1": rng.uniform(0.6, 0.9, n),
            "hd95_1": rng.uniform(2, 8, n),
        }
    )
    run = base.assign(dice_1=base["dice_1"] + shift + rng.normal(0, 0.01, n), hd95_1=base["hd95_1"] - 1.0)
    return run, base


def test_segmentation_run_better_has_ci_and_small_p() -> None:
    run, base = _seg_runs()
    res = paired_comparison(run, base, "segmentation", resampling=Resampling(n_boot=500))
    dice = res["metrics"]["dice_1"]
    assert dice["difference"]["estimate"] == pytest.approx((run["dice_1"] - base["dice_1"]).mean())
    assert 0 < dice["difference"]["low"] < 0.03 < dice["difference"]["high"]
    per_patient = (run["dice_1"] - base["dice_1"]).groupby(run["patient_key"]).mean()
    assert dice["p_value"] == pytest.approx(stats.wilcoxon(per_patient).pvalue)
    assert dice["p_value"] < 1e-4 and dice["better"] == "run"
    assert res["metrics"]["hd95_1"]["better"] == "run"  # lower distance is better
    assert res["n_pairs"] == 40 and res["n_patients"] == 20


def test_identical_runs_show_no_difference_and_unmatched_are_counted() -> None:
    _, base = _seg_runs()
    run = pd.concat([base, base.iloc[:1].assign(case_key="extra")], ignore_index=True)
    base_with_nan = base.copy()
    base_with_nan.loc[0, "hd95_1"] = np.nan
    res = paired_comparison(run, base_with_nan, "segmentation", resampling=Resampling(n_boot=200))
    assert res["n_only_in_run"] == 1 and res["n_only_in_compare"] == 0
    assert res["metrics"]["dice_1"]["p_value"] == 1.0
    assert res["metrics"]["dice_1"]["better"] == "no difference shown"
    assert res["metrics"]["hd95_1"]["n"] == 39  # the NaN pair is left out and counted


def test_classification_compare_delong_and_bootstrap() -> None:
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 * y + 0.25 + rng.normal(0, 0.15, n), 0, 1)
    poor = np.clip(0.5 * y + 0.25 + rng.normal(0, 0.45, n), 0, 1)
    keys = {"case_key": [f"c{i}" for i in range(n)], "patient_key": [f"p{i}" for i in range(n)], "label": y}
    res = paired_comparison(
        pd.DataFrame({**keys, "prob": good}),
        pd.DataFrame({**keys, "prob": poor}),
        "classification",
        resampling=Resampling(n_boot=300),
    )
    auc = res["metrics"]["auroc"]
    assert auc["difference"]["low"] > 0 and auc["p_value"] < 1e-3 and auc["better"] == "run"
    assert res["metrics"]["brier"]["better"] == "run" and res["metrics"]["brier"]["p_value"] < 1e-3
    with pytest.raises(DataError, match="label"):
        paired_comparison(pd.DataFrame({**keys, "prob": good}), pd.DataFrame({**keys, "label": 1 - y, "prob": poor}),
                          "classification", resampling=Resampling(n_boot=10))  # fmt: skip


def test_delong_matches_bootstrap_variance_scale() -> None:
    """DeLong's z for two AUROCs agrees with a large paired bootstrap of the AUROC difference."""
    from medimg.evaluation.cls_metrics import auroc

    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 2, n)
    a = y * 0.8 + rng.normal(0, 1, n)
    b = y * 0.6 + rng.normal(0, 1, n) + 0.3 * a
    diffs = []
    for _ in range(1000):
        idx = rng.integers(0, n, n)
        diffs.append(auroc(y[idx], a[idx]) - auroc(y[idx], b[idx]))
    z_boot = (auroc(y, a) - auroc(y, b)) / np.std(diffs)
    p_boot = 2 * stats.norm.sf(abs(z_boot))
    assert delong_p(y, a, b) == pytest.approx(p_boot, abs=0.03)
    assert delong_p(y, a, a) == 1.0
