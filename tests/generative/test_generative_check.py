"""``medimg run --check`` for the generative tasks: the manifest, the splits and every image read as the study
reads it; nothing trained, no MLflow run; a broken image is named, with a non-zero exit and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medimg.cli.main import main
from medimg.config.generative import load_generative_workflow
from medimg.errors import EXIT_INPUT_ERROR
from medimg.generative.run import read_cases

ROOT = Path(__file__).resolve().parents[2]
CASES = 8


def _overrides(root: Path, task: str) -> list[str]:
    small = [f"data.synthetic.cases={CASES}", "data.synthetic.shape=[24,24,16]"]
    if task == "superres":
        small += ["superres.patch_size=[16,16,16]"]
    return [*small, f"data.manifest={root}/data/manifest.csv", f"tracking.uri=sqlite:///{root}/mlflow.db",
            f"outputs.dir={root}/out"]  # fmt: skip


def _check(path: Path, overrides: list[str], capsys) -> tuple[int, str, str]:
    args = ["run", str(path), "--check", "--json"]
    for item in overrides:
        args += ["--set", item]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("task", ["anomaly", "superres", "synthesis"])
def test_check_reads_every_case_of_each_split_and_trains_nothing(tmp_path: Path, task: str, capsys) -> None:
    path = ROOT / f"workflows/quickstart-{task}.yaml"
    overrides = _overrides(tmp_path, task)
    code, out, err = _check(path, overrides, capsys)
    assert code == 0, err
    document = json.loads(out)
    expected = read_cases(load_generative_workflow(path, overrides))["split"].value_counts()
    assert document["ok"] is True and document["task"] == task and document["cases"] == CASES
    assert document["splits"] == {k: int(v) for k, v in expected.items()}
    assert sum(document["splits"].values()) == CASES and document["splits"]["train"] >= 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()  # nothing trained


def test_check_names_a_corrupt_image_and_exits_non_zero(tmp_path: Path, capsys) -> None:
    path = ROOT / "workflows/quickstart-anomaly.yaml"
    overrides = _overrides(tmp_path, "anomaly")
    assert _check(path, overrides, capsys)[0] == 0  # the synthetic study, generated and read
    manifest = pd.read_csv(tmp_path / "data/manifest.csv")
    image = Path(manifest["image"].iloc[3])
    if not image.is_absolute():
        image = tmp_path / "data" / image
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # truncated: a half-copied file
    code, out, err = _check(path, overrides, capsys)
    assert code == EXIT_INPUT_ERROR
    assert image.name in err and str(manifest["case_key"].iloc[3]) in err
    assert f"1 of {CASES} cases cannot be used" in err
    assert "Traceback" not in err and json.loads(out)["exit_code"] == EXIT_INPUT_ERROR


def test_check_refuses_a_grid_the_generator_cannot_use(tmp_path: Path, capsys) -> None:
    overrides = [*_overrides(tmp_path, "synthesis"), "preprocessing.spatial_size=[18,16,16]"]
    code, _, err = _check(ROOT / "workflows/quickstart-synthesis.yaml", overrides, capsys)
    assert code == EXIT_INPUT_ERROR and "preprocessing.spatial_size [18, 16, 16]" in err
    assert "divisible by 4" in err and not (tmp_path / "data").exists()  # refused before any data is read
