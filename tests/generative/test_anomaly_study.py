"""Done-when of task anomaly: trained on normal cases only, it finds lesions it never saw."""

from __future__ import annotations

import os
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import anomaly_workflow

from medimg.generative.run import run_generative
from medimg.io.load import load_image


@pytest.mark.slow
def test_unseen_lesions_are_found_and_mapped_in_the_source_geometry(tmp_path, capsys):
    wf = anomaly_workflow(tmp_path)
    load0, t0, cpu0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    res = run_generative(wf)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    with capsys.disabled():
        print(
            f"\nanomaly study: {wall:.0f} s wall, {cpu:.0f} s CPU (load average {load0:.1f} -> {os.getloadavg()[0]:.1f}); "
            f"metrics {dict(sorted(res.metrics.items()))}"
        )
    assert cpu < 300, "the whole study (preprocessing, training, maps) within 5 minutes of CPU time"
    per_case = pd.read_csv(res.out_dir / "test_per_case.csv")
    assert set(per_case["case_key"]) == set(
        pd.read_csv(res.out_dir / "manifest.csv").query("split == 'test'")["case_key"]
    )
    assert res.metrics["test_auroc"] >= 0.9
    assert res.metrics["test_peak_in_lesion_rate"] >= 0.8
    assert per_case["target"].sum() >= 5 and (per_case["target"] == 0).sum() >= 3
    assert 0 <= res.metrics["test_voxel_auprc"] <= 1
    assert res.metrics["test_voxel_auprc"] > 0.3  # chance is the lesion voxels' share, under 1 %
    # every map lies on its input's grid: same shape, same affine
    manifest = pd.read_csv(res.out_dir / "manifest.csv").set_index("case_key")
    for row in per_case.itertuples():
        amap, image = load_image(res.out_dir / row.map), load_image(manifest.loc[row.case_key, "image"])
        assert amap.shape == image.shape
        np.testing.assert_allclose(amap.affine, image.affine, atol=1e-5)
    html = (res.out_dir / "report.html").read_text()
    assert all(k in html for k in per_case["case_key"]) and "test_auroc" in html
    run = mlflow.MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_auroc"] == pytest.approx(res.metrics["test_auroc"])
    assert run.data.tags["medimg.task"] == "anomaly" and len(run.data.tags["medimg.config_hash"]) == 64
