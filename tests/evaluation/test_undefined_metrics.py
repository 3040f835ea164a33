"""Undefined metrics (empty masks, one-class subgroups) are reported as undefined with a reason."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _browser import chromium as find_chromium
from _browser import run_chromium
from _models import built_model, evaluate_argv

from medimg.cli.main import main
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
from medimg.evaluation.report import evaluate_study
from medimg.evaluation.seg_metrics import segmentation_case_metrics
from medimg.evaluation.undefined import format_estimate, per_case_notes

SPACING = (1.0, 1.5, 2.0)
PROBE = """<script>window.addEventListener("load", () => {
  const cells = [...document.querySelectorAll(".undefined")].map((e) => { const b = e.getBoundingClientRect();
    return [e.textContent, b.width, b.height].join("|"); });
  document.body.setAttribute("data-undefined", cells.join(";"));
});</script></body>"""


def test_the_convention_for_empty_masks() -> None:
    empty = np.zeros((8, 8, 6), np.uint8)
    full = empty.copy()
    full[2:5, 2:6, 1:4] = 1
    both = segmentation_case_metrics(empty, empty, SPACING, labels=[1])
    missed = segmentation_case_metrics(empty, full, SPACING, labels=[1])
    extra = segmentation_case_metrics(full, empty, SPACING, labels=[1])
    assert (both["dice_1"], missed["dice_1"], extra["dice_1"]) == (1.0, 0.0, 0.0)
    assert all(math.isnan(m[k]) for m in (both, missed, extra) for k in ("hd95_1", "assd_1"))
    notes = per_case_notes(pd.DataFrame([both, missed, extra]))
    assert list(notes) == [
        "hd95_1, assd_1: both masks empty",
        "hd95_1, assd_1: prediction empty",
        "hd95_1, assd_1, rvd_1: reference empty",
    ]


def test_a_one_class_subgroup_has_undefined_auroc_with_the_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 60
    label = np.r_[rng.integers(0, 2, 40), np.zeros(20, int)]  # site B: negatives only
    df = pd.DataFrame({"case_key": [f"c{i}" for i in range(n)], "patient_key": [f"p{i}" for i in range(n)],
                       "site": ["A"] * 40 + ["B"] * 20, "label": label,
                       "prob": np.clip(label * 0.5 + rng.random(n) * 0.5, 0, 1)})  # fmt: skip
    res = evaluate_study(df, "classification", tmp_path / "eval", by=["site"], n_boot=50)
    groups = {g["group"]: g["metrics"] for g in res.summary["subgroups"]["site"]["groups"]}
    assert groups["A"]["auroc"]["estimate"] is not None and "undefined" not in groups["A"]["auroc"]
    assert groups["B"]["auroc"]["estimate"] is None
    assert (
        groups["B"]["auroc"]["undefined"] == "one class only (class 0: 20); auroc needs cases of both classes"
    )
    page = res.report_html.read_text()
    assert "one class only (class 0: 20)" in page and ">undefined</span>" in page


@pytest.mark.browser
def test_evaluate_a_model_that_never_predicts_a_label(tmp_path: Path, capsys) -> None:
    import mlflow

    chromium = find_chromium()
    manifest = write_synthetic_study(
        tmp_path / "data", cases=6, seed=3, grid=SyntheticGrid(shape=(32, 30, 20), spacing=(1.6, 1.7, 2.5))
    )
    model = built_model(tmp_path / "run" / "model", never=[2])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("undefined")).info.run_id
    (tmp_path / "run" / "run.json").write_text(json.dumps({"run_id": run_id, "tracking_uri": uri}))
    out = tmp_path / "eval"
    argv = evaluate_argv(model, manifest, out, "--by", "site")
    assert main([*argv, "--n-boot", "50"]) == 0
    printed = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")
    }
    for metric in ("hd95_2", "assd_2"):
        assert re.fullmatch(rf"\s+{metric}\s+undefined \(no case defines it: prediction empty in 6 of 6 cases\)",
                            printed[metric])  # fmt: skip
    assert re.fullmatch(r"\s+dice_2\s+0\.0000  \[0\.0000, 0\.0000\]", printed["dice_2"])
    assert re.fullmatch(r"\s+hd95_1\s+\d+\.\d{4}  \[\d+\.\d{4}, \d+\.\d{4}\]", printed["hd95_1"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["hd95_2"]["estimate"] is None and summary["metrics"]["hd95_2"]["n_nan"] == 6
    for group in summary["subgroups"]["site"]["groups"]:
        assert (
            group["metrics"]["hd95_2"]["undefined"]
            == f"no case defines it: prediction empty in {group['n_cases']} of {group['n_cases']} cases"
        )
    per_case = pd.read_csv(out / "per_case.csv", keep_default_na=False)
    assert set(per_case["hd95_2"]) == {""} and all(
        "hd95_2, assd_2: prediction empty" in n for n in per_case["undefined"]
    )

    logged = client.get_run(run_id).data
    assert "eval_dice_1" in logged.metrics and "eval_hd95_2" not in logged.metrics
    assert not any(math.isnan(v) for v in logged.metrics.values())
    assert logged.tags["medimg.undefined.hd95_2"] == "no case defines it: prediction empty in 6 of 6 cases"

    probe = tmp_path / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", PROBE))
    dom = run_chromium(chromium, ["--window-size=1200,3000", "--dump-dom", probe.as_uri()], tmp_path)
    found = re.search(r'data-undefined="([^"]*)"', dom)
    assert found, "the report did not finish loading in Chromium"
    cells = [item.split("|") for item in found.group(1).split(";") if item]
    assert len(cells) >= 2 + 2 * 2  # cohort hd95_2, assd_2; the same per site group
    assert all(text == "undefined" and float(w) > 0 and float(h) > 0 for text, w, h in cells)


def test_format_estimate_never_formats_a_missing_number() -> None:
    assert format_estimate({"estimate": 0.25, "low": None, "high": 0.5}) == "0.2500  [undefined, 0.5000]"
    assert format_estimate({"estimate": float("nan")}) == "undefined (no value)"
