"""`medimg predict` with an anomaly or super-resolution model folder: per-case outputs on the right grid,
the cohort table, one bad case recorded with its reason while the rest go on, a rerun that skips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medimg.cli.main import main
from medimg.config.generative import GenerativeWorkflow
from medimg.data.synthetic import oblique_affine
from medimg.generative import anomaly_study, superres_study
from medimg.generative.anomaly import AnomalyModel, preprocess
from medimg.generative.apply import load_anomaly_model
from medimg.generative.autoencoder import build_autoencoder
from medimg.generative.cohort import predict_generative_cohort
from medimg.generative.slices import thin_affine
from medimg.generative.superres_net import ResidualSR
from medimg.inference.cases import CaseInput
from medimg.inference.predict_cohort import cohort_runner
from medimg.inference.request import CohortRun
from medimg.io.load import load_image
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume


def superres_model(folder: Path, seed: int = 0) -> tuple[GenerativeWorkflow, ResidualSR]:
    """A small super-resolution model folder (4x along axis 2) with random, non-zero weights."""
    wf = GenerativeWorkflow.model_validate(
        {
            "task": "superres",
            "data": {"manifest": "m.csv"},
            "superres": {"factor": 4, "axis": 2, "features": 4, "layers": 2, "patch_size": [16, 16, 16]},
        }  # fmt: skip
    )
    torch.manual_seed(seed)
    net = ResidualSR(4, 2)
    torch.nn.init.normal_(net.body[-1].weight, std=0.05)  # not the identity: the network's residual shows
    superres_study.save_model(net.eval(), wf, folder)
    return wf, net


def thick_scans(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        affine = oblique_affine((20, 18, 5), (1.0, 1.2, 4.0), 8.0 + 3 * i)
        data = rng.normal(100, 20, (20, 18, 5)).astype(np.float32)
        paths.append(save_nifti(Volume(data, affine), folder / f"thick{i}.nii.gz"))
    return paths


def test_superres_cohort_through_the_cli(tmp_path, capsys):
    wf, net = superres_model(tmp_path / "model")
    inputs = thick_scans(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.nii.gz").write_bytes(inputs[0].read_bytes()[:200])  # truncated
    args = [
        "predict",
        str(tmp_path / "model"),
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    assert main([*args, "--no-progress"]) == 1  # one case failed, the others done
    doc = json.loads(capsys.readouterr().out)
    assert (doc["done"], doc["failed"], doc["skipped"]) == (3, 1, 0)
    out = tmp_path / "out"
    summary = pd.read_csv(out / "cohort.csv").set_index("case_id")
    assert summary.loc["broken", "status"] == "failed" and "broken.nii.gz" in summary.loc["broken", "reason"]
    table = pd.read_csv(out / "superres.csv")
    assert table["case_id"].tolist() == ["thick0", "thick1", "thick2"]
    assert (table["output_shape"] == "20x18x20").all() and (table["factor"] == 4).all()
    for path in inputs:
        thick = load_image(path)
        sr = load_image(out / "cases" / path.name[: -len(".nii.gz")] / "sr.nii.gz")
        assert sr.shape == (20, 18, 20)
        np.testing.assert_allclose(sr.affine, thin_affine(thick.affine, 2, 4), atol=1e-5)
        expected = superres_study.super_resolve(net, thick, wf.superres)
        np.testing.assert_allclose(sr.data, expected.data, atol=1e-4)
        # the thin slices of each thick slice tile it: their mean position is the thick slice's centre
        centre = thin_affine(thick.affine, 2, 4)[:3, :3] @ [0, 0, 1.5] + sr.affine[:3, 3]
        np.testing.assert_allclose(centre, thick.affine[:3, 3], atol=1e-4)
    assert main([*args, "--no-progress"]) == 1  # the rerun skips the done cases, the broken one fails again
    doc = json.loads(capsys.readouterr().out)
    assert (doc["done"], doc["skipped"], doc["failed"]) == (0, 3, 1)


def test_predict_refuses_options_a_generative_folder_does_not_take(tmp_path, capsys):
    superres_model(tmp_path / "model")
    inputs = thick_scans(tmp_path / "in", 1)
    code = main(["predict", str(tmp_path / "model"), str(inputs[0]), "--out", str(tmp_path / "o"), "--tta"])
    err = capsys.readouterr().err
    assert (
        code not in (0, 1)
        and "--tta" in err
        and "superres model folder does not take --tta" in err
        and "Traceback" not in err
    )
    assert cohort_runner(str(tmp_path / "model")).__name__ == "predict_generative"
    assert cohort_runner(str(tmp_path)).__name__ == "predict_cohort"


def test_anomaly_cohort_maps_on_each_input_grid(tmp_path):
    wf = GenerativeWorkflow.model_validate(
        {
            "task": "anomaly",
            "data": {"manifest": "m.csv"},
            "preprocessing": {"spacing": [3.0, 3.0, 3.0], "spatial_size": [16, 16, 16]},
            "anomaly": {"channels": [4, 8], "strides": [2, 2], "smoothing_mm": 3.0},
        }  # fmt: skip
    )
    torch.manual_seed(0)
    normal_sd = np.random.default_rng(0).uniform(0.5, 1.5, (16, 16, 16)).astype(np.float32)
    model = AnomalyModel(build_autoencoder(wf.anomaly).eval(), normal_sd, 0.5, 3.0, "max", threshold=0.8)
    anomaly_study.save_model(model, wf, tmp_path / "model")
    rng = np.random.default_rng(2)
    shapes = [(20, 18, 14), (16, 22, 12)]
    paths = [
        save_nifti(
            Volume(rng.normal(size=s).astype(np.float32), oblique_affine(s, (2.0, 2.5, 3.0), 15.0 + i)),
            tmp_path / "in" / f"scan{i}.nii.gz",
        )  # fmt: skip
        for i, s in enumerate(shapes)
    ]
    cases = [CaseInput(p.name[: -len(".nii.gz")], (p,)) for p in [*paths, tmp_path / "in" / "gone.nii.gz"]]
    report = predict_generative_cohort(tmp_path / "model", CohortRun(cases, tmp_path / "out"))
    assert (report.done, report.failed, report.exit_code) == (2, 1, 1)
    wf, loaded = load_anomaly_model(tmp_path / "model")  # the map computed directly, no cohort
    reference = {p.name[: -len(".nii.gz")]: loaded.source_map(preprocess(wf, str(p), "ref")) for p in paths}
    table = pd.read_csv(tmp_path / "out" / "anomaly_scores.csv").set_index("case_id")
    assert table.index.tolist() == ["scan0", "scan1"]
    for path, shape in zip(paths, shapes, strict=True):
        key = path.name[: -len(".nii.gz")]
        amap = load_image(tmp_path / "out" / "cases" / key / "anomaly.nii.gz")
        source = load_image(path)
        assert amap.shape == shape and np.allclose(amap.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(amap.data, reference[key], atol=1e-5)
        doc = json.loads((tmp_path / "out" / "cases" / key / "anomaly.json").read_text())
        assert doc["score"] == pytest.approx(float(np.max(amap.data)), rel=1e-5) and doc["score"] > 0
        assert doc["flagged"] == (doc["score"] > 0.8) and doc["threshold"] == 0.8
        assert table.loc[key, "score"] == pytest.approx(doc["score"])
