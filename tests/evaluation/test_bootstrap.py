"""Patient-level bootstrap: clustering, seeding, fast path equals generic path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medimg.errors import DataError
from medimg.evaluation.bootstrap import Resampling, bootstrap_ci, percentile_interval


def _cohort(n_patients: int = 40, cases_per_patient: int = 1, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patient_effect = rng.normal(0.8, 0.08, n_patients)
    rows = [
        {
            "patient_key": f"p{p:03d}",
            "case_key": f"p{p:03d}_{c}",
            "dice_1": patient_effect[p] + rng.normal(0, 0.005),
        }
        for p in range(n_patients)
        for c in range(cases_per_patient)
    ]
    return pd.DataFrame(rows)


def test_interval_contains_estimate_and_is_seeded() -> None:
    df = _cohort()
    a = bootstrap_ci(df, ["dice_1"], Resampling(n_boot=500, seed=3))["dice_1"]
    b = bootstrap_ci(df, ["dice_1"], Resampling(n_boot=500, seed=3))["dice_1"]
    c = bootstrap_ci(df, ["dice_1"], Resampling(n_boot=500, seed=4))["dice_1"]
    assert a == b and a != c
    assert a.low < a.estimate < a.high
    assert a.estimate == pytest.approx(df["dice_1"].mean())
    # the standard error of a mean of 40 patients with sd 0.08 is ~0.0126: the 95% CI is ~0.05 wide
    assert 0.03 < a.high - a.low < 0.07


def test_resampling_patients_not_images() -> None:
    """Ten near-identical cases per patient carry no more information than one."""
    one = bootstrap_ci(_cohort(cases_per_patient=1), ["dice_1"], Resampling(n_boot=500))["dice_1"]
    many = _cohort(cases_per_patient=10)
    by_patient = bootstrap_ci(many, ["dice_1"], Resampling(n_boot=500))["dice_1"]
    by_case = bootstrap_ci(many, ["dice_1"], Resampling(None, n_boot=500))["dice_1"]
    width = lambda ci: ci.high - ci.low  # noqa: E731
    assert width(by_patient) == pytest.approx(width(one), rel=0.25)
    assert width(by_case) < 0.5 * width(by_patient)


def test_fast_mean_path_equals_generic_statistic() -> None:
    df = _cohort(cases_per_patient=3)
    df.loc[[2, 7], "dice_1"] = np.nan  # NaNs skipped in both paths
    fast = bootstrap_ci(df, ["dice_1"], Resampling(n_boot=200, seed=1))["dice_1"]
    slow = bootstrap_ci(df, lambda f: {"dice_1": f["dice_1"].mean()}, Resampling(n_boot=200, seed=1))[
        "dice_1"
    ]
    assert fast.estimate == pytest.approx(slow.estimate)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high))


def test_undefined_replicates_are_counted() -> None:
    ci = percentile_interval(1.0, np.array([np.nan, 1.0, 2.0, np.nan]))
    assert ci.n_valid == 2 and ci.low >= 1.0 and ci.high <= 2.0
    empty = percentile_interval(1.0, np.array([np.nan]))
    assert empty.n_valid == 0 and np.isnan(empty.low) and not empty.excludes(0.0)


def test_missing_patient_column_is_clear() -> None:
    with pytest.raises(DataError, match="patient"):
        bootstrap_ci(pd.DataFrame({"dice_1": [0.5]}), ["dice_1"])
