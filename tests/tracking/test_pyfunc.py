"""The trained model as an MLflow pyfunc: logged, registered with an alias, loaded in a fresh process.

The pyfunc must give exactly the masks of ``medimg predict`` (same grid, same labels) for a
NIfTI file and a DICOM series folder, and its volumes must equal the cohort summary's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import TINY, train_tiny

from medimg.cli.main import main
from medimg.config.load import parse_workflow
from medimg.data.synthetic import SyntheticGrid, make_case
from medimg.inference.model_io import ARTIFACT_KEY, download_model_folder, load_trained, save_trained
from medimg.inference.predictor import Predictor
from medimg.inference.pyfunc import MedimgPyfunc, log_pyfunc_model, model_signature, output_columns
from medimg.io.dicom.write import write_series
from medimg.io.nifti import save_nifti
from medimg.models.networks import build_model

NAME = "tiny_seg_model"

FRESH = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = json.loads(sys.argv[2])
out = model.predict(pd.DataFrame(rows))
import medimg
out.attrs = {}
print("MEDIMG_FROM=" + medimg.__file__)
out.to_csv(sys.argv[3], index=False)
"""


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Train the tiny study, then log + register its pyfunc (timed)."""
    root = tmp_path_factory.mktemp("tiny")
    model_dir = train_tiny(root)
    run = json.loads((root / "runs/tiny_seg/run.json").read_text())
    t0 = time.perf_counter()
    uri = log_pyfunc_model(run["run_id"], model_dir, run["tracking_uri"], NAME)
    seconds = time.perf_counter() - t0
    return {"root": root, "model_dir": model_dir, "uri": uri, "seconds": seconds, **run}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """An oblique anisotropic NIfTI file and a DICOM series folder, neither seen in training."""
    folder = tmp_path_factory.mktemp("images")
    nifti = save_nifti(
        make_case(3, seed=9, grid=SyntheticGrid(shape=(30, 28, 18), spacing=(1.5, 1.8, 2.6))).image,
        folder / "scan_a.nii.gz",
    )
    series = folder / "scan_b"
    write_series(
        make_case(4, seed=9, grid=SyntheticGrid(shape=(32, 30, 12), spacing=(1.6, 1.7, 2.5))).image,
        series,
        rescale=(1.0, -1024.0),
    )
    return [Path(nifti), series]


def test_log_and_register_is_fast_and_linked_to_the_run(registered):
    assert registered["uri"] == f"models:/{NAME}@candidate"
    assert registered["seconds"] < 15, f"log + register took {registered['seconds']:.1f} s"
    client = mlflow.MlflowClient(registered["tracking_uri"])
    version = client.get_model_version_by_alias(NAME, "candidate")
    assert version.run_id == registered["run_id"]
    weights = (registered["model_dir"] / "model.safetensors").read_bytes()
    import hashlib

    assert version.tags["medimg.weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert version.tags["medimg.task"] == "segmentation"
    run = client.get_run(registered["run_id"])
    assert run.info.status == "FINISHED"  # the run keeps its status
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    mine = [m for m in logged if m.model_id == version.source.removeprefix("models:/")]
    assert [(m.name, m.source_run_id) for m in mine] == [("pyfunc", registered["run_id"])]


def test_logged_model_has_signature_pins_and_no_pickle(registered):
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=registered["uri"], tracking_uri=registered["tracking_uri"]
        )
    )
    info = mlflow.models.get_model_info(str(local))
    assert info.signature.inputs.input_names() == ["image", "output"]
    assert not info.signature.inputs.inputs[1].required
    assert info.signature.outputs.input_names() == [
        "image",
        "mask_path",
        "volume_ml_organ",
        "volume_ml_kidney",
        "status",
        "error",
    ]
    reqs = (local / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs
    assert any(r.startswith("monai==") for r in reqs) and any(r.startswith("mlflow==") for r in reqs)
    assert not list(local.rglob("*.pkl")), "the pyfunc is logged from code, never pickled"
    assert (local / "code/medimg/inference/pyfunc.py").is_file()
    folder = download_model_folder(registered["uri"], tracking_uri=registered["tracking_uri"])
    assert (folder / "model.safetensors").read_bytes() == (
        registered["model_dir"] / "model.safetensors"
    ).read_bytes()
    assert load_trained(folder).workflow.name == "tiny_seg"


def test_fresh_process_pyfunc_equals_medimg_predict(registered, images, tmp_path):
    out_dir = tmp_path / "pyfunc_masks"
    rows = [
        {"image": str(images[0]), "output": str(out_dir / "a.nii.gz")},
        {"image": str(images[1]), "output": str(out_dir / "b")},
        {"image": str(tmp_path / "missing.nii.gz"), "output": str(out_dir / "c.nii.gz")},
    ]
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    result_csv = tmp_path / "pyfunc.csv"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["tracking_uri"]}
    proc = subprocess.run(
        [sys.executable, str(script), registered["uri"], json.dumps(rows), str(result_csv)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "/code/medimg/" in proc.stdout  # the fresh process runs the code logged with the model
    got = pd.read_csv(result_csv, keep_default_na=False)
    assert list(got["status"]) == ["done", "done", "failed"]
    assert "missing.nii.gz: not found" in got.loc[2, "error"]

    cli_out = tmp_path / "cli"
    assert (
        main(
            [
                "predict",
                str(registered["model_dir"]),
                *map(str, images),
                "--out",
                str(cli_out),
                "--no-progress",
                "--dicom",
                "off",
            ]
        )
        == 0
    )
    summary = pd.read_csv(next(cli_out.glob("*.csv")))
    # the NIfTI file's case is named after the file; the DICOM folder's series after its pseudonymous keys
    prefixes = ("scan_a", "patient-")
    for i in range(len(images)):
        mask_path = Path(got.loc[i, "mask_path"])
        assert mask_path == [out_dir / "a.nii.gz", out_dir / "b/scan_b_mask.nii.gz"][i]  # file, or folder
        cli_mask = next(p for p in cli_out.rglob("mask.nii.gz") if p.parent.name.startswith(prefixes[i]))
        ours, ref = nib.load(mask_path), nib.load(cli_mask)
        assert ours.shape == ref.shape
        np.testing.assert_array_equal(ours.affine, ref.affine)
        np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))
        assert np.asarray(ours.dataobj).max() >= 1, "the tiny model finds the organ"
        row = summary[summary["case_id"].str.startswith(prefixes[i])].iloc[0]
        for label in ("organ", "kidney"):
            assert float(got.loc[i, f"volume_ml_{label}"]) == pytest.approx(
                row[f"volume_ml:{label}"], abs=1e-3
            )


def _cls_model(folder: Path) -> Path:
    wf = parse_workflow(
        {
            **TINY,
            "name": "tiny_cls",
            "task": "classification",
            "data": {**TINY["data"], "label_column": "class", "num_classes": 3, "labels": {}},
            "preprocessing": {**TINY["preprocessing"], "spatial_size": [16, 16, 16]},
            "augmentation": {"patch_size": None},
            "model": {"name": "resnet10", "params": {"widen_factor": 0.125}},
        },
        source="test",
    )
    torch.manual_seed(0)
    return save_trained(build_model(wf).eval(), wf, folder)


class _Context:
    def __init__(self, folder: Path) -> None:
        self.artifacts = {ARTIFACT_KEY: str(folder)}


def test_classification_pyfunc_gives_probabilities_and_prediction(tmp_path):
    torch.set_num_threads(1)
    folder = _cls_model(tmp_path / "cls_model")
    image = save_nifti(
        make_case(1, seed=3, grid=SyntheticGrid(shape=(24, 22, 14))).image, tmp_path / "c.nii.gz"
    )
    model = MedimgPyfunc()
    model.load_context(_Context(folder))
    out = model.predict(None, pd.DataFrame({"image": [str(image), str(tmp_path / "nope.nii.gz")]}))
    wf = model.trained.workflow
    assert (
        list(out.columns)
        == output_columns(wf)
        == ["image", "prob_0", "prob_1", "prob_2", "prediction", "status", "error"]
    )
    assert list(out["status"]) == ["done", "failed"]
    probs = out.loc[0, ["prob_0", "prob_1", "prob_2"]].to_numpy(dtype=float)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert out.loc[0, "prediction"] == int(np.argmax(probs))
    tm = load_trained(folder)
    ref = Predictor(tm.model, tm.workflow, device="cpu").predict_path(str(image)).probs
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    sig = model_signature(wf)
    assert [c.name for c in sig.outputs.inputs] == output_columns(wf)
    assert sig.params.params[0].name == "output_dir"


def test_pyfunc_logged_before_the_move_still_loads(registered, images, monkeypatch):
    """Pyfuncs logged before the pyfunc moved to medimg.inference import it from medimg.training.pyfunc."""
    import medimg.inference.pyfunc as pyfunc_module

    old = pyfunc_module._SCRIPT.replace("medimg.inference.pyfunc", "medimg.training.pyfunc")
    monkeypatch.setattr(pyfunc_module, "_SCRIPT", old)
    uri = log_pyfunc_model(registered["run_id"], registered["model_dir"], registered["tracking_uri"], None)
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=registered["tracking_uri"])
    )
    assert "from medimg.training.pyfunc import MedimgPyfunc" in (local / "medimg_pyfunc.py").read_text()
    model = mlflow.pyfunc.load_model(str(local))  # in this process: medimg is already imported
    assert type(model.unwrap_python_model()) is MedimgPyfunc
    out = model.predict(pd.DataFrame({"image": [str(images[0])]}))
    assert list(out["status"]) == ["done"], out.loc[0, "error"]
