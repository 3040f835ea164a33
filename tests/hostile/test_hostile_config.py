"""Hostile or careless configuration, weights and command lines, through the real CLI.

Each input is refused with a non-zero exit code and one line naming the file or key,
without a traceback, and leaves nothing behind outside the output folder. One tiny study is
trained once for the module, itself with a pickle-loaded pretrained file allowed by
``--allow-pickle``, so that the permitted path is exercised too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import TINY, tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.errors import (
    EXIT_INPUT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    ConfigError,
    DataError,
)

ROOT = Path(__file__).resolve().parents[2]


class _Touch:
    """Unpickles into ``Path.touch(marker)``: a payload that leaves a visible trace."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _net_state() -> dict[str, torch.Tensor]:
    from medimg.config.load import parse_workflow
    from medimg.models.networks import build_model

    return dict(build_model(parse_workflow(json.loads(json.dumps(TINY)))).state_dict())


def _payload_file(path: Path, marker: Path) -> Path:
    """A torch.save checkpoint with the network's weights and a code-running extra entry."""
    torch.save({"state_dict": _net_state(), "note": _Touch(marker)}, path)
    return path


def _pickle_workflow(path: Path, weights: Path) -> Path:
    wf = tiny_workflow(trainer={"max_epochs": 1})
    wf["model"]["pretrained"] = {"source": str(weights), "allow_pickle": True}
    return write_wf(path, wf)


