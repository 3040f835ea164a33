"""benchmarks/bench_synth_aug.py: skips naming how to prepare the data; end to end on a tiny synthetic study."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_synth_aug


def test_skips_naming_the_missing_cache_and_how_to_prepare_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_synth_aug, "CACHE", tmp_path / "nowhere")
    reason = bench_synth_aug.not_prepared(tmp_path / "nowhere")
    assert reason is not None
    assert str(tmp_path / "nowhere" / "manifest.csv") in reason and "bench_explain prepare-vessel" in reason
    monkeypatch.setattr(bench_synth_aug, "not_prepared", lambda: reason)
    assert bench_synth_aug.main(["--work", str(tmp_path / "w")]) == 0
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "w").exists()


def test_subset_is_fixed_before_anything_runs(tmp_path):
    keys = [f"{s}_{i:03d}" for s, n in (("train", 50), ("val", 10), ("test", 20)) for i in range(n)]
    df = pd.DataFrame({"case_key": keys, "patient_key": keys, "image": [f"/x/{k}.nii.gz" for k in keys],
                       "aneurysm": [i % 9 == 0 for i in range(len(keys))], "split": [k.split("_")[0] for k in keys]})  # fmt: skip
    df.to_csv(tmp_path / "manifest.csv", index=False)
    setup = bench_synth_aug.Setup(manifest=str(tmp_path / "manifest.csv"), n_train=12, n_val=4)
    a = pd.read_csv(bench_synth_aug.fix_subset(setup, tmp_path / "a"))
    b = pd.read_csv(bench_synth_aug.fix_subset(setup, tmp_path / "b"))
    pd.testing.assert_frame_equal(a, b)  # the same subset every time
    assert a["split"].value_counts().to_dict() == {"test": 20, "train": 12, "val": 4}
    assert set(a.loc[a["split"] == "test", "case_key"]) == {f"test_{i:03d}" for i in range(20)}  # all of it
    assert set(a.loc[a["split"] == "train", "case_key"]) <= {f"train_{i:03d}" for i in range(50)}


def test_t_interval_and_paired_bootstrap():
    ci = bench_synth_aug.t_interval([0.01, 0.03, 0.02])
    assert ci["mean"] == pytest.approx(0.02) and ci["sd"] == pytest.approx(0.01)
    assert ci["high"] - ci["mean"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)  # t(0.975, 2)
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    same = np.tile(np.linspace(0, 1, 8), (3, 1))
    boot = bench_synth_aug.bootstrap_diff(y, same, same, n_boot=50)
    assert boot["auroc"] == {"low": 0.0, "high": 0.0, "n_boot": 50}  # identical arms: no difference


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_a_tiny_synthetic_study(tmp_path):
    out = tmp_path / "res.json"
    assert bench_synth_aug.main(["--synthetic", "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    setup, counts, runs = doc["setup"], doc["study_counts"], doc["runs"]
    assert counts == {"train": {"cases": 10, "positive": 2}, "val": {"cases": 4, "positive": 2},
                      "test": {"cases": 14, "positive": 10}}  # fmt: skip
    assert doc["generator"]["train_cases_per_class"] == [8, 2]  # trained on the training split only
    assert sorted(runs) == ["0", "1", "2"]
    for arms in runs.values():
        assert (arms["real"]["train_real"], arms["real"]["train_synthetic"]) == (10, 0)
        assert (arms["synthetic"]["train_real"], arms["synthetic"]["train_synthetic"]) == (10, setup["count"])
        assert arms["real"]["eval_synthetic"] == arms["synthetic"]["eval_synthetic"] == 0
    res = doc["result"]
    assert res["n_test"] == 14 and res["n_test_positive"] == 10
    diffs = [r["auroc_diff"] for r in res["per_seed"]]
    assert [r["seed"] for r in res["per_seed"]] == [0, 1, 2]
    for r in res["per_seed"]:
        assert 0 <= r["auroc_real"] <= 1 and 0 <= r["ap_synthetic"] <= 1
        assert r["auroc_diff"] == pytest.approx(r["auroc_synthetic"] - r["auroc_real"])
    t = res["auroc_diff_t95"]
    assert t["mean"] == pytest.approx(np.mean(diffs)) and t["low"] <= t["mean"] <= t["high"] and t["n"] == 3
    b = res["bootstrap95_over_test_cases"]["auroc"]
    assert -1 <= b["low"] <= b["high"] <= 1 and b["n_boot"] == 200
