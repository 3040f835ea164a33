"""``--json`` on every command: stdout is one JSON document (the result, or the error), nothing else.

synth, scan, evaluate, predict and ``weights verify`` are in ``test_json_output.py``; this file
covers the other commands, the error documents, and that no command lacks the flag.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _models import built_model
from _tiny import tiny_workflow, write_wf

from medimg.cli.main import COMMANDS, build_parser, main
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
from medimg.errors import EXIT_INPUT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from medimg.io.dicom.write import write_series
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

TINY_NET = ["--param", "channels=[4,8,16]", "--param", "strides=[2,2]", "--param", "num_res_units=0"]


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)  # fails on any other line printed to stdout


def _study(root: Path, cases: int = 2) -> Path:
    return write_synthetic_study(
        root / "data", cases=cases, seed=3, grid=SyntheticGrid(shape=(32, 30, 20), spacing=(1.6, 1.7, 2.5))
    )


def _dicom_export(root: Path, with_gap: bool = False) -> Path:
    """Two small CT series of one patient, a folder each; ``with_gap``: a third one missing a slice (broken)."""
    rng = np.random.default_rng(0)
    shapes = [(12, 10, 6), (10, 8, 5)] + ([(8, 8, 5)] if with_gap else [])
    for i, shape in enumerate(shapes, start=1):
        data = rng.integers(-200, 300, shape).astype(np.int16)
        affine = np.diag([0.8, 0.9, 2.5, 1.0])
        files = write_series(
            Volume(data, affine), root / "export" / f"s{i}", series_number=i, study_uid="1.2.3"
        )
    if with_gap:
        files[2].unlink()
    return root / "export"


@pytest.fixture
def pseudonym_key(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MEDIMG_PSEUDONYM_KEY", "medimg-test-key")
    monkeypatch.setenv("MEDIMG_HOME", str(tmp_path / "home"))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def test_every_command_and_action_takes_json() -> None:
    commands = _subparsers(build_parser())
    assert set(commands) == set(COMMANDS)
    leaves = {}
    for name, parser in commands.items():
        actions = _subparsers(parser)
        leaves.update({f"{name} {a}": p for a, p in actions.items()} if actions else {name: parser})
    missing = [name for name, p in leaves.items() if "--json" not in p._option_string_actions]
    assert not missing, f"no --json: {missing}"


@pytest.mark.slow
def test_run_check_run_and_reproduce_json(tmp_path: Path, capsys) -> None:
    wf = tiny_workflow()
    wf["trainer"].update({"max_epochs": 1, "deterministic": True, "accelerator": "cpu"})
    path = write_wf(tmp_path / "tiny.yaml", wf)
    assert main(["run", str(path), "--check", "--json"]) == EXIT_OK
    check = _json_out(capsys)
    assert check["ok"] is True and check["workflow"] == "tiny_seg" and len(check["config_hash"]) == 64
    assert check["cases"] == 8 == sum(check["splits"].values())

    assert main(["run", str(path), "--json"]) == EXIT_OK
    doc = _json_out(capsys)  # Lightning's progress bar and the summary went to stderr
    info = json.loads((tmp_path / "runs/tiny_seg/run.json").read_text())
    assert doc["run_id"] == info["run_id"] and doc["tracking_uri"] == info["tracking_uri"]
    assert doc["status"] == "finished" and doc["weights_sha256"] == info["weights_sha256"]
    assert Path(doc["model_dir"], "model.safetensors").is_file() and Path(doc["out_dir"]).is_dir()
    per_case = pd.read_csv(doc["per_case_csv"])
    assert doc["metrics"]["n_cases"] == len(per_case) >= 1 and doc["failures"] == []
    assert doc["metrics"]["test_dice_1"] == pytest.approx(per_case["dice_1"].mean())

    tracking = ["--tracking-uri", info["tracking_uri"], "--out", str(tmp_path / "runs/repro")]
    code = main(["reproduce", info["run_id"], *tracking, "--json"])
    rep = _json_out(capsys)
    assert code == EXIT_OK and rep["reproduced"] is True
    assert rep["original_run"] == info["run_id"] and rep["reproduction_run"] != info["run_id"]
    assert {"test_dice_1", "test_dice_mean"} <= {row["metric"] for row in rep["metrics"]}


def test_convert_json_one_volume_and_a_tree(tmp_path: Path, capsys, pseudonym_key) -> None:
    src = tmp_path / "in.nii.gz"
    save_nifti(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), src, np.diag([0.5, 0.6, 2.0, 1.0]))
    out = tmp_path / "out.nii.gz"
    assert main(["convert", str(src), str(out), "--sidecar", "--json"]) == EXIT_OK
    doc = _json_out(capsys)
    assert doc == {"input": str(src), "output": str(out), "shape": [6, 5, 4], "spacing": [0.5, 0.6, 2.0],
                   "dtype": "int16", "sidecar": str(tmp_path / "out.json")}  # fmt: skip
    assert nib.load(out).shape == (6, 5, 4) and json.loads(Path(doc["sidecar"]).read_text())["shape"]

    _dicom_export(tmp_path, with_gap=True)
    assert (
        main(["convert", str(tmp_path / "export"), str(tmp_path / "tree"), "-j", "1", "--json"])
        == EXIT_SOME_FAILED
    )
    tree = _json_out(capsys)
    assert tree["converted"] == 2 == len(tree["written"]) and all(Path(p).is_file() for p in tree["written"])
    assert tree["broken"] >= 1 and tree["excluded"] == len(pd.read_csv(tree["excluded_table"]))
    assert len(pd.read_csv(tree["manifest"])) == 2


def test_deid_json(tmp_path: Path, capsys) -> None:
    export = _dicom_export(tmp_path)
    (export / "s1" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 10)
    key = tmp_path / "key"
    key.write_text("secret")
    code = main(["deid", str(export), str(tmp_path / "deid"), "--key-file", str(key), "--json"])
    doc = _json_out(capsys)
    assert code == EXIT_SOME_FAILED and doc["output"] == str(tmp_path / "deid")
    assert doc["deidentified"] == 11 == len(list((tmp_path / "deid").rglob("*.dcm")))
    assert [Path(e["path"]).name for e in doc["excluded"]] == ["broken.dcm"] and doc["excluded"][0]["reason"]


def test_explain_json(tmp_path: Path, capsys) -> None:
    _study(tmp_path, cases=1)
    model = built_model(tmp_path / "model")
    image = next((tmp_path / "data").rglob("*image*.nii.gz"))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(image.read_bytes()[:300])  # truncated
    argv = ["explain", "--model", str(model), str(image), str(broken), "--out", str(tmp_path / "x")]
    code = main([*argv, "--no-sanity", "--no-mlflow", "--no-progress", "--json"])
    doc = _json_out(capsys)
    assert code == EXIT_SOME_FAILED and (doc["explained"], doc["failed"], doc["cases"]) == (1, 1, 2)
    assert doc["methods"] == ["seg-gradcam"] and doc["mlflow_run_id"] is None
    assert Path(doc["index"]).is_file() and all(Path(p).is_file() for p in doc["reports"].values())
    assert len(doc["failures"]) == 1 and "truncated" in doc["failures"][0]["reason"]


def test_pretrain_json(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    for i in range(2):
        save_nifti(rng.normal(0, 1, (18, 16, 12)).astype(np.float32), tmp_path / f"s/v{i}.nii.gz", np.eye(4))
    (tmp_path / "s/broken.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "ssl.safetensors"
    argv = ["pretrain", str(tmp_path / "s"), "--out", str(out), *TINY_NET, "--patch", "16", "--steps", "2"]
    assert main([*argv, "--batch", "1", "--no-mlflow", "--json"]) == EXIT_SOME_FAILED
    doc = _json_out(capsys)
    assert doc["out"] == str(out) and out.is_file() and doc["tensors"] > 0
    assert (doc["volumes"], doc["unreadable"], doc["run_id"]) == (2, 1, None)
    assert doc["failures"][0]["file"] == "broken.nii.gz" and doc["failures"][0]["reason"]


def test_schema_json(capsys) -> None:
    assert main(["schema", "--json"]) == EXIT_OK
    doc = _json_out(capsys)
    assert {"data", "model", "trainer"} <= set(doc["properties"])
    assert main(["schema", "--format", "json"]) == EXIT_OK
    assert _json_out(capsys) == doc


@pytest.mark.parametrize("action", ["list", "networks", "inspect", "convert", "record", "check"])
def test_weights_json(action: str, tmp_path: Path, capsys) -> None:
    model = built_model(tmp_path / "model")
    weights = model / "model.safetensors"
    argv = {
        "list": [],
        "networks": ["unet"],
        "inspect": [str(weights), "--keys", "2"],
        "convert": [str(weights), str(tmp_path / "w.safetensors")],
        "record": [str(model), "--force"],
        "check": [str(weights), "--network", "unet", "--out-channels", "3", *TINY_NET],
    }[action]
    capsys.readouterr()
    assert main(["weights", action, *argv, "--json"]) == EXIT_OK
    doc = _json_out(capsys)
    if action == "list":
        assert "unet" in {n["name"] for n in doc["networks"]}
    elif action == "networks":
        assert [n["name"] for n in doc["networks"]] == ["unet"]
    elif action == "inspect":
        assert doc["tensors"] > 0 and len(doc["keys"]) == 2
    elif action == "convert":
        assert Path(doc["output"]).is_file() and doc["tensors"] > 0 and len(doc["sha256"]) == 64
    elif action == "record":
        assert doc["record"] == str(model / "model.json") and len(doc["files"]) == 2
    else:
        assert doc["encoder_fraction"] == 1.0 and doc["counts"]["matched"] > 0


def test_errors_are_json_documents_with_the_documented_exit_codes(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import medimg.cli.schema as schema_cmd

    assert main(["scan", str(tmp_path / "nowhere"), "--json"]) == EXIT_INPUT_ERROR
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc == {"command": "scan", "error": f"{tmp_path / 'nowhere'}: folder not found", "exit_code": 3}
    assert err.strip() == f"medimg scan: error: {doc['error']}"  # the one line stays on stderr

    with pytest.raises(SystemExit) as usage:
        main(["predict", "--no-such-option", "--json"])
    assert usage.value.code == EXIT_USAGE
    doc = _json_out(capsys)
    assert (
        doc["command"] == "predict" and doc["exit_code"] == EXIT_USAGE and "required: --out" in doc["error"]
    )

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(schema_cmd, "execute", interrupted)
    assert main(["schema", "--json"]) == EXIT_INTERRUPTED
    assert _json_out(capsys) == {"command": "schema", "error": "interrupted", "exit_code": EXIT_INTERRUPTED}
    assert main(["schema"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().out == ""  # without --json: stderr only, as before
