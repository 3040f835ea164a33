"""task superres end to end through `medimg run`: outputs on the thin grid, metrics against both baselines, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import small_superres

from medimg.cli.main import main
from medimg.errors import ConfigError
from medimg.generative.apply import load_anomaly_model
from medimg.generative.cohort import predict_generative
from medimg.inference.request import PredictRequest
from medimg.io.load import load_image

ROOT = Path(__file__).resolve().parents[2]


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def test_quickstart_superres_runs_through_the_cli(tmp_path, capsys):
    small = small_superres(epochs=3, shape=(24, 24, 26))
    args = ["run", str(ROOT / "workflows/quickstart-superres.yaml"), "--json"]
    assert main([*args, *[a for s in small for a in ("--set", s)]]) == 0
    doc = json.loads(capsys.readouterr().out)
    out = Path(doc["out_dir"])
    per_case = pd.read_csv(out / "test_per_case.csv")
    manifest = pd.read_csv(out / "manifest.csv").set_index("case_key")
    assert len(per_case) == (manifest["split"] == "test").sum() >= 2
    for row in per_case.itertuples():
        thin = load_image(manifest.loc[row.case_key, "image"])
        sr, thick = load_image(out / row.sr), load_image(out / row.thick)
        assert thin.shape == (24, 24, 26) and sr.shape == (24, 24, 24) and thick.shape == (24, 24, 6)
        np.testing.assert_allclose(thick.spacing[2], 4 * thin.spacing[2], rtol=1e-5)
        # the output's voxels sit where the thin scan's (cropped to 24 slices) do, on an oblique grid
        np.testing.assert_allclose(_world(sr.affine, sr.shape), _world(thin.affine, sr.shape), atol=1e-3)
        assert abs(thin.affine[0, 1]) > 0.01  # the test grid really is oblique
    m = doc["metrics"]
    for method in ("sr", "trilinear", "bspline"):
        assert 10 < m[f"test_psnr_{method}"] < 60 and 0 < m[f"test_ssim_{method}"] <= 1
    # the network starts as linear interpolation and keeps its best validation epoch
    assert m["test_psnr_sr"] >= m["test_psnr_trilinear"] - 0.5
    run = mlflow.MlflowClient(doc["tracking_uri"]).get_run(doc["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["medimg.task"] == "superres"
    assert run.data.metrics["test_psnr_sr"] == pytest.approx(m["test_psnr_sr"])
    assert json.loads((out / "model" / "model.json").read_text())["factor"] == 4
    # medimg predict with the model folder super-resolves a thick series from disk as the study did
    first = per_case.iloc[0]
    request = PredictRequest(
        str(out / "model"), [str(out / first["thick"])], str(tmp_path / "sr"), progress=False
    )
    document, _, code = predict_generative(request)
    assert code == 0 and document["done"] == 1
    (written,) = (tmp_path / "sr" / "cases").glob("*/sr.nii.gz")
    again, study = load_image(written), load_image(out / first["sr"])
    np.testing.assert_allclose(again.affine, study.affine, atol=1e-6)
    np.testing.assert_allclose(again.data, study.data, atol=1e-4)
    with pytest.raises(ConfigError, match="a 'superres' model folder, expected task 'anomaly'"):
        load_anomaly_model(out / "model")


def test_workflow_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: superres\ndata: {manifest: m.csv}\nsuperres: {factor: 9, slices: 3}\n")
    assert main(["run", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "superres.factor" in err and "less than or equal to 8" in err
    assert "superres.slices: unknown key" in err
