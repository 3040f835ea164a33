"""task synthesis: the generator trains on the training split, samples cases of a class on its grid,
and a classification study adds them to its training split only, recording which generator made them."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from medimg.config.generative import GenerativeWorkflow
from medimg.config.load import load_workflow
from medimg.config.schema import Workflow
from medimg.errors import ConfigError
from medimg.io.load import load_image
from medimg.models.download import sha256_of

SPACING = 3.0


def _data(root: Path) -> dict:
    return {
        "manifest": str(root / "data/manifest.csv"),
        "synthetic": {"cases": 16, "seed": 2, "shape": [24, 24, 16], "spacing": [2.0, 2.0, 3.0]},
        "label_column": "class",
        "num_classes": 2,
        "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 0},
    }


def _common(root: Path, name: str) -> dict:
    return {
        "name": name,
        "seed": 0,
        "data": _data(root),
        "preprocessing": {
            "spacing": [SPACING] * 3,
            "intensity": {"mode": "ct_window", "window": [-200, 400]},
            "spatial_size": [16, 16, 16],
        },  # fmt: skip
        "optim": {"lr": 0.003, "batch_size": 4},
        "trainer": {"max_epochs": 2},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "synthesis"},
        "outputs": {"dir": str(root / name)},
    }


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """One tiny synthesis study, shared by the tests of this module."""
    from medimg.generative.run import read_cases, run_generative

    root = tmp_path_factory.mktemp("synthesis")
    wf = GenerativeWorkflow.model_validate(
        {**_common(root, "gen"), "task": "synthesis",
         "synthesis": {"channels": [4, 8], "latent_dim": 4, "samples_per_class": 2}}
    )  # fmt: skip
    res = run_generative(wf)
    return root, wf, res, read_cases(wf)


def test_generator_trains_on_the_training_split_and_is_recorded(generator):
    root, wf, res, df = generator
    folder = res.out_dir / "model"
    info = json.loads((folder / "model.json").read_text())
    train = df[df["split"] == "train"]
    assert info["task"] == "synthesis" and info["run_id"] == res.run_id
    assert info["train_cases_per_class"] == [int((train["target"] == c).sum()) for c in (0, 1)]
    assert res.metrics["n_train_class0"] + res.metrics["n_train_class1"] == len(train) < len(df)
    sha = sha256_of(folder / "model.safetensors")
    assert info["weights_sha256"] == sha
    run = mlflow.MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["medimg.task"] == "synthesis" and run.data.tags["medimg.generator_sha256"] == sha
    assert run.data.params["synthesis.latent_dim"] == "4"
    assert np.isfinite(run.data.metrics["train_loss"]) and np.isfinite(run.data.metrics["val_mse"])
    val = pd.read_csv(res.out_dir / "val_per_case.csv")
    assert set(val["case_key"]) == set(df.loc[df["split"] == "val", "case_key"])
    artifacts = {a.path for a in mlflow.MlflowClient(res.tracking_uri).list_artifacts(res.run_id, "model")}
    assert {"model/model.json", "model/model.safetensors", "model/workflow.yaml"} <= artifacts
    assert sorted(p.name for p in (res.out_dir / "samples").iterdir()) == [
        f"class{c}_{i:05d}.nii.gz" for c in (0, 1) for i in range(2)
    ]


def test_samples_have_the_class_count_and_the_training_grid(generator, tmp_path):
    from medimg.training.stages.prepare_synthetic import load_generator, write_samples

    _, _, res, _ = generator
    folder = res.out_dir / "model"
    paths = write_samples(folder, tmp_path / "a", class_index=1, count=5, seed=3)
    assert [p.name for p in paths] == [f"synthetic_{i:05d}.nii.gz" for i in range(5)]
    info = json.loads((folder / "model.json").read_text())
    net, _ = load_generator(folder)
    expected = net.sample(5, 1, seed=3 * 100003).numpy()[:, 0].clip(0, 1) * 600.0 - 200.0  # ct_window: HU
    for i, path in enumerate(paths):
        vol = load_image(path)
        assert vol.shape == (16, 16, 16)
        np.testing.assert_allclose(vol.spacing, (SPACING,) * 3, atol=1e-5)
        np.testing.assert_allclose(vol.affine, np.asarray(info["grid_affine"]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(vol.data), expected[i], atol=1e-3)
    again = write_samples(folder, tmp_path / "b", class_index=1, count=5, seed=3)
    other = write_samples(folder, tmp_path / "c", class_index=0, count=5, seed=3)
    a0, b0, c0 = (np.asarray(load_image(p[0]).data) for p in (paths, again, other))
    np.testing.assert_array_equal(a0, b0)
    assert np.abs(a0 - c0).max() > 1e-3, "the class changes the sample"


def _classification(root: Path, generator_ref: str, **extra: object) -> Workflow:
    raw = {**_common(root, "cls"), "task": "classification",
           "augmentation": {"patch_size": None, "flip_prob": 0.0},
           "model": {"name": "patchnet", "params": {"channels": [4, 8, 8], "pools": [2]}}}  # fmt: skip
    raw["data"] = {**raw["data"], "synthetic_cases": {"generator": generator_ref, "class_index": 1, "count": 6,
                                                      "cache_dir": str(root / "synth_cache"), **extra}}  # fmt: skip
    return Workflow.model_validate(raw)


def test_classification_study_adds_synthetic_cases_to_training_only(generator):
    from medimg.data.manifest import read_manifest
    from medimg.data.splits import assign_splits
    from medimg.training.stages.plan import plan_study
    from medimg.training.stages.prepare import prepare
    from medimg.training.stages.track import track

    root, _, res, _ = generator
    wf = _classification(root, res.run_id)  # by MLflow run id: the model folder comes from the run
    real = assign_splits(read_manifest(wf.data, wf.task), wf.data.split)
    data = prepare(wf)
    df = data.df
    synth = df[df["synthetic"]]
    assert len(synth) == 6 and set(synth["split"]) == {"train"} and set(synth["target"]) == {1}
    for split in ("val", "test"):  # validation and test are the real cases, exactly
        rows = df[df["split"] == split]
        assert not rows["synthetic"].any()
        assert sorted(rows["case_key"]) == sorted(real.loc[real["split"] == split, "case_key"])
    assert sorted(df.loc[~df["synthetic"], "case_key"]) == sorted(real["case_key"])
    for path in synth["image"]:
        assert load_image(path).shape == (16, 16, 16)
    sha = sha256_of(res.out_dir / "model/model.safetensors")
    assert wf.data.synthetic_cases is not None
    assert (wf.data.synthetic_cases.generator_run_id, wf.data.synthetic_cases.generator_sha256) == (
        res.run_id,
        sha,
    )
    run = track(plan_study(wf, data), data, resume=False, parent_run_id=None)
    params = mlflow.MlflowClient(run.uri).get_run(run.run_id).data.params
    assert params["data.synthetic_cases.count"] == "6"
    assert params["data.synthetic_cases.class_index"] == "1"
    assert params["data.synthetic_cases.generator_run_id"] == res.run_id
    assert params["data.synthetic_cases.generator_sha256"] == sha
    saved = pd.read_csv(data.out / "manifest.csv")
    assert saved["synthetic"].sum() == 6 and set(saved.loc[saved["synthetic"], "split"]) == {"train"}
    assert sha in (data.out / "workflow.resolved.yaml").read_text()
    # a second study reuses the cached cases (same generator, class, seed, count): same files, untouched
    stamps = {p: Path(p).stat().st_mtime_ns for p in synth["image"]}
    again = prepare(_classification(root, str(res.out_dir / "model"))).df  # by model folder
    assert {p: Path(p).stat().st_mtime_ns for p in again.loc[again["synthetic"], "image"]} == stamps


def test_misconfigured_synthetic_cases_name_the_key(generator, tmp_path):
    from medimg.training.stages.prepare import prepare_data

    root, _, res, _ = generator
    folder = str(res.out_dir / "model")
    with pytest.raises(
        ConfigError, match=r"data\.synthetic_cases\.generator: .*neither an existing model folder"
    ):
        prepare_data(_classification(root, str(tmp_path / "no_such_generator")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ConfigError, match=r"data\.synthetic_cases\.generator: .*not a task synthesis model folder"
    ):
        prepare_data(_classification(root, str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match=r"data\.synthetic_cases\.generator: MLflow run 0{32} not found"):
        prepare_data(_classification(root, "0" * 32))
    with pytest.raises(ConfigError, match=r"data\.synthetic_cases\.generator_sha256: the workflow pins"):
        prepare_data(_classification(root, folder, generator_sha256="f" * 64))
    # class out of range and unknown keys: refused when the workflow file is read, naming file and key
    raw = _classification(root, folder).model_dump(mode="json")
    for change, message in (
        ({"class_index": 2}, r"data\.synthetic_cases\.class_index 2 is out of range: expected 0\.\.1"),
        ({"clas": 1}, r"data\.synthetic_cases\.clas: unknown key"),
        ({"count": 0}, r"data\.synthetic_cases\.count: Input should be greater than or equal to 1"),
    ):
        doc = json.loads(json.dumps(raw))
        doc["data"]["synthetic_cases"].update(change)
        path = tmp_path / "bad.yaml"
        path.write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match=message) as err:
            load_workflow(path)
        assert str(path) in str(err.value)
    doc = json.loads(json.dumps(raw))
    doc.update(task="segmentation", data={**doc["data"], "labels": {0: "bg", 1: "organ"}})
    with pytest.raises(Exception, match="data.synthetic_cases applies to task classification only"):
        Workflow.model_validate(doc)


def test_class_balanced_sampling_weights():
    from medimg.models.cvae import class_weights

    w = class_weights(torch.tensor([0, 0, 0, 0, 1]), 2, balance=True)
    assert w.tolist() == pytest.approx([0.625] * 4 + [2.5])
    assert float(w[:4].sum()) == pytest.approx(float(w[4:].sum()))  # each class drawn as often
    assert class_weights(torch.tensor([0, 1, 1]), 3, balance=True).tolist() == pytest.approx(
        [1.5, 0.75, 0.75]
    )
    assert class_weights(torch.tensor([0, 1, 1]), 2, balance=False).tolist() == [1.0, 1.0, 1.0]


def test_quickstart_synthesis_workflow_validates():
    from medimg.config.generative import load_generative_workflow

    root = Path(__file__).resolve().parents[2]
    wf = load_generative_workflow(root / "workflows/quickstart-synthesis.yaml")
    assert wf.task == "synthesis" and wf.synthesis is not None and wf.data.synthetic is not None
    assert wf.preprocessing.spatial_size is not None and all(
        s % 4 == 0 for s in wf.preprocessing.spatial_size
    )


def test_docs_list_every_key_of_the_synthesis_section():
    from medimg.config.generative import SynthesisConfig
    from medimg.config.reference import markdown_reference

    page = (Path(__file__).resolve().parents[2] / "docs/generative.md").read_text()
    rows = [
        line
        for line in markdown_reference(SynthesisConfig, "synthesis.").splitlines()
        if line.startswith("| `")
    ]
    assert len(rows) == len(SynthesisConfig.model_fields) and all(row in page for row in rows), (
        "docs/generative.md: synthesis. keys are stale"
    )
