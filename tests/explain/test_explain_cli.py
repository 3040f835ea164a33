"""``medimg explain`` end to end: a trained-model folder / MLflow run, a manifest, reports, MLflow artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medimg.cli.main import main
from medimg.errors import EXIT_INPUT_ERROR

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 4-case synthetic study (oblique, anisotropic), a model folder, one case made unreadable."""
    from medimg.config.load import parse_workflow
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
    from medimg.inference.model_io import save_trained
    from medimg.models.networks import build_model

    root = tmp_path_factory.mktemp("explain_cli")
    manifest = write_synthetic_study(
        root / "data", cases=4, seed=0, grid=SyntheticGrid(shape=(40, 36, 20), spacing=(1.6, 1.6, 2.5))
    )
    raw = yaml.safe_load(Path("workflows/quickstart_cls.yaml").read_text())
    raw["data"]["manifest"] = str(manifest)
    raw["data"].pop("synthetic", None)
    raw["preprocessing"]["spatial_size"] = [32, 32, 32]
    raw["tracking"]["uri"] = f"sqlite:///{root / 'mlflow.db'}"
    wf = parse_workflow(raw)
    torch.manual_seed(0)
    save_trained(build_model(wf), wf, root / "model")
    bad = root / "data" / "cases" / "case_0003" / "image.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    return root, manifest


def _check_maps(out, data):
    for case in ("case_0000", "case_0001", "case_0002"):
        src = nib.load(str(data / "cases" / case / "image.nii.gz"))
        cam = nib.load(str(out / case / "gradcam.nii.gz"))
        assert cam.shape == src.shape == (40, 36, 20)
        np.testing.assert_allclose(cam.affine, src.affine, atol=1e-5)
        assert np.isfinite(np.asarray(cam.dataobj)).all()


def test_cli_over_a_manifest_with_one_truncated_case(study, capsys):
    root, manifest = study
    out = root / "out_folder"
    code = main(
        ["explain", "--model", str(root / "model"), str(manifest), "--out", str(out), "--no-progress"]
    )
    assert code == 1  # one failed case
    printed = capsys.readouterr().out
    assert "explained 3 of 4 cases; 1 failed" in printed and "FAILED case_0003" in printed
    _check_maps(out, root / "data")
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["case_key"]: r for r in summary["cases"]}
    assert rows["case_0003"]["status"] == "failed"
    assert rows["case_0000"]["reference"] == 1  # the manifest's class column (workflow data.label_column)
    gradcam = rows["case_0000"]["methods"]["gradcam"]["params"]
    assert gradcam["layer"] == "features.5" and gradcam["feature_grid"]["alignment"] == "traced"
    page = (out / "case_0000" / "report.html").read_text()
    assert "alignment traced" in page  # where the layer's cells were drawn, in the method's parameters
    assert "Through the lesion/organ centre" in page  # the manifest's lesion column
    assert "quickstart_cls (patchnet)" in page
    assert 'href="case_0000/report.html"' in (out / "index.html").read_text()


def test_cli_with_mlflow_run_logs_artifacts(study, capsys):
    import mlflow

    root, manifest = study
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("explain-test", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(root / "model"), "model")
    out = root / "out_run"
    code = main(
        [
            "explain",
            "--run",
            run.info.run_id,
            "--tracking-uri",
            uri,
            str(manifest),
            "--out",
            str(out),
            "--method",
            "gradcam",
            "--method",
            "gradcam++",
            "--target-class",
            "1",
            "--no-progress",
        ]
    )
    assert code == 1
    _check_maps(out, root / "data")
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "explain")}
    assert {"explain/index.html", "explain/summary.json", "explain/case_0000"} <= logged
    metrics = client.get_run(run.info.run_id).data.metrics
    assert "explain.gradcam.mean_spearman" in metrics and "explain.gradcam_pp.mean_deletion_auc" in metrics
    page = (out / "case_0001" / "report.html").read_text()
    assert run.info.run_id in page and "class = 1" in page


def test_cli_refuses_ambiguous_model_and_wrong_method(study, capsys):
    root, manifest = study
    code = main(
        [
            "explain",
            "--model",
            str(root / "model"),
            "--run",
            "0" * 32,
            str(manifest),
            "--out",
            str(root / "x"),
        ]
    )
    assert code == EXIT_INPUT_ERROR and "exactly one of --run" in capsys.readouterr().err
    code = main(
        [
            "explain",
            "--model",
            str(root / "model"),
            str(manifest),
            "--out",
            str(root / "x"),
            "--method",
            "seg-gradcam",
        ]
    )
    assert code == EXIT_INPUT_ERROR and "for segmentation models" in capsys.readouterr().err


def test_cli_with_checkpoint_and_workflow(study, capsys):
    from medimg.config.load import load_workflow, workflow_to_dict
    from medimg.inference.model_io import load_trained

    root, manifest = study
    tm = load_trained(root / "model")
    ckpt = root / "last.ckpt"
    torch.save(
        {
            "hyper_parameters": {"workflow": workflow_to_dict(tm.workflow)},
            "state_dict": {f"net.{k}": v for k, v in tm.model.state_dict().items()},
        },
        ckpt,
    )
    wf_path = root / "model" / "workflow.yaml"
    assert load_workflow(wf_path).model.name == "patchnet"
    out = root / "out_ckpt"
    code = main(
        [
            "explain",
            "--checkpoint",
            str(ckpt),
            "--workflow",
            str(wf_path),
            str(manifest),
            "--out",
            str(out),
            "--no-progress",
            "--no-sanity",
        ]
    )
    assert code == 1
    _check_maps(out, root / "data")
    code = main(
        [
            "explain",
            "--model",
            str(root / "model"),
            "--workflow",
            str(wf_path),
            str(manifest),
            "--out",
            str(out),
        ]
    )
    assert code == EXIT_INPUT_ERROR and "--workflow goes with --checkpoint" in capsys.readouterr().err
