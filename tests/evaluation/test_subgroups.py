"""Subgroup analysis: a deliberately worse group is flagged with a gap whose CI excludes zero."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medimg.evaluation.bootstrap import Resampling
from medimg.evaluation.subgroups import MISSING_GROUP, subgroup_analysis


def test_worse_scanner_is_flagged_on_real_segmentation_metrics(seg_cohort) -> None:
    df = seg_cohort()
    res = subgroup_analysis(df, "manufacturer", "segmentation", resampling=Resampling(n_boot=400))
    gap = res["gaps"]["dice_1"]
    assert gap["flagged"] and gap["worse_group"] == "VendorB" and gap["gap"]["low"] > 0
    a = df.loc[df.manufacturer == "VendorA", "dice_1"].mean()
    b = df.loc[df.manufacturer == "VendorB", "dice_1"].mean()
    assert gap["gap"]["estimate"] == pytest.approx(a - b)
    assert res["gaps"]["hd95_1"]["worse_group"] == "VendorB"  # distances: higher is worse
    groups = {g["group"]: g for g in res["groups"]}
    assert groups["VendorA"]["n_patients"] == 24 and not groups["VendorA"]["too_small"]
    assert groups["VendorB"]["metrics"]["dice_1"]["estimate"] == pytest.approx(b)


def test_equal_groups_are_not_flagged_and_small_groups_are_marked() -> None:
    rng = np.random.default_rng(3)
    n = 90
    df = pd.DataFrame({"patient_key": np.arange(n), "site": ["S1"] * 40 + ["S2"] * 44 + ["S3"] * 6,
                       "dice_1": rng.normal(0.8, 0.05, n)})  # fmt: skip
    df.loc[84:, "dice_1"] = 0.2  # tiny, very bad site: too small to conclude, must not drive the gap
    df.loc[0, "site"] = None
    res = subgroup_analysis(df, "site", "segmentation", resampling=Resampling(n_boot=300), min_patients=10)
    groups = {g["group"]: g for g in res["groups"]}
    assert groups["S3"]["too_small"] and groups[MISSING_GROUP]["n_cases"] == 1
    gap = res["gaps"]["dice_1"]
    assert {gap["highest_group"], gap["lowest_group"]} == {"S1", "S2"} and not gap["flagged"]


def test_classification_subgroup_flag_uses_one_threshold() -> None:
    rng = np.random.default_rng(4)
    n = 400
    sex = np.where(np.arange(n) % 2 == 0, "F", "M")
    y = rng.integers(0, 2, n)
    noise = np.where(sex == "M", 0.5, 0.12)
    prob = np.clip(0.5 * y + 0.25 + rng.normal(0, 1, n) * noise, 0, 1)
    df = pd.DataFrame({"patient_key": np.arange(n), "sex": sex, "label": y, "prob": prob})
    res = subgroup_analysis(df, "sex", "classification", resampling=Resampling(n_boot=300))
    assert res["gaps"]["auroc"]["flagged"] and res["gaps"]["auroc"]["worse_group"] == "M"
    assert 0 < res["threshold"] < 1
    assert res["gaps"]["brier"]["worse_group"] == "M"  # lower Brier is better


def test_numeric_column_is_cut_into_quartiles() -> None:
    rng = np.random.default_rng(6)
    n = 200
    age = rng.integers(20, 90, n).astype(float)
    age[0] = np.nan
    dice = 0.9 - 0.004 * np.nan_to_num(age - 20, nan=0) + rng.normal(0, 0.02, n)  # older patients: worse
    df = pd.DataFrame({"patient_key": range(n), "age": age, "dice_1": dice})
    res = subgroup_analysis(df, "age", "segmentation", resampling=Resampling(n_boot=200))
    assert res["binning"] == "quartiles"
    names = [g["group"] for g in res["groups"]]
    assert len(names) == 5 and names[-1] == MISSING_GROUP and names[0].startswith("20-")
    gap = res["gaps"]["dice_1"]
    assert gap["flagged"] and gap["worse_group"] == names[3] and gap["highest_group"] == names[0]
