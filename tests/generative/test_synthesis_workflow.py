"""task synthesis as a full workflow task: a study interrupted after an epoch resumes with ``medimg run --resume``
in the same MLflow run and ends with the weights and metrics of an uninterrupted one; ``medimg reproduce``
retrains a finished run to the same test metrics; ``medimg predict`` with the generator writes the cases
``data.synthetic_cases`` would add, with their manifest, resumably."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from medimg.cli.main import main
from medimg.config.generative import load_generative_workflow
from medimg.errors import EXIT_INPUT_ERROR, ConfigError
from medimg.generative import checkpoint
from medimg.generative.checkpoint import CHECKPOINT
from medimg.generative.run import run_generative

pytestmark = pytest.mark.slow  # three tiny synthesis studies and a reproduction (about a minute of CPU)

ROOT = Path(__file__).resolve().parents[2]
PATH = ROOT / "workflows/quickstart-synthesis.yaml"
EPOCHS = 5
STOP_AFTER = 2  # the interrupted study stops after this epoch's checkpoint
SMALL = [
    "data.synthetic.cases=16",
    "data.synthetic.shape=[24,24,16]",
    "data.synthetic.spacing=[2.0,2.0,3.0]",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.25",
    "preprocessing.spatial_size=[16,16,16]",
    "synthesis.channels=[4,8]",
    "synthesis.latent_dim=4",
    "synthesis.samples_per_class=1",
    "optim.batch_size=4",
    f"trainer.max_epochs={EPOCHS}",
]


class Interrupted(Exception):
    """Stands in for a kill after an epoch checkpoint."""


def _overrides(root: Path, name: str) -> list[str]:
    return [*SMALL, f"data.manifest={root}/data/manifest.csv", f"tracking.uri=sqlite:///{root}/mlflow.db",
            f"outputs.dir={root}/{name}"]  # fmt: skip


def _cli(command: list[str], overrides: list[str]) -> int:
    args = list(command)
    for item in overrides:
        args += ["--set", item]
    return main(args)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """A study never interrupted: the reference of the resumed one, and the run ``medimg reproduce`` retrains."""
    root = tmp_path_factory.mktemp("synthesis_workflow")
    torch.set_num_threads(1)
    return root, run_generative(load_generative_workflow(PATH, _overrides(root, "whole")))


def test_interrupted_synthesis_study_resumes_to_the_uninterrupted_result(whole, monkeypatch, capsys) -> None:
    root, reference = whole
    real_save = checkpoint.EpochCheckpoint.save

    def save_then_stop(self, epoch, parts, rng, losses):
        path = real_save(self, epoch, parts, rng, losses)
        if epoch == STOP_AFTER:
            raise Interrupted(f"stopped after epoch {epoch}")
        return path

    monkeypatch.setattr(checkpoint.EpochCheckpoint, "save", save_then_stop)
    with pytest.raises(Interrupted):
        run_generative(load_generative_workflow(PATH, _overrides(root, "cut")))
    monkeypatch.undo()
    out = root / "cut"
    saved = torch.load(out / CHECKPOINT, weights_only=True)
    assert saved["epoch"] == STOP_AFTER and len(saved["losses"]) == STOP_AFTER + 1
    assert {"torch", "loop"} <= set(saved["rng"])  # torch's random state (the VAE's noise) and the loop's
    assert not (out / "model").exists()
    run_id = saved["run_id"]
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).info.status == "FAILED"

    code = _cli(["run", str(PATH), "--resume", "--json"], _overrides(root, "cut"))
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["run_id"] == run_id  # the same MLflow run, continued
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["medimg.resumed_from_epoch"] == str(STOP_AFTER)
    history = client.get_metric_history(run_id, "train_loss")
    steps = Counter(m.step for m in history)
    reference_history = client.get_metric_history(reference.run_id, "train_loss")
    assert steps == Counter(m.step for m in reference_history)  # no epoch logged (trained) twice
    assert sorted(steps) == list(range(EPOCHS))
    np.testing.assert_allclose(sorted((m.step, m.value) for m in history),
                               sorted((m.step, m.value) for m in reference_history), rtol=0, atol=1e-6)  # fmt: skip
    final = torch.load(out / CHECKPOINT, weights_only=True)
    assert final["epoch"] == EPOCHS - 1 and final["losses"][: STOP_AFTER + 1] == saved["losses"]

    weights = load_file(str(out / "model" / "model.safetensors"))
    expected = load_file(str(reference.out_dir / "model" / "model.safetensors"))
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(weights[name].numpy(), value.numpy(), rtol=0, atol=1e-6, err_msg=name)
    for key in ("train_loss", "val_mse", "val_kl", "test_mse", "test_kl"):
        assert document["metrics"][key] == pytest.approx(reference.metrics[key], rel=0, abs=1e-6), key
    assert json.loads((out / "model" / "model.json").read_text())["run_id"] == run_id

    # a checkpoint written by another workflow is refused by name, not loaded
    other = [*_overrides(root, "cut"), "synthesis.latent_dim=8"]
    with pytest.raises(ConfigError, match="written by another workflow"):
        run_generative(load_generative_workflow(PATH, other), resume=True)


def test_synthesis_run_reproduces_through_the_command(whole, capsys) -> None:
    root, first = whole
    uri = f"sqlite:///{root}/mlflow.db"
    assert {"test_mse", "test_kl"} <= set(first.metrics)
    code = main(["reproduce", first.run_id, "--tracking-uri", uri, "--out", str(root / "again"),
                 "--tolerance", "1e-6", "--json"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["reproduced"] is True, document
    table = pd.DataFrame(document["metrics"])
    assert set(table["metric"]) == {"test_mse", "test_kl"}
    assert (table["abs_diff"] <= 1e-6).all(), table
    assert np.allclose(table["original"], [first.metrics[m] for m in table["metric"]], rtol=0, atol=0)
    new_run = document["reproduction_run"]
    client = mlflow.MlflowClient(uri)
    assert new_run != first.run_id and client.get_run(new_run).data.tags["medimg.reproduces"] == first.run_id
    original = pd.read_csv(first.out_dir / "manifest.csv").set_index("case_key")["split"]
    again = pd.read_csv(root / "again" / "manifest.csv").set_index("case_key")["split"]
    assert again.sort_index().equals(original.sort_index())  # the run's own split, case for case


def test_predict_generates_cases_of_a_class_with_their_manifest_and_resumes(
    whole, tmp_path: Path, capsys
) -> None:
    from medimg.generative import generate_cohort
    from medimg.io.load import load_image
    from medimg.models.download import sha256_of
    from medimg.training.stages.prepare_synthetic import write_samples

    _, first = whole
    folder = first.out_dir / "model"
    out = tmp_path / "generated"
    count, seed = 18, 7  # two batches of the generator's draw (16 + 2)
    command = ["predict", str(folder), "--out", str(out), "--class-index", "1", "--count", str(count),
               "--seed", str(seed), "--no-progress", "--json"]  # fmt: skip
    assert main(command) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["done"] == count and document["failed"] == 0
    manifest = pd.read_csv(out / "synthetic_cases.csv")
    sha = sha256_of(folder / "model.safetensors")
    assert list(manifest["case_key"]) == [f"synthetic_{i:05d}" for i in range(count)]
    assert set(manifest["class"]) == {1} and set(manifest["seed"]) == {seed}
    assert set(manifest["generator_run_id"]) == {first.run_id} and set(manifest["generator_sha256"]) == {sha}
    # the very cases data.synthetic_cases adds with the same class, count and seed, on the generator's grid
    reference = write_samples(folder, tmp_path / "reference", 1, count, seed)
    info = json.loads((folder / "model.json").read_text())
    for row, ref in zip(manifest.itertuples(), reference, strict=True):
        image = out / row.image
        assert sha256_of(image) == row.sha256
        vol, expected = load_image(image), load_image(ref)
        np.testing.assert_allclose(vol.affine, np.asarray(info["grid_affine"]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(vol.data), np.asarray(expected.data), atol=1e-3)  # HU
    assert np.abs(np.asarray(load_image(out / manifest["image"][0]).data)
                  - np.asarray(load_image(out / manifest["image"][1]).data)).max() > 1.0  # fmt: skip

    # a case already complete is not generated again: one removed is, the others are kept as they are
    (out / "cases" / "synthetic_00003" / "synthetic.nii.gz").unlink()
    calls = []
    real = generate_cohort.latent

    def counting(net, index, *args):
        calls.append(index)
        return real(net, index, *args)

    generate_cohort.latent = counting
    try:
        assert main(command) == 0
    finally:
        generate_cohort.latent = real
    document = json.loads(capsys.readouterr().out)
    assert calls == [3] and document["done"] == 1 and document["skipped"] == count - 1
    again = pd.read_csv(out / "synthetic_cases.csv")
    assert again.equals(manifest)  # the same case written again: the same bytes, the same sha256

    # the flags are the generator's: another model refuses them by name; a generator refuses input scans
    scan = sorted((first.out_dir.parent / "data").rglob("image.nii.gz"))[0]
    code = main(["predict", str(folder), str(scan), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR and "reads no scans" in err and "data.synthetic_cases" in err
    code = main(
        ["predict", str(folder), "--out", str(tmp_path / "x"), "--class-index", "1", "--count", "2", "--tta"]
    )
    assert code == EXIT_INPUT_ERROR and "does not take --tta" in capsys.readouterr().err
    code = main(["predict", str(folder), "--out", str(tmp_path / "x"), "--class-index", "5", "--count", "2"])
    assert code == EXIT_INPUT_ERROR and "--class-index 5: out of range" in capsys.readouterr().err


def test_the_generator_flags_are_refused_by_the_models_that_read_scans(tmp_path: Path) -> None:
    from medimg.inference.predict_cohort import predict_cohort
    from medimg.inference.request import PredictRequest

    request = PredictRequest("runs/seg/model", ["scan.nii.gz"], tmp_path / "out", class_index=1, count=3)
    with pytest.raises(ConfigError, match=r"runs/seg/model: --class-index, --count is for a synthesis model"):
        predict_cohort(request)
    assert not (tmp_path / "out").exists()
    # a task's own cohort runner (detection, anomaly, superres) refuses them by name as well
    assert request.options_set() == ["class_index", "count"]
    with pytest.raises(
        ConfigError, match=r"runs/seg/model: a toy model does not take --class-index, --count"
    ):
        request.refuse_options(("prefetch", "seed"), "a toy model")
