"""End to end through the real CLI (``main(argv)``): run, MLflow lineage, predict, evaluate, errors."""

from __future__ import annotations

import json

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _tiny import TINY, write_wf

from medimg.cli.main import main
from medimg.config.load import config_hash, load_workflow
from medimg.errors import EXIT_INPUT_ERROR
from tests.e2e.seg_model_folder import SEG_MODEL_ARTIFACTS


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    import os

    old = os.getcwd()
    os.chdir(root)
    try:
        wf = write_wf(root / "tiny.yaml", TINY)
        assert main(["run", str(wf)]) == 0
    finally:
        os.chdir(old)
    return root, wf


def test_run_logs_full_lineage_to_mlflow(finished_run):
    root, wf_path = finished_run
    out = root / "runs/tiny_seg"
    info = json.loads((out / "run.json").read_text())
    client = mlflow.MlflowClient(info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert info["tracking_uri"].startswith("sqlite:///") and (root / "runs/mlflow.db").exists()
    assert run.data.params["optim.lr"] == "0.001"
    assert run.data.params["model.name"] == "unet"
    import os

    os.chdir(root)
    assert run.data.tags["medimg.config_hash"] == config_hash(load_workflow(wf_path))
    assert len(run.data.tags["medimg.manifest_hash"]) == 64
    # the planner's choices for this machine, with its reasons (cache mode auto: the tiny study fits RAM)
    plan = run.data.tags["medimg.plan"]
    assert plan.startswith("cache_mode=memory, patch_batch=2;") and "free RAM -> memory" in plan
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert "test_dice_mean" in run.data.metrics and 0.0 <= run.data.metrics["test_dice_mean"] <= 1.0
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"workflow.resolved.yaml", "model", "data", "evaluation", "checkpoints"} <= arts
    model_arts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert model_arts == SEG_MODEL_ARTIFACTS  # the model folder (tests/e2e/seg_model_folder.py)
    per_case = pd.read_csv(out / "test_per_case.csv")
    assert {"dice_1", "hd95_1", "dice_2", "site", "patient_key"} <= set(per_case.columns)
    assert set(per_case.case_key) <= set(pd.read_csv(out / "manifest.csv").query("split == 'test'").case_key)


def test_predict_writes_masks_in_input_geometry(finished_run, tmp_path):
    root, _ = finished_run
    manifest = pd.read_csv(root / "data/synth/manifest.csv")
    images = [str(root / "data/synth" / p) for p in manifest.image[:3]]
    out = tmp_path / "pred"
    assert (
        main(["predict", str(root / "runs/tiny_seg/model"), *images, "--out", str(out), "--no-progress"]) == 0
    )
    for img_path, key in zip(images, manifest.case_key[:3], strict=True):
        src = nib.load(img_path)
        mask = nib.load(next(out.rglob(f"*{key}*/mask.nii.gz")))
        assert mask.shape == src.shape
        np.testing.assert_array_equal(mask.affine, src.affine)
        assert mask.get_data_dtype() == np.uint8
    # a rerun skips every case
    assert (
        main(["predict", str(root / "runs/tiny_seg/model"), *images, "--out", str(out), "--no-progress"]) == 0
    )


def test_misspelled_key_stops_before_training(tmp_path, capsys):
    bad = json.loads(json.dumps(TINY))
    bad["optim"]["learning_rate"] = 0.1
    rc = main(["run", str(write_wf(tmp_path / "bad.yaml", bad))])
    err = capsys.readouterr().err
    assert rc == EXIT_INPUT_ERROR
    assert "optim.learning_rate: unknown key" in err and "lr" in err
    assert not (tmp_path / "runs/tiny_seg").exists()


def test_missing_file_and_label_mismatch_stop_before_training(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "--cases", "6", "--shape", "20", "20", "12"]) == 0
    df = pd.read_csv(tmp_path / "d/manifest.csv")
    lab = nib.load(tmp_path / "d" / df.label[1])
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:, :, :-1], lab.affine), tmp_path / "d/short.nii.gz")
    df.loc[1, "label"] = "short.nii.gz"
    df.to_csv(tmp_path / "d/manifest.csv", index=False)
    wf = json.loads(json.dumps(TINY))
    wf["data"]["manifest"] = str(tmp_path / "d/manifest.csv")
    rc = main(["run", str(write_wf(tmp_path / "wf.yaml", wf))])
    err = capsys.readouterr().err
    assert rc == EXIT_INPUT_ERROR and "short.nii.gz has shape (20, 20, 11)" in err and "(20, 20, 12)" in err
    df.loc[1, "label"] = "gone.nii.gz"
    df.to_csv(tmp_path / "d/manifest.csv", index=False)
    rc = main(["run", str(tmp_path / "wf.yaml"), "--check"])
    err = capsys.readouterr().err
    assert rc == EXIT_INPUT_ERROR and "case 'case_0001': label file not found" in err and "gone.nii.gz" in err
    assert not (tmp_path / "runs/tiny_seg/checkpoints").exists()


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("synth", "run", "predict", "evaluate", "schema"):
        assert cmd in text
    for cmd in ("run", "predict", "synth", "schema", "evaluate"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "usage: medimg " + cmd in capsys.readouterr().out


def test_evaluate_writes_report_and_logs_to_run(finished_run, capsys):
    root, _ = finished_run
    model = root / "runs/tiny_seg/model"
    out = root / "eval_out"
    rc = main(
        ["evaluate", str(model), "--split", "all", "--by", "site", "--out", str(out), "--n-boot", "200"]
    )
    assert rc == 0, capsys.readouterr().err
    per_case = pd.read_csv(out / "per_case.csv")
    assert len(per_case) == 8 and {"dice_1", "hd95_2", "site"} <= set(per_case.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert "metrics" in summary
    html = (out / "report.html").read_text()
    assert "<img" in html and "http://" not in html and "https://" not in html
    info = json.loads((root / "runs/tiny_seg/run.json").read_text())
    client = mlflow.MlflowClient(info["tracking_uri"])
    names = {a.path for a in client.list_artifacts(info["run_id"], "evaluation/report")}
    assert "evaluation/report/report.html" in names


def test_evaluate_compare_two_runs_reports_paired_difference(finished_run, tmp_path):
    root, _ = finished_run
    model = root / "runs/tiny_seg/model"
    baseline = tmp_path / "baseline.csv"
    # a "second run" that is better by 0.2 Dice on every case: the paired difference must say so
    common = ["evaluate", str(model), "--split", "all", "--no-log", "--n-boot", "200"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    per_case = pd.read_csv(tmp_path / "a/per_case.csv")
    better = per_case.assign(dice_1=(per_case["dice_1"] + 0.2).clip(upper=1))
    better.to_csv(baseline, index=False)
    assert main([*common, "--compare", str(baseline), "--out", str(tmp_path / "b")]) == 0
    comp = json.loads((tmp_path / "b/summary.json").read_text())["comparison"]["metrics"]["dice_1"]
    assert comp["difference"]["estimate"] < -0.1  # this run minus the comparison
    assert comp["difference"]["high"] < 0 and 0.0 <= comp["p_value"] < 0.05
