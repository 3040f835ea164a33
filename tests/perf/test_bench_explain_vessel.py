"""The VesselMNIST3D explain benchmark: its data preparation, its random baseline and its table.

The real data is not needed: a tiny MedMNIST-format ``npz`` stands in for ``vesselmnist3d.npz``.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import bench_explain_vessel as bev


def _npz(path, counts=(6, 2, 3), side=8):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        arrays[f"{split}_images"] = (rng.random((n, side, side, side)) > 0.9).astype(np.uint8) * 255
        arrays[f"{split}_labels"] = (np.arange(n) % 3 == 0).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return arrays


def test_write_cases_keeps_the_published_split_and_the_voxels(tmp_path):
    arrays = _npz(tmp_path / "v.npz")
    info = bev.write_cases(tmp_path / "v.npz", tmp_path / "cache")
    assert info["cases"] == {"train": 6, "val": 2, "test": 3}
    assert info["aneurysm"] == {"train": 2, "val": 1, "test": 1}
    df = pd.read_csv(tmp_path / "cache" / "manifest.csv")
    assert list(df["split"]) == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    row = df[df["case_key"] == "test_0002"].iloc[0]
    assert row["aneurysm"] == int(arrays["test_labels"][2, 0]) and row["patient_key"] == "test_0002"
    img = nib.load(tmp_path / "cache" / row["image"])
    np.testing.assert_array_equal(np.asarray(img.dataobj), arrays["test_images"][2])
    np.testing.assert_allclose(img.affine, np.eye(4))  # 1 mm isotropic, RAS, no oblique
    assert img.header.get_xyzt_units()[0] == "mm"

    from medimg.config.schema import DataConfig
    from medimg.data.manifest import read_manifest

    cfg = DataConfig(manifest=str(tmp_path / "cache" / "manifest.csv"), label_column="aneurysm")
    checked = read_manifest(cfg, "classification")  # medimg's own checks accept every case
    assert len(checked) == 11 and checked["target"].sum() == 4


def test_skips_with_the_command_that_prepares(tmp_path):
    reason = bev.not_prepared(tmp_path)
    assert reason is not None and "prepare-vessel" in reason
    assert bev.run_vessel(tmp_path / "work", cache=tmp_path) == {"skipped": reason}
    assert not (tmp_path / "work").exists()


def test_subset_takes_the_first_cases_of_each_class(tmp_path):
    _npz(tmp_path / "v.npz", counts=(4, 1, 9))
    bev.write_cases(tmp_path / "v.npz", tmp_path)
    chosen = bev.subset(tmp_path / "manifest.csv", per_class=2)
    # test labels: 1 at indices 0, 3, 6; 0 elsewhere
    assert list(chosen["case_key"]) == ["test_0000", "test_0001", "test_0002", "test_0003"]
    assert len(bev.subset(tmp_path / "manifest.csv", per_class=None)) == 9


def test_random_order_map_reproduces_explains_random_deletion():
    from medimg.explain.sanity import deletion_insertion
    from medimg.explain.targets import class_probability_score

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 6**3, 2)
    ).eval()
    x = torch.rand(1, 1, 6, 6, 6)
    noise = bev.random_order_map((6, 6, 6))
    r = deletion_insertion(net, x, noise, class_probability_score(1), steps=8)
    assert r.random_deletion_auc == pytest.approx(r.deletion_auc, abs=1e-7)


def test_method_table_counts_against_the_random_order():
    def case(key, ref, d, rd, ins, rho, ssim):
        m = {"deletion_auc": d, "random_deletion_auc": rd, "insertion_auc": ins, "spearman": rho,
             "ssim": ssim, "passed": d < rd - 0.05 and rho < 0.5 and ssim < 0.5, "target": {"class": 1}}  # fmt: skip
        return {"case_key": key, "status": "ok", "reference": ref, "methods": {"gradcam": m}}

    summary = {
        "cases": [
            case("a", 1, 0.2, 0.5, 0.8, 0.1, 0.1),  # beats random both ways, passes
            case("b", 1, 0.6, 0.5, 0.4, 0.7, 0.1),  # loses both ways, fails randomisation
            case("c", 0, 0.1, 0.2, 0.3, -0.6, 0.2),
            {"case_key": "d", "status": "failed", "reason": "x"},
        ]
    }

    def base(ins, vd, vi, mass):
        return {"random_insertion_auc": ins, "vessel_random_deletion_auc": vd,
                "vessel_random_insertion_auc": vi, "mass_on_vessel": {"gradcam": mass}}  # fmt: skip

    bases = {"a": base(0.5, 0.1, 0.9, 0.6), "b": base(0.5, 0.7, 0.3, 0.2), "c": base(0.2, 0.1, 0.2, 1.0)}
    table = bev.method_table(summary, bases)["gradcam"]
    assert table["all"]["cases"] == 3 and table["aneurysm"]["cases"] == 2 and table["vessel"]["cases"] == 1
    a = table["aneurysm"]
    assert a["deletion_beats_random"] == 1 and a["insertion_beats_random"] == 1
    assert a["randomisation_passes"] == 1 and a["medimg_verdict_passes"] == 1
    assert a["deletion_auc"] == {"mean": 0.4, "median": 0.4}
    assert a["deletion_beats_vessel_random"] == 1 and a["insertion_beats_vessel_random"] == 1  # b only
    assert a["mass_on_vessel"] == {"mean": 0.4, "median": 0.4}
    assert table["vessel"]["randomisation_passes"] == 0  # |Spearman| counts
    assert json.dumps(table)  # the result is plain JSON
