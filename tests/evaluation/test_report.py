"""evaluate_study: files, numbers in summary.json, empty cases, flags, comparison, no PHI, no links."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medimg.errors import ConfigError, DataError
from medimg.evaluation.report import evaluate_study

PHI = {"PatientName": "DOE^JANE", "PatientBirthDate": "19450317", "AccessionNumber": "ACC99887766"}


def _strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token} in {path.name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _assert_self_contained(page: str, n_plots: int) -> None:
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "url(" not in page and "@import" not in page
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert len(refs) == n_plots


def test_segmentation_study(tmp_path: Path, seg_cohort) -> None:
    df = seg_cohort(n=40, n_empty=3).assign(**PHI)
    compare = df.assign(dice_1=df["dice_1"] - 0.04)
    history = pd.DataFrame(
        {"epoch": range(6), "train_loss": np.linspace(1, 0.3, 6), "val_dice_1": np.linspace(0.4, 0.8, 6)}
    )
    res = evaluate_study(df, "segmentation", tmp_path / "eval", by=["manufacturer"], compare=compare, history=history,
                         n_boot=300, seed=7)  # fmt: skip
    assert {p.name for p in res.artifacts} >= {"per_case.csv", "summary.json", "report.html", "distributions.png",
                                                "learning_curves.png", "forest_manufacturer_dice_1.png",
        "comparison.png"}  # fmt: skip
    assert not [p for p in (tmp_path / "eval").iterdir() if ".part" in p.name]
    summary = _strict_json(res.summary_json)
    assert summary == res.summary
    dice = summary["metrics"]["dice_1"]
    assert dice["estimate"] == pytest.approx(df["dice_1"].mean())  # empty predictions count as Dice 0
    assert dice["low"] < dice["estimate"] < dice["high"]
    assert summary["metrics"]["hd95_1"]["n_nan"] == 3
    assert summary["metrics"]["hd95_1"]["estimate"] == pytest.approx(df["hd95_1"].mean(skipna=True))
    assert summary["empty_cases"]["1"] == {
        "both_empty": 0,
        "reference_empty_only": 0,
        "prediction_empty_only": 3,
    }
    assert summary["bootstrap"] == {
        "unit": "patient",
        "n_boot": 300,
        "seed": 7,
        "level": 0.95,
        "interval": "percentile",
    }
    gap = summary["subgroups"]["manufacturer"]["gaps"]["dice_1"]
    assert gap["flagged"] and gap["worse_group"] == "VendorB" and gap["gap"]["low"] > 0
    assert any("VendorB" in f and f.startswith("dice_1") for f in summary["flags"])
    cmp = summary["comparison"]["metrics"]["dice_1"]
    assert cmp["difference"]["estimate"] == pytest.approx(0.04) and cmp["p_value"] < 0.001
    per_case = pd.read_csv(res.per_case_csv)
    assert per_case["dice_1"].to_numpy() == pytest.approx(df["dice_1"].to_numpy())
    assert sorted(summary["dropped_columns"]) == sorted(PHI)
    for path in (res.per_case_csv, res.summary_json, res.report_html):
        text = path.read_text()
        assert not any(value in text for value in PHI.values()), path.name
    page = res.report_html.read_text()
    _assert_self_contained(page, len(res.plots))
    assert "FLAGGED" in page and "VendorB" in page and "Paired comparison" in page


def test_binary_classification_study(tmp_path: Path, cls_cohort) -> None:
    df = cls_cohort(n=240)
    res = evaluate_study(df, "classification", tmp_path, by=["sex"], n_boot=200)
    assert set(res.plots) >= {"roc", "pr", "calibration", "distributions", "forest_sex_auroc"}
    summary = res.summary
    from sklearn.metrics import roc_auc_score

    assert summary["metrics"]["auroc"]["estimate"] == pytest.approx(roc_auc_score(df["label"], df["prob"]))
    assert summary["counts"]["n"] == 240 and summary["n_patients"] == 120
    assert summary["subgroups"]["sex"]["gaps"]["auroc"]["worse_group"] == "M"
    per_case = pd.read_csv(res.per_case_csv)
    assert per_case["called_positive"].tolist() == (df["prob"] >= summary["threshold"]).astype(int).tolist()
    _assert_self_contained(res.report_html.read_text(), len(res.plots))


def test_multiclass_study(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, k = 90, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame({"case_key": range(n), "label": y, **{f"prob_{j}": prob[:, j] for j in range(k)}})
    res = evaluate_study(df, "classification", tmp_path, patient_key=None, n_boot=100)
    assert res.summary["bootstrap"]["unit"] == "case"
    assert 0.7 < res.summary["metrics"]["auroc_macro"]["estimate"] <= 1.0
    assert sum(v for key, v in res.summary["counts"].items() if key.startswith("cm_")) == n


def test_bad_tables_are_clear_errors(tmp_path: Path, seg_cohort) -> None:
    df = seg_cohort(n=4)
    with pytest.raises(DataError, match="patient_key"):
        evaluate_study(df.drop(columns="patient_key"), "segmentation", tmp_path)
    with pytest.raises(
        ConfigError, match=r"task 'no-such-task' is not known; known tasks are \['segmentation'"
    ):
        evaluate_study(df, "no-such-task", tmp_path)
    with pytest.raises(DataError, match="'scanner'"):
        evaluate_study(df, "segmentation", tmp_path / "typo", by=["scanner"], n_boot=10)
    assert not (tmp_path / "typo").exists()  # nothing half-written
    with pytest.raises(DataError, match="identifying"):
        evaluate_study(df.assign(PatientID="X"), "segmentation", tmp_path, by=["PatientID"], n_boot=10)
    with pytest.raises(DataError, match="dice_1"):
        evaluate_study(df[["case_key", "patient_key"]], "segmentation", tmp_path)


def test_one_unscorable_case_does_not_take_the_cohort_down(tmp_path: Path, cls_cohort) -> None:
    df = cls_cohort(n=60)
    df["label"] = df["label"].astype(float)  # as read back from a CSV with a gap
    df.loc[5, "prob"] = np.nan
    df.loc[9, "label"] = np.nan
    res = evaluate_study(df, "classification", tmp_path, compare=df, n_boot=50)
    assert res.summary["excluded_cases"] == {"no label or probability": ["c005", "c009"]}
    assert res.summary["counts"]["n"] == 58 and res.summary["comparison"]["n_pairs"] == 58
    assert "c005" in res.report_html.read_text()


def test_failed_cases_are_listed_not_counted_as_empty(tmp_path: Path, seg_cohort) -> None:
    """The per-case table of ``score_cases``: an ``error`` column and extra ``dice_mean`` columns."""
    df = seg_cohort(n=12)
    df["dice_mean"] = df["dice_1"]
    df["error"] = None
    df.loc[4, [c for c in df.columns if c.startswith(("dice", "hd95", "empty"))]] = np.nan
    df.loc[4, "error"] = "FileNotFoundError: image missing"
    res = evaluate_study(df, "segmentation", tmp_path, n_boot=50)
    assert res.summary["excluded_cases"] == {"failed": ["case004"]}
    assert res.summary["n_cases"] == 11 and res.summary["metrics"]["dice_1"]["n_nan"] == 0
    assert list(res.summary["empty_cases"]) == ["1"]
    assert "case004" in res.report_html.read_text() and "image missing" not in res.report_html.read_text()
