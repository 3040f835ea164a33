"""benchmarks/bench_superres.py: skips with its reason without the data; a fixed split by sorted name."""

from __future__ import annotations

import pandas as pd

from benchmarks import bench_superres


def test_skips_naming_the_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_superres, "CACHE", tmp_path / "nowhere")
    result = bench_superres.measure(tmp_path / "work", epochs=1)
    assert set(result) == {"skipped"}
    assert (
        str(tmp_path / "nowhere" / "images") in result["skipped"]
        and "bench_explain prepare" in result["skipped"]
    )


def test_split_is_fixed_by_sorted_name(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(20):
        (tmp_path / "images" / f"hippocampus_{i:03d}.nii.gz").write_bytes(b"")
    df = pd.read_csv(bench_superres.manifest(tmp_path, tmp_path / "work"))
    assert df["split"].value_counts().to_dict() == {"train": 14, "test": 4, "val": 2}
    assert df.loc[df["split"] == "test", "case_key"].tolist() == [
        f"hippocampus_{i:03d}" for i in range(16, 20)
    ]
    wf = bench_superres.workflow(tmp_path / "work/manifest.csv", tmp_path / "work", epochs=3)
    assert (wf.task, wf.superres.factor, wf.superres.axis, wf.trainer.max_epochs) == ("superres", 4, 2, 3)
