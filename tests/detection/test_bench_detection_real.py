"""benchmarks/bench_detection_real.py: skips naming the missing cache and how to prepare it; runs end to
end on a tiny synthetic stand-in for the Hippocampus cache (fixed split, both sides scored the same way)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_detection_real as bench
from medimg.detection.synthetic import DETECTION_GRID, make_detection_case
from medimg.io.nifti import save_nifti


def test_skips_naming_the_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CACHE", tmp_path / "nowhere")
    result = bench.measure(tmp_path / "work", epochs=1)
    assert set(result) == {"skipped"}
    assert str(tmp_path / "nowhere" / "images") in result["skipped"]
    assert "bench_explain prepare" in result["skipped"]


def _cache(root, n: int) -> None:
    for d in ("images", "labels"):
        (root / d).mkdir(parents=True)
    for i in range(n):
        case = make_detection_case(i, seed=5, max_lesions=2, grid=replace(DETECTION_GRID, shape=(32, 32, 16)))
        save_nifti(case.image, root / "images" / f"hippocampus_{i:03d}.nii.gz")
        if i != 3:  # one case without a label: left out, named
            save_nifti(case.mask, root / "labels" / f"hippocampus_{i:03d}.nii.gz", dtype=np.uint8)


def test_split_is_fixed_by_sorted_name(tmp_path):
    _cache(tmp_path, 11)
    path, left_out = bench.manifest(tmp_path, tmp_path / "work")
    df = pd.read_csv(path)
    assert left_out == ["hippocampus_003"] and len(df) == 10
    assert df.loc[df["split"] == "test", "case_key"].tolist() == ["hippocampus_009", "hippocampus_010"]


def test_mean_box_baseline_hits_a_lesion_at_the_mean_position_only():
    from medimg.detection.boxes import VoxelBox
    from medimg.detection.cases import DetectionSample
    from medimg.io.volume import Volume

    def sample(key, shape, centre):
        image = Volume(np.zeros(shape, np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
        return DetectionSample(key, key, image, [VoxelBox(centre, (6.0, 6.0, 3.0))])

    # training boxes at 1/4 and 1/2 of a 40-voxel axis: the mean box centre is at 3/8 of each test scan
    train = [sample("a", (40, 40, 20), (10.0, 20.0, 10.0)), sample("b", (40, 40, 20), (20.0, 20.0, 10.0))]
    at_mean = sample("c", (80, 40, 20), (30.0, 20.0, 10.0))  # 3/8 of 80 = 30: hit
    elsewhere = sample("d", (80, 40, 20), (60.0, 20.0, 10.0))  # missed, and its box is a false positive
    report = bench.mean_box_baseline(train, [at_mean, elsewhere], n_boot=10)
    assert report["scores"]["sens@1"] == pytest.approx(0.5)
    # one score (1.0) for both boxes: precision 1/2 at recall 1/2, AP 0.25 (scikit-learn definition)
    assert report["scores"]["ap@0.5"] == pytest.approx(0.25)


@pytest.mark.slow
def test_runs_on_a_tiny_synthetic_cache(tmp_path, monkeypatch, capsys):
    _cache(tmp_path / "cache", 11)
    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    result = bench.measure(tmp_path / "work", epochs=1, n_boot=20)
    assert result["split"]["train"] == 8 and result["split"]["test"] == 2
    assert result["left_out_unlabelled"] == ["hippocampus_003"]
    truth = pd.read_csv(tmp_path / "work" / "run" / "splits.csv")
    assert (truth["split"] == "test").sum() == 2  # the manifest's split, not a random one
    for side in ("medimg_retinanet", "baseline_mean_box"):
        for key in ("froc", "ap@0.1", "ap@0.5"):
            assert 0.0 <= result[side][key]["value"] <= 1.0
    assert result["test_lesions"] >= 2
    assert result["difference"]["froc"] == pytest.approx(
        result["medimg_retinanet"]["froc"]["value"] - result["baseline_mean_box"]["froc"]["value"], abs=1e-3
    )
    base = result["baseline_mean_box"]["top_box"]  # a box on every scan: distances always measured
    assert 0.0 < base["mean_iou"] <= 1.0 and 0.0 <= base["centre_mm_median"] <= base["centre_mm_p90"]
    fit = result["medimg_retinanet"]["top_box"]  # after one epoch it may find nothing (IoU 0, no distance)
    assert 0.0 <= fit["mean_iou"] <= 1.0
    assert np.isnan(fit["centre_mm_median"]) or fit["centre_mm_median"] <= fit["centre_mm_p90"]
    bench.print_summary(result)
    assert "vs mean training box" in capsys.readouterr().out