def _one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("medimg ")]
    assert len(lines) == 1 and ": error: " in lines[0], err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study, trained once for the module (one epoch)."""
    root = tmp_path_factory.mktemp("hostile")
    wf = write_wf(root / "tiny.yaml", tiny_workflow(trainer={"max_epochs": 1}))
    old = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDIMG_CACHE", str(root / "cache"))
        os.chdir(root)
        try:
            code = main(["run", str(wf)])
        finally:
            os.chdir(old)
    assert code == EXIT_OK
    info = json.loads((root / "runs/tiny_seg/run.json").read_text())
    image = root / "data/synth" / pd.read_csv(root / "data/synth/manifest.csv").image[0]
    return {"root": root, "image": image, "model": root / "runs/tiny_seg/model", **info}


# --- allow_pickle -------------------------------------------------------------------------------


def test_workflow_alone_cannot_switch_on_pickle(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDIMG_ALLOW_PICKLE", raising=False)
    marker = tmp_path / "payload-ran"
    wf = _pickle_workflow(tmp_path / "shared.yaml", _payload_file(tmp_path / "evil.pt", marker))
    for extra in (["--check"], []):
        assert main(["run", str(wf), *extra]) == EXIT_INPUT_ERROR
        _one_error_line(
            capsys.readouterr().err,
            "shared.yaml",
            "model.pretrained.allow_pickle",
            "--allow-pickle",
            "MEDIMG_ALLOW_PICKLE=1",
        )
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_library_load_of_a_pickle_workflow_also_needs_the_grant(tmp_path, monkeypatch):
    """The gate holds where the weights are read (reproduce, scripts), not only in the CLI."""
    from medimg.config.weights import PretrainedSpec
    from medimg.models.loading import load_pretrained
    from medimg.models.networks import build_network

    monkeypatch.delenv("MEDIMG_ALLOW_PICKLE", raising=False)
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "note": _Touch(marker)}, evil)
    with pytest.raises(ConfigError, match=r"model.pretrained.allow_pickle.*MEDIMG_ALLOW_PICKLE=1"):
        load_pretrained(build_network("resnet10", in_channels=1, out_channels=2),
                        PretrainedSpec(source=str(evil), allow_pickle=True))  # fmt: skip
    assert not marker.exists()


def test_pickle_with_the_flag_loads_with_a_warning_naming_the_file(study, caplog, monkeypatch):
    monkeypatch.delenv("MEDIMG_ALLOW_PICKLE", raising=False)
    root = study["root"]
    marker = root / "payload-ran"
    weights = _payload_file(root / "pretrained.pt", marker)
    wf = tiny_workflow(trainer={"max_epochs": 1}, outputs={"dir": "runs/pickled"})
    wf["model"]["pretrained"] = {"source": str(weights), "allow_pickle": True}
    monkeypatch.chdir(root)  # the study's synthetic data, another output folder
    with caplog.at_level(logging.WARNING, logger="medimg.trust"):
        assert main(["run", str(write_wf(root / "pickled.yaml", wf)), "--allow-pickle"]) == EXIT_OK
    assert marker.exists()  # the user allowed it, so the file's code did run
    named = [r.getMessage() for r in caplog.records if str(weights) in r.getMessage()]
    assert named and "code inside it runs" in named[0] and "allow_pickle" in named[0]
    run = json.loads((root / "runs/pickled/run.json").read_text())
    import mlflow

    tags = mlflow.MlflowClient(run["tracking_uri"]).get_run(run["run_id"]).data.tags
    assert tags["medimg.pretrained_source"] == str(weights)


# --- weights verified against their record --------------------------------------------------------


def _flip_last_byte(path: Path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    return original


def test_runs_model_verified_and_temporary_copy_removed(study, tmp_path, capsys, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    ref = f"runs:/{study['run_id']}"
    args = [str(study["image"]), "--tracking-uri", study["tracking_uri"], "--no-progress"]
    assert main(["predict", ref, *args, "--out", str(tmp_path / "ok")]) == EXIT_OK
    assert not list(scratch.rglob("*")), "predict left a copy of the model in the temp folder"

    artifact = next(
        (study["root"] / "runs/mlartifacts").rglob(f"{study['run_id']}/artifacts/model/model.safetensors")
    )
    recorded = hashlib.sha256(artifact.read_bytes()).hexdigest()
    original = _flip_last_byte(artifact)
    try:
        actual = hashlib.sha256(artifact.read_bytes()).hexdigest()
        assert main(["predict", ref, *args, "--out", str(tmp_path / "bad")]) == EXIT_INPUT_ERROR
    finally:
        artifact.write_bytes(original)
    _one_error_line(capsys.readouterr().err, f"runs:/{study['run_id']}/model/model.safetensors",
                    recorded, actual, "medimg.weights_sha256")  # fmt: skip
    assert not list(scratch.rglob("*")) and not (tmp_path / "bad/cases").exists()


@pytest.fixture
def model_copy(study, tmp_path):
    return Path(shutil.copytree(study["model"], tmp_path / "model"))


def _predict(model: Path, study, out: Path) -> int:
    return main(["predict", str(model), str(study["image"]), "--out", str(out), "--no-progress"])


def test_tampered_model_folder_is_refused(study, model_copy, tmp_path, capsys):
    record = json.loads((model_copy / "model.json").read_text())["files"]
    weights = model_copy / "model.safetensors"
    _flip_last_byte(weights)
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert _predict(model_copy, study, tmp_path / "out") == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, str(weights), record["model.safetensors"], actual, "model.json")
    assert not (tmp_path / "out/cases").exists()


def test_tampered_workflow_in_a_model_folder_is_refused(study, model_copy, tmp_path, capsys):
    import yaml

    wf = model_copy / "workflow.yaml"
    data = yaml.safe_load(wf.read_text())
    assert data["preprocessing"]["intensity"]["window"][0] == -200
    data["preprocessing"]["intensity"]["window"][0] = -1000  # another intensity window: other masks
    wf.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _predict(model_copy, study, tmp_path / "out") == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, str(wf), "does not match")


def test_folder_without_record_refused_until_recorded(study, model_copy, tmp_path, capsys):
    (model_copy / "model.json").unlink()
    assert _predict(model_copy, study, tmp_path / "out") == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, "no sha256 record", f"medimg weights record {model_copy}")
    assert main(["weights", "record", str(model_copy)]) == EXIT_OK
    assert main(["weights", "record", str(model_copy)]) == EXIT_INPUT_ERROR  # never silently replaced
    capsys.readouterr()
    assert _predict(model_copy, study, tmp_path / "out") == EXIT_OK


def _rerecord(folder: Path) -> None:
    """What someone who also edits model.json does: the record then matches the hostile file."""
    from medimg.models.record import write_record

    write_record(folder)


def test_zip_pickle_named_safetensors_is_refused_without_unpickling(study, model_copy, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    _payload_file(model_copy / "model.safetensors", marker)
    _rerecord(model_copy)
    assert _predict(model_copy, study, tmp_path / "out") == EXIT_INPUT_ERROR
    _one_error_line(
        capsys.readouterr().err, "model.safetensors", "torch.save zip (pickle)", "never unpickles"
    )
    assert not marker.exists()
    pretrained = tmp_path / "encoder.safetensors"
    _payload_file(pretrained, marker)
    assert main(["weights", "inspect", str(pretrained)]) == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, str(pretrained), "refused")
    assert not marker.exists()


def test_wrong_shaped_tensor_is_named(study, model_copy, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_copy / "model.safetensors"))
    key = next(k for k, v in state.items() if v.ndim == 5)
    bad_shape = [*state[key].shape[:-1], state[key].shape[-1] + 1]
    state[key] = torch.zeros(bad_shape)
    save_file(state, str(model_copy / "model.safetensors"))
    _rerecord(model_copy)
    assert _predict(model_copy, study, tmp_path / "out") == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, repr(key), str(bad_shape), "the network expects")


# --- YAML ----------------------------------------------------------------------------------------


def test_duplicate_yaml_key_names_key_and_lines(tmp_path, capsys):
    wf = tmp_path / "dup.yaml"
    wf.write_text(textwrap.dedent("""\
        name: dup
        task: segmentation
        optim:
          lr: 0.1
          batch_size: 2
          lr: 100.0
        """))  # fmt: skip
    assert main(["run", str(wf), "--check"]) == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, str(wf), "line 6", "duplicate key 'lr'", "line 4")


def _alias_bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


_BOUNDED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (768 * 2**20, 768 * 2**20))
from medimg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _run_bounded(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _BOUNDED, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    proc.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    return proc


def test_alias_bomb_in_a_workflow_fails_fast_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: bomb\ntask: segmentation\n" + _alias_bomb())  # 9**9 strings if expanded
    proc = _run_bounded(tmp_path, "run", str(bomb), "--check")
    assert proc.returncode == EXIT_INPUT_ERROR, proc.stderr[-2000:]
    _one_error_line(proc.stderr, str(bomb), "alias")
    assert proc.seconds < 60  # interpreter start-up included; the refusal itself takes milliseconds


def test_alias_bomb_through_set_is_refused(tmp_path):
    wf = write_wf(tmp_path / "wf.yaml", TINY)
    items = [line.split(": ", 1)[1] for line in _alias_bomb().strip().splitlines()]
    value = "[" + ", ".join(items) + "]"  # a list: its repr in an error message would expand it
    proc = _run_bounded(tmp_path, "run", str(wf), "--check", "--set", f"optim.lr={value}")
    assert proc.returncode == EXIT_INPUT_ERROR, proc.stderr[-2000:]
    _one_error_line(proc.stderr, "--set", "alias")


def test_bomb_refusal_is_bounded_in_process():
    from medimg.config.yaml_strict import load_yaml_text

    start = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        load_yaml_text(_alias_bomb(12), "bomb.yaml")  # 9**12 if expanded
    assert time.monotonic() - start < 1.0


# --- CSV formula injection -----------------------------------------------------------------------


def test_formula_folder_names_are_escaped_in_manifest_and_paths_still_resolve(tmp_path, capsys):
    hostile = '=HYPERLINK("http://x","open")'
    folder = tmp_path / hostile / "-ct"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), folder / "@scan.nii.gz")
    (tmp_path / hostile / "+broken.nii.gz").write_bytes(b"\x00" * 400)
    # tables beside the hostile folder, so the paths (relative to the tables) start with its name
    assert main(["scan", hostile, "--out", "."]) == EXIT_SOME_FAILED  # one broken file
    for table in ("manifest.csv", "excluded.csv"):
        with open(tmp_path / table, newline="") as handle:
            cells = [c for row in csv.reader(handle) for c in row]
        assert cells and not [c for c in cells if c.startswith(("=", "+", "-", "@"))], cells
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    image = manifest.image[0]
    assert image.startswith("./=HYPERLINK"), image
    assert (tmp_path / image).resolve() == (folder / "@scan.nii.gz").resolve() and (
        tmp_path / image
    ).is_file()


def test_text_cells_round_trip_through_the_escape(tmp_path):
    from medimg.io.csvsafe import read_csv_unescaped
    from medimg.io.scan import write_table

    rows = [{"image": "/abs/ct.nii.gz", "manufacturer": "=cmd|' /C calc'!A0", "model": "'quoted", "n": -2}]
    write_table(rows, ["image", "manufacturer", "model", "n"], tmp_path / "t.csv")
    raw = (tmp_path / "t.csv").read_text().splitlines()[1]
    assert raw.startswith("/abs/ct.nii.gz,'=cmd") and raw.endswith(",-2")
    back = read_csv_unescaped(tmp_path / "t.csv").iloc[0].to_dict()
    assert back == {**rows[0]}


# --- exit codes ----------------------------------------------------------------------------------


def test_exit_codes_per_class(study, tmp_path, capsys, monkeypatch):
    import medimg.cli.schema as schema_cmd

    assert main(["weights", "list", "--json"]) == EXIT_OK
    with pytest.raises(SystemExit) as usage:
        main(["predict", "--no-such-option"])
    assert usage.value.code == EXIT_USAGE
    assert main(["run", str(tmp_path / "missing.yaml")]) == EXIT_INPUT_ERROR  # ConfigError
    assert main(["scan", str(tmp_path / "nowhere")]) == EXIT_INPUT_ERROR  # DataError
    assert (
        main(["weights", "inspect", str(tmp_path / "none.safetensors")]) == EXIT_INPUT_ERROR
    )  # WeightsError
    capsys.readouterr()
    bad = [tmp_path / f"bad{i}.nii.gz" for i in range(3)]
    for path in bad:
        path.write_bytes(b"garbage")
    code = main(
        ["predict", str(study["model"]), *map(str, bad), "--out", str(tmp_path / "p"), "--no-progress"]
    )
    assert code == EXIT_SOME_FAILED and "failed 3" in capsys.readouterr().out  # the count is printed

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(schema_cmd, "execute", interrupted)
    assert main(["schema"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "medimg schema: interrupted"


def test_wrapped_medimg_errors_print_one_line(monkeypatch, capsys):
    import medimg.cli.schema as schema_cmd

    def wrapped(args):
        try:
            raise DataError("case_0003/image.nii.gz: truncated (expected 1200 bytes of voxels)")
        except DataError as exc:
            raise RuntimeError("applying transform <monai.transforms.LoadImaged>") from exc

    monkeypatch.setattr(schema_cmd, "execute", wrapped)
    assert main(["schema"]) == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, "case_0003/image.nii.gz: truncated")

    def from_worker(args):  # what torch re-raises from a DataLoader worker: only the text survives
        raise RuntimeError(
            "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\nmedimg.errors.GeometryError: label.nii.gz: affine differs from image'
        )

    monkeypatch.setattr(schema_cmd, "execute", from_worker)
    assert main(["schema"]) == EXIT_INPUT_ERROR
    _one_error_line(capsys.readouterr().err, "label.nii.gz: affine differs from image")

    def bug(args):
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr(schema_cmd, "execute", bug)
    with pytest.raises(ZeroDivisionError):
        main(["schema"])  # bugs keep their traceback


# --- MLflow telemetry ----------------------------------------------------------------------------


def test_mlflow_telemetry_is_off_and_writes_nothing_under_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # No CI or pytest variables (MLflow skips telemetry under those); caches kept out of HOME on purpose.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(home),
           "MEDIMG_CACHE": str(tmp_path / "cache"), "MPLCONFIGDIR": str(tmp_path / "mpl")}  # fmt: skip
    run_id = "0" * 32
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    cli = [sys.executable, "-m", "medimg", "predict", f"runs:/{run_id}", "x.nii.gz", "--out", "o",
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    proc = subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_INPUT_ERROR, proc.stderr[-2000:]
    _one_error_line(proc.stderr, run_id)
    lib = "import medimg.inference.pyfunc, mlflow.telemetry.utils as u; print(u.is_telemetry_disabled())"
    proc = subprocess.run([sys.executable, "-c", lib], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.stdout.strip() == "True", proc.stderr[-2000:]
    written = [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()]
    assert not written, f"written under HOME: {written}"  # MLflow's would be .config/mlflow/telemetry.json
