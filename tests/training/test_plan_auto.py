"""``model: auto`` / ``preprocessing: auto``: planned at run time exactly as ``medimg plan`` plans them."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from medimg.cli.main import main
from medimg.config.load import parse_workflow, workflow_to_dict
from medimg.data.fingerprint import fingerprint_dataset, read_fingerprint
from medimg.data.planner import GIB, Machine
from medimg.data.recipe import plan_workflow
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
from medimg.errors import ConfigError
from medimg.training.stages.plan_auto import resolve_auto

CPU = Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2)
LABELS = {0: "background", 1: "organ", 2: "kidney"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    return write_synthetic_study(
        root / "data", cases=6, seed=4, grid=SyntheticGrid(shape=(32, 30, 20), spacing=(1.6, 1.7, 2.5))
    )


def _wf(manifest, **changes):
    doc = {"name": "auto_seg", "task": "segmentation", "data": {"manifest": str(manifest), "labels": LABELS}}
    return parse_workflow(doc | changes, source="auto.yaml")


def test_shorthand_and_refusals():
    base = {"task": "classification", "data": {"manifest": "m.csv"}}
    wf = parse_workflow(base | {"model": "auto", "preprocessing": "auto"}, source="w.yaml")
    assert wf.model.name == "auto" and wf.preprocessing.auto
    with pytest.raises(ConfigError, match=r"w.yaml: model: .*expected no model.params"):
        parse_workflow(base | {"model": {"name": "auto", "params": {"channels": [4]}}}, source="w.yaml")
    with pytest.raises(ConfigError, match=r"w.yaml: preprocessing: .*plans spacing: expected auto or"):
        parse_workflow(base | {"preprocessing": {"auto": True, "spacing": [1, 1, 1]}}, source="w.yaml")


def test_resolved_values_are_the_plans(manifest, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(Machine, "detect", classmethod(lambda cls, *a, **k: CPU))
    wf = _wf(manifest, model="auto", preprocessing={"auto": True, "cache": {"mode": "disk"}},
             trainer={"max_time": "2m"})  # fmt: skip
    with caplog.at_level(logging.INFO, logger="medimg.training.stages.plan_auto"):
        resolved = resolve_auto(wf, tmp_path)
    fp = fingerprint_dataset(manifest, "segmentation")
    plan = plan_workflow(fp, "segmentation", CPU, 120.0, str(manifest))
    assert resolved.model.name == plan.get("model.name") == "dynunet"
    assert resolved.model.params == plan.get("model.params")
    got = workflow_to_dict(resolved)["preprocessing"]
    for key in ("orientation", "spacing", "intensity"):
        assert {key: got[key]} == {
            key: workflow_to_dict(parse_workflow(plan.workflow, "plan"))["preprocessing"][key]
        }
    assert got["auto"] is False and got["cache"]["mode"] == "disk"  # the cache stays the user's
    assert list(resolved.augmentation.patch_size) == plan.get("augmentation.patch_size")  # none was given
    assert read_fingerprint(tmp_path / "fingerprint.json") == fp  # written for the run to log
    assert resolved.data.fingerprint == str(tmp_path / "fingerprint.json")
    assert wf.model.name == "auto" and wf.data.fingerprint is None  # the caller's workflow is unchanged
    text = caplog.text
    assert "model: auto -> model.name = dynunet" in text and plan.reasons["model.name"] in text
    assert f"preprocessing.spacing = {plan.get('preprocessing.spacing')}" in text


def test_a_given_patch_must_fit_the_planned_strides(manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(Machine, "detect", classmethod(lambda cls, *a, **k: CPU))
    wf = _wf(manifest, model="auto", augmentation={"patch_size": [17, 16, 16]})
    with pytest.raises(ConfigError, match=r"augmentation.patch_size \[17, 16, 16\]: model: auto planned"):
        resolve_auto(wf, tmp_path)
    plain = _wf(manifest)
    assert resolve_auto(plain, tmp_path) is plain  # nothing to plan: the workflow as given


@pytest.mark.slow
def test_auto_workflow_runs_and_records_what_medimg_plan_writes(manifest, tmp_path, monkeypatch, caplog):
    import mlflow

    monkeypatch.chdir(tmp_path)
    planned = tmp_path / "planned.yaml"
    assert main(["plan", str(manifest), "--task", "segmentation", "--out", str(planned)]) == 0
    plan = yaml.safe_load(planned.read_text())
    auto = {
        "name": "auto_seg", "task": "segmentation", "model": "auto", "preprocessing": "auto",
        "data": {"manifest": str(manifest), "labels": LABELS, "fingerprint": str(tmp_path / "planned.fingerprint.json")},
        "optim": {"batch_size": 2}, "trainer": {"max_epochs": 1, "accelerator": "cpu"},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}, "outputs": {"dir": "runs/auto"},
    }  # fmt: skip
    (tmp_path / "auto.yaml").write_text(yaml.safe_dump(auto))
    with caplog.at_level(logging.INFO, logger="medimg.training.stages.plan_auto"):
        assert main(["run", str(tmp_path / "auto.yaml")]) == 0
    assert f"model: auto -> model.name = {plan['model']['name']}" in caplog.text  # printed
    resolved = yaml.safe_load((tmp_path / "runs/auto/workflow.resolved.yaml").read_text())
    assert resolved["model"]["name"] == plan["model"]["name"] == "dynunet"
    assert resolved["model"]["params"] == plan["model"]["params"]
    assert resolved["augmentation"]["patch_size"] == plan["augmentation"]["patch_size"]
    for key, value in plan["preprocessing"].items():
        got = resolved["preprocessing"][key]
        assert ({k: got[k] for k in value} if isinstance(value, dict) else got) == value, key
    info = json.loads((tmp_path / "runs/auto/run.json").read_text())
    params = mlflow.MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.params
    assert params["model.name"] == "dynunet"
    assert json.loads(params["model.params.strides"]) == plan["model"]["params"]["strides"]
    assert json.loads(params["preprocessing.spacing"]) == plan["preprocessing"]["spacing"]
    assert params["preprocessing.intensity.mode"] == plan["preprocessing"]["intensity"]["mode"]


def test_check_plans_an_auto_workflow_and_writes_nothing(manifest, tmp_path, monkeypatch, capsys):
    """``medimg run --check`` on ``model: auto`` / ``preprocessing: auto`` shows what the run would plan
    (the same values :func:`resolve_auto` gives), refuses a plan that cannot be made, and leaves no file."""
    monkeypatch.setattr(Machine, "detect", classmethod(lambda cls, *a, **k: CPU))
    out = tmp_path / "out"
    doc = {"name": "auto_seg", "task": "segmentation", "model": "auto", "preprocessing": "auto",
           "data": {"manifest": str(manifest), "labels": LABELS}, "outputs": {"dir": str(out)}}  # fmt: skip
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["run", str(path), "--check", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    resolved = resolve_auto(parse_workflow(doc, source="auto.yaml"), tmp_path / "reference")
    assert got["ok"] and got["planned"]["model"]["name"] == resolved.model.name == "dynunet"
    assert got["planned"]["model"]["params"] == resolved.model.params
    assert got["planned"]["preprocessing"]["spacing"] == list(resolved.preprocessing.spacing)
    assert got["planned"]["augmentation.patch_size"] == list(resolved.augmentation.patch_size)
    assert not out.exists()  # the fingerprint went to a temporary folder
    doc["augmentation"] = {"patch_size": [17, 16, 16]}  # the planned strides cannot divide it
    path.write_text(yaml.safe_dump(doc))
    assert main(["run", str(path), "--check"]) != 0
    assert "augmentation.patch_size [17, 16, 16]: model: auto planned" in capsys.readouterr().err
