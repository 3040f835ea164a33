"""MLflow conventions of a run, read back from the SQLite store of two real tiny runs.

Each run logs its manifest as three datasets (contexts ``training``, ``validation``,
``testing``) whose digests hash their own files, and a pyfunc model with a signature and an
input example; only the run with ``tracking.register_model`` gets a registry version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from _tiny import tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.data.manifest import manifest_hash
from medimg.inference.pyfunc import EXAMPLE_IMAGE, pip_requirements

NAME = "conventions_seg"
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """The tiny study trained twice (one epoch each) into one store: ``plain`` and ``registered``."""
    root = tmp_path_factory.mktemp("conventions")
    old = os.getcwd()
    os.chdir(root)
    try:
        found = {}
        for kind, extra in (("plain", []), ("registered", ["--set", f"tracking.register_model={NAME}"])):
            wf = tiny_workflow(trainer={"max_epochs": 1}, outputs={"dir": f"runs/{kind}"})
            argv = ["run", str(write_wf(root / f"{kind}.yaml", wf)), *extra]
            assert main(argv) == 0
            out = root / "runs" / kind
            found[kind] = {"out": out, **json.loads((out / "run.json").read_text())}
    finally:
        os.chdir(old)
    return found


def _client(runs: dict) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(runs["plain"]["tracking_uri"])


def test_one_dataset_per_split_with_its_rows_and_own_digest(runs):
    client = _client(runs)
    for info in runs.values():
        manifest = pd.read_csv(info["out"] / "manifest.csv")
        hashes = pd.read_csv(info["out"] / "file_hashes.csv")
        inputs = client.get_run(info["run_id"]).inputs.dataset_inputs
        by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}
        assert sorted(by_context) == sorted(CONTEXTS.values())
        for split, context in CONTEXTS.items():
            ds = by_context[context].dataset
            rows = manifest[manifest["split"] == split]
            assert len(rows) > 0
            assert json.loads(ds.profile)["num_rows"] == len(rows)
            assert ds.name == f"tiny_seg-{split}"
            own = hashes[hashes["case_key"].isin(rows["case_key"])]
            assert set(own["role"]) == {"image", "label"}
            assert ds.digest == manifest_hash(own, ("case_key", "role", "sha256"))[:32]
        assert len({i.dataset.digest for i in inputs}) == 3
    # the same synthetic study both times: the same bytes give the same digests
    digests = [
        sorted(i.dataset.digest for i in client.get_run(r["run_id"]).inputs.dataset_inputs)
        for r in runs.values()
    ]
    assert digests[0] == digests[1]


@pytest.mark.parametrize("kind", ["plain", "registered"])
def test_every_run_logs_a_pyfunc_with_signature_and_input_example(runs, kind, tmp_path):
    client = _client(runs)
    info = runs[kind]
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    mine = [m for m in logged if m.source_run_id == info["run_id"]]
    assert [m.name for m in mine] == ["pyfunc"]
    assert info["model_uri"] == (f"models:/{NAME}@candidate" if kind == "registered" else mine[0].model_uri)

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=mine[0].model_uri, dst_path=str(tmp_path), tracking_uri=info["tracking_uri"]
        )
    )
    model = mlflow.models.Model.load(str(local / "MLmodel"))
    assert model.signature.inputs.input_names() == ["image", "output"]
    assert model.signature.outputs.input_names()[:2] == ["image", "mask_path"]
    assert model.saved_input_example_info["type"] == "dataframe"
    example = model.load_input_example(str(local))
    assert list(example.columns) == ["image"] and list(example["image"]) == [EXAMPLE_IMAGE]
    assert (local / "serving_input_example.json").is_file()
    # explicit pins, as pip_requirements() writes them: nothing inferred by importing the model
    assert (local / "requirements.txt").read_text().split() == pip_requirements()


def test_registry_version_only_when_register_model_is_set(runs):
    client = _client(runs)
    plain, registered = runs["plain"]["run_id"], runs["registered"]["run_id"]
    assert client.search_model_versions(f"run_id = '{plain}'") == []
    versions = client.search_model_versions(f"run_id = '{registered}'")
    assert [(v.name, str(v.version)) for v in versions] == [(NAME, "1")]
    assert client.get_model_version_by_alias(NAME, "candidate").run_id == registered
    assert [m.name for m in client.search_registered_models()] == [NAME]
