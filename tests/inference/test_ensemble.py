"""Ensembles: the mean of the members' probabilities, exactly; every member named in the records;
a --folds study (folder or parent run) stands for its members; predict and evaluate take them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from _models import built_model

from medimg.cli.main import main
from medimg.errors import ConfigError
from medimg.inference.ensemble import EnsemblePredictor, expand_members, load_ensemble, make_predictor
from medimg.inference.model_io import load_trained, save_trained
from medimg.inference.predictor import Predictor
from medimg.inference.resample import resample_labels
from medimg.io.nifti import load_nifti

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from dicom_phantoms import phantom


def _image(tmp_path: Path) -> str:
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    manifest = write_synthetic_study(
        tmp_path / "data", cases=4, seed=5, grid=SyntheticGrid(shape=(32, 30, 20))
    )
    return str(manifest.parent / pd.read_csv(manifest)["image"][0])


@pytest.mark.parametrize("tta", [False, True])
def test_the_ensemble_probability_is_the_mean_of_the_members(tmp_path: Path, tta: bool) -> None:
    models = [str(built_model(tmp_path / f"m{s}", seed=s)) for s in (0, 1, 2)]
    ens = load_ensemble(models)
    for m in ens.members:
        m.workflow.inference.tta_flips = tta
    predictor = make_predictor(ens, device="cpu")
    assert isinstance(predictor, EnsemblePredictor) and len(predictor.members) == 3
    item = predictor.preprocess(_image(tmp_path))
    x = item["image"].as_tensor().unsqueeze(0)
    got = predictor.probabilities(x)
    singles = [Predictor(m.model, m.workflow, "cpu").probabilities(x) for m in ens.members]
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)  # the members really differ
    torch.testing.assert_close(got, sum(singles) / 3, atol=1e-6, rtol=0)
    # the mask is the mean's argmax on the source grid
    pred = predictor.predict_item(item, "c")
    meta = item["image"].meta
    expected = resample_labels(
        (sum(singles) / 3)[0],
        np.asarray(item["image"].affine),
        pred.source_shape,
        np.asarray(meta["original_affine"]),
    )
    np.testing.assert_array_equal(pred.mask, expected)
    # one member is a plain predictor, as before
    single = make_predictor(load_ensemble(models[:1]), device="cpu")
    assert type(single) is Predictor


def test_members_that_would_not_average_are_refused_naming_both_and_the_key(tmp_path: Path) -> None:
    a = built_model(tmp_path / "a", seed=0)
    tm = load_trained(a)
    wf = tm.workflow.model_copy(deep=True)
    wf.preprocessing.spacing = (2.0, 2.0, 2.0)
    save_trained(tm.model, wf, tmp_path / "b")
    with pytest.raises(ConfigError, match=r"b differs from .*a in preprocessing"):
        load_ensemble([str(a), str(tmp_path / "b")])
    with pytest.raises(ConfigError, match="neither a model folder"):
        load_ensemble([str(tmp_path)])
    with pytest.raises(ConfigError, match="give at least one model"):
        load_ensemble([])


def test_a_folds_output_folder_stands_for_its_members_in_repeats_order(tmp_path: Path) -> None:
    study = tmp_path / "cv"
    for fold in (1, 0):
        built_model(study / f"fold{fold}_seed7" / "model", seed=fold)
    pd.DataFrame({"fold": [0, 1], "seed": [7, 7], "run_id": ["r0", "r1"]}).to_csv(
        study / "repeats.csv", index=False
    )
    refs, parent = expand_members([str(study)])
    assert (
        refs == [str(study / "fold0_seed7" / "model"), str(study / "fold1_seed7" / "model")]
        and parent is None
    )
    (study / "fold1_seed7" / "model" / "workflow.yaml").unlink()
    with pytest.raises(ConfigError, match=r"repeats.csv: member fold1_seed7 has no model folder"):
        expand_members([str(study)])


def test_predict_with_repeated_model_names_every_member_in_seg_sr_and_ensemble_json(tmp_path: Path) -> None:
    from medimg.io.dicom.write import write_series

    write_series(phantom("axial", shape=(32, 30, 12), spacing=(1.6, 1.7, 2.5), seed=1), tmp_path / "ct",
                 rescale=(1.0, -1024.0))  # fmt: skip
    models = [str(built_model(tmp_path / f"m{s}", seed=s)) for s in (0, 1)]
    shas = [load_trained(m).weights_sha256 for m in models]
    out = tmp_path / "out"
    argv = ["predict", "--model", models[0], "--model", models[1], str(tmp_path / "ct"), "--out", str(out)]
    assert main([*argv, "--no-progress", "--json"]) == 0
    record = json.loads((out / "ensemble.json").read_text())
    assert [m["weights_sha256"] for m in record["members"]] == shas
    assert [m["source"] for m in record["members"]] == models
    (case,) = [p for p in (out / "cases").iterdir() if p.is_dir()]
    seg = pydicom.dcmread(case / "seg.dcm")
    params = str(seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters)
    assert all(f"member{i}_weights_sha256={sha}" in params for i, sha in enumerate(shas, start=1))
    assert f"weights_sha256={record['weights_sha256']}" in params
    texts: list[str] = []

    def walk(ds: pydicom.Dataset) -> None:
        for e in ds:
            if e.VR == "SQ":
                for item in e.value:
                    walk(item)
            elif e.VR in ("UT", "LT", "ST", "LO"):
                texts.append(str(e.value))

    walk(pydicom.dcmread(case / "sr.dcm"))  # the SR's algorithm parameters name each member
    assert all(f"member{i}_weights_sha256={sha}" in texts for i, sha in enumerate(shas, start=1))
    # the written mask is the ensemble's, not a member's
    ens = load_ensemble(models)
    pred = make_predictor(ens, device="cpu").predict_path(str(tmp_path / "ct"))
    np.testing.assert_array_equal(np.asarray(load_nifti(case / "mask.nii.gz").data), pred.mask)
    assert ens.weights_sha256 == record["weights_sha256"] != shas[0]


@pytest.mark.slow
def test_evaluate_scores_the_ensemble_of_a_folds_parent(tmp_path: Path) -> None:
    import mlflow
    from _tiny import TINY, write_wf

    os.chdir(tmp_path)
    wf = json.loads(json.dumps(TINY))
    wf["trainer"]["max_epochs"] = 1
    assert main(["run", str(write_wf(tmp_path / "tiny.yaml", wf)), "--folds", "2"]) == 0
    study = tmp_path / "runs" / "tiny_seg"
    children = pd.read_csv(study / "repeats.csv")
    assert main(["evaluate", str(study), "--n-boot", "50", "--json"]) == 0
    record = json.loads((study / "evaluation" / "ensemble.json").read_text())
    assert [m["source"] for m in record["members"]] == [
        str(study / f"fold{f}_seed1" / "model") for f in (0, 1)
    ]
    per_case = pd.read_csv(study / "evaluation" / "per_case.csv")
    manifest = pd.read_csv(study / "fold0_seed1" / "manifest.csv")
    assert sorted(per_case["case_key"]) == sorted(manifest[manifest.split == "test"]["case_key"])
    # the scores are the ensemble's: its mask scored again by hand gives the same Dice
    ens = load_ensemble([str(study)])
    row = manifest[manifest.split == "test"].iloc[0]
    image, label = (
        Path(row[c]) if Path(row[c]).is_absolute() else tmp_path / "data/synth" / row[c]
        for c in ("image", "label")
    )
    mask = make_predictor(ens, device="cpu").predict_path(str(image)).mask
    ref = np.asarray(load_nifti(label).data)
    dice1 = 2 * ((mask == 1) & (ref == 1)).sum() / ((mask == 1).sum() + (ref == 1).sum())
    assert per_case.set_index("case_key").loc[row["case_key"], "dice_1"] == pytest.approx(dice1, abs=1e-6)
    # each fold chose its postprocessing on its validation split, logged it, and its own test scoring
    # applied it exactly as predict does
    fold0 = study / "fold0_seed1"
    member = load_trained(fold0 / "model")
    assert member.postprocessing is not None and member.postprocessing.validation["n_cases"] >= 1
    child = mlflow.MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db").get_run(children["run_id"][0])
    for k in (1, 2):
        assert child.data.params[f"postprocess.label_{k}"] == member.postprocessing.steps.get(k, "none")
    scored = np.asarray(load_nifti(fold0 / "test_predictions" / f"{row['case_key']}.nii.gz").data)
    np.testing.assert_array_equal(
        scored, make_predictor(load_ensemble([str(fold0 / "model")]), "cpu").predict_path(str(image)).mask
    )
    # logged to the parent run, naming both child runs
    uri = f"sqlite:///{tmp_path}/runs/mlflow.db"
    client = mlflow.MlflowClient(uri)
    parent_id = client.get_run(children["run_id"][0]).data.tags["mlflow.parentRunId"]
    tags = client.get_run(parent_id).data.tags
    assert tags["medimg.ensemble_members"].split(",") == list(children["run_id"])
    assert tags["medimg.ensemble_weights_sha256"] == record["weights_sha256"]
    # the parent run id stands for its members in predict too
    argv = ["predict", "--model", parent_id, str(image), "--out", "p", "--tracking-uri", uri, "--no-progress"]
    assert main(argv) == 0
    from_run = json.loads((tmp_path / "p" / "ensemble.json").read_text())
    assert from_run["parent_run_id"] == parent_id
    assert [m["run_id"] for m in from_run["members"]] == list(children["run_id"])
    assert from_run["weights_sha256"] == record["weights_sha256"]


def test_predict_without_any_model_says_what_to_give(capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--out", "p"]) == 3
    assert "give a MODEL (or --model, repeatable, for an ensemble)" in capsys.readouterr().err


def test_a_folds_parent_run_with_an_unfinished_child_is_refused_naming_it(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("cv")
    parent = client.create_run(exp, run_name="cv-repeats").info.run_id
    client.log_param(parent, "repeats.folds", "2")
    ids = []
    for fold, status in ((0, "FINISHED"), (1, "FAILED")):
        child = client.create_run(exp, run_name=f"cv-fold{fold}", tags={"mlflow.parentRunId": parent})
        client.set_terminated(child.info.run_id, status)
        ids.append(child.info.run_id)
    with pytest.raises(
        ConfigError, match=rf"MLflow run {parent}: .*not all FINISHED \({ids[1]} \(FAILED\)\)"
    ):
        expand_members([parent], uri)
    plain = client.create_run(exp, run_name="single").info.run_id  # not a parent: a member as it is
    assert expand_members([plain], uri) == ([plain], None)
