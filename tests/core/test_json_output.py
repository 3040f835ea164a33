"""``--json``: stdout is one JSON document with the facts of the text output, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from _models import built_model, evaluate_argv

from medimg.cli.main import main
from medimg.cli.output import to_json
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)  # fails on any other line printed to stdout


def _study(tmp_path: Path, cases: int = 4) -> Path:
    return write_synthetic_study(
        tmp_path / "data",
        cases=cases,
        seed=3,
        grid=SyntheticGrid(shape=(32, 30, 20), spacing=(1.6, 1.7, 2.5)),
    )


def test_synth_json(tmp_path: Path, capsys) -> None:
    assert main(["synth", str(tmp_path / "s"), "--cases", "3", "--shape", "20", "20", "10", "--json"]) == 0
    doc = _json_out(capsys)
    assert doc == {
        "cases": 3,
        "seed": 0,
        "out": str(tmp_path / "s"),
        "manifest": str(tmp_path / "s" / "manifest.csv"),
    }
    assert len(pd.read_csv(doc["manifest"])) == 3


def test_scan_json(tmp_path: Path, capsys) -> None:
    manifest = _study(tmp_path, cases=3)
    (tmp_path / "data" / "broken.nii.gz").write_bytes(b"not a nifti")
    capsys.readouterr()
    code = main(["scan", str(tmp_path / "data"), "-o", str(tmp_path / "scan"), "--json"])
    doc = _json_out(capsys)
    assert code == 1 and doc["broken"] >= 1
    usable = pd.read_csv(doc["manifest"])
    assert doc["usable"] == len(usable) and doc["usable"] >= 3
    assert doc["excluded"] == len(pd.read_csv(doc["excluded_table"])) >= 1
    assert any(
        "broken.nii.gz" in str(p) for p in pd.read_csv(doc["excluded_table"]).astype(str).values.ravel()
    )
    assert manifest.is_file()


def test_evaluate_json_metrics_match_the_summary(tmp_path: Path, capsys) -> None:
    manifest = _study(tmp_path)
    model = built_model(tmp_path / "model", never=[2])
    capsys.readouterr()
    argv = evaluate_argv(model, manifest, tmp_path / "eval")
    assert main([*argv, "--n-boot", "20", "--json"]) == 0
    doc = _json_out(capsys)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert doc["evaluated"] == doc["cases"] == 4
    assert doc["summary_json"] == str(tmp_path / "eval" / "summary.json")
    assert doc["report_html"] == str(tmp_path / "eval" / "report.html")
    assert doc["metrics"]["dice_1"]["estimate"] == summary["metrics"]["dice_1"]["estimate"]
    assert doc["metrics"]["dice_2"]["estimate"] == 0.0
    assert doc["metrics"]["hd95_2"]["estimate"] is None  # undefined: never predicted, null not NaN


def test_predict_json(tmp_path: Path, capsys) -> None:
    _study(tmp_path, cases=2)
    model = built_model(tmp_path / "model")
    images = sorted(str(p) for p in (tmp_path / "data").rglob("*image*.nii.gz"))[:2]
    assert len(images) == 2
    capsys.readouterr()
    out = tmp_path / "pred"
    assert main(["predict", str(model), *images, "--out", str(out), "--no-progress", "--json"]) == 0
    doc = _json_out(capsys)
    assert (doc["done"], doc["failed"], doc["skipped"]) == (2, 0, 0)
    assert doc["out"] == str(out) and Path(doc["summary_csv"]).is_file()
    assert main(["predict", str(model), *images, "--out", str(out), "--no-progress", "--json"]) == 0
    assert (_json_out(capsys)["skipped"], 0) == (2, 0)  # resumed: nothing recomputed


def test_weights_verify_and_text_mode_unchanged(tmp_path: Path, capsys) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert main(["weights", "verify", str(f), digest, "--json"]) == 0
    assert _json_out(capsys) == {"path": str(f), "sha256": digest, "verified": True}
    assert main(["weights", "verify", str(f)]) == 0
    assert capsys.readouterr().out == f"{digest}  {f}\n"


def test_to_json_is_strict() -> None:
    import numpy as np

    assert json.loads(to_json({"a": float("nan"), "b": np.float32(0.5), "c": (1, Path("x"))})) == {
        "a": None, "b": 0.5, "c": [1, "x"]}  # fmt: skip
