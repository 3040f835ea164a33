"""benchmarks/bench_superres_dice.py on a tiny synthetic phantom (no data cache): the four inputs lie on the
thin grid, the thin original segments perfectly, interpolation loses through-plane detail, an untrained
network is the trilinear baseline; the evaluated cases are held out of both models' data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_superres_dice as bench
from medimg.config.generative import SuperresConfig
from medimg.data.synthetic import oblique_affine
from medimg.generative.superres_net import ResidualSR
from medimg.io.volume import Volume


def _phantom() -> tuple[Volume, np.ndarray]:
    """Two nested ellipsoids (labels 1 and 2, intensities 1 and 2), 1 mm, 16 slices along axis 2."""
    i, j, k = np.meshgrid(np.arange(24), np.arange(20), np.arange(16), indexing="ij")
    r_outer = ((i - 11.3) / 8) ** 2 + ((j - 9.6) / 7) ** 2 + ((k - 7.7) / 5.2) ** 2
    r_inner = ((i - 12.1) / 4) ** 2 + ((j - 10.2) / 3.5) ** 2 + ((k - 8.4) / 2.6) ** 2
    label = np.where(r_inner <= 1, 2, np.where(r_outer <= 1, 1, 0)).astype(np.int16)
    return Volume(label.astype(np.float32), oblique_affine(label.shape, (1.0, 1.0, 1.0), 12.0)), label


def _threshold(vol: Volume) -> np.ndarray:
    data = np.asarray(vol.data)  # thresholds off the 1/32 steps a 4x box + linear interpolation takes
    return ((data > 0.47).astype(np.int16) + (data > 1.47)).astype(np.int16)


def test_four_inputs_on_the_thin_grid_and_their_dice():
    thin, label = _phantom()
    cfg = SuperresConfig(factor=4, axis=2, features=4, layers=2, patch_size=(16, 16, 16))
    net = ResidualSR(4, 2).eval()  # untrained: its last layer is zero, so it is trilinear interpolation
    vols = bench.candidates(thin, net, cfg)
    assert set(vols) == set(bench.CONDITIONS)
    for vol in vols.values():
        assert vol.shape == thin.shape and np.array_equal(vol.affine, thin.affine)
    np.testing.assert_allclose(vols["sr"].data, vols["trilinear"].data, atol=1e-4)
    assert not np.allclose(vols["trilinear"].data, thin.data, atol=0.1)  # thick slices lost detail

    row = bench.score_case(thin, label, net, cfg, _threshold)
    assert row["dice_1_thin"] == row["dice_2_thin"] == row["dice_mean_thin"] == 1.0
    assert 0.3 < row["dice_mean_trilinear"] < 0.99 and 0.3 < row["dice_mean_bspline"] < 0.99
    assert row["dice_mean_sr"] == pytest.approx(row["dice_mean_trilinear"], abs=1e-9)
    assert row["dice_mean_trilinear"] == pytest.approx(
        (row["dice_1_trilinear"] + row["dice_2_trilinear"]) / 2
    )


def test_summary_gives_means_with_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, 30)
    frame = pd.DataFrame(
        {
            "dice_mean_thin": base + 0.1,
            "dice_mean_trilinear": base,
            "dice_mean_bspline": base + 0.01,
            "dice_mean_sr": base + 0.03,
        }  # fmt: skip
    )
    out = bench.summarise(frame, n_boot=300)
    est, low, high = out["diff_vs_trilinear"]
    assert est == pytest.approx(0.03, abs=1e-4) and low <= est <= high
    assert out["diff_vs_bspline"][0] == pytest.approx(0.02, abs=1e-4)
    assert out["cases_sr_better_than_trilinear"] == 30
    est, low, high = out["dice_mean_thin"]
    assert est == pytest.approx(base.mean() + 0.1, abs=1e-4) and low < est < high


def test_evaluated_cases_are_held_out_of_both_models(tmp_path):
    def manifest(name: str, splits: dict[str, str]) -> str:
        rows = [
            {"case_key": c, "image": f"{c}.nii.gz", "label": f"{c}_l.nii.gz", "split": s}
            for c, s in splits.items()
        ]
        pd.DataFrame(rows).to_csv(tmp_path / name, index=False)
        return tmp_path / name

    seg = manifest("seg.csv", {"a": "train", "b": "val", "c": "test", "d": "test", "e": "test"})
    sr = manifest("sr.csv", {"a": "train", "b": "train", "c": "val", "d": "test", "e": "test"})
    assert bench.evaluation_cases(seg, sr)["case_key"].tolist() == ["d", "e"]
    # a case listed twice (held out and trained on) is refused, and so is an empty intersection
    dup = tmp_path / "dup.csv"
    pd.concat(
        [pd.read_csv(sr), pd.DataFrame([{"case_key": "e", "image": "e.nii.gz", "split": "train"}])]
    ).to_csv(dup, index=False)
    with pytest.raises(SystemExit, match="1 seen"):
        bench.evaluation_cases(seg, dup)
    with pytest.raises(SystemExit, match="0 in both"):
        bench.evaluation_cases(seg, manifest("none.csv", {"a": "test", "b": "test"}))


def test_skips_naming_the_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CACHE", tmp_path / "nowhere")
    result = bench.measure(tmp_path / "work")
    assert set(result) == {"skipped"} and str(tmp_path / "nowhere") in result["skipped"]
