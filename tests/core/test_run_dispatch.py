"""``medimg run`` sends detection and anomaly/superres workflows to their own studies, and refuses
the study options those do not take yet, naming the workflow and the options (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("workflow", "options", "message"),
    [
        ("quickstart-detection.yaml", ["--check"], "a detection workflow does not take --check yet"),
        (
            "quickstart-anomaly.yaml",
            ["--folds", "2", "--resume"],
            "an anomaly workflow does not take --folds yet",  # --resume it takes
        ),
        (
            "quickstart-detection.yaml",
            ["--folds", "2", "--resume"],
            "a detection workflow does not take --folds yet",  # --resume it takes
        ),
        ("quickstart-superres.yaml", ["--seeds", "1,2"], "a superres workflow does not take --seeds yet"),
    ],
)
def test_unsupported_options_are_refused_by_name(workflow: str, options: list[str], message: str) -> None:
    path = ROOT / "workflows" / workflow
    proc = subprocess.run(
        [sys.executable, "-m", "medimg", "run", str(path), *options], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 3, proc.stderr
    assert f"{path}: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr


_calls: list[tuple] = []


def toy_study(path, overrides, **flags):
    """A plug-in task's own study, as the registry calls it."""
    _calls.append((str(path), list(overrides), flags))
    return {"ran": True, "flags": flags}, ["toy study ran"], 0


def test_a_registered_task_with_its_own_study_is_run_by_medimg_run(tmp_path, monkeypatch, capsys):
    from medimg.cli.main import main
    from medimg.tasks import Task, registry

    toy = Task("toy", "a plug-in", target="boxes", dense=True, channels="classes",
               study="test_run_dispatch:toy_study", run_flags=("resume",))  # fmt: skip
    monkeypatch.setitem(registry._TASKS, "toy", toy)
    wf = tmp_path / "toy.yaml"
    wf.write_text("task: toy\nanything: the task's own schema reads it\n")
    _calls.clear()
    assert main(["run", str(wf), "--resume", "--set", "a.b=1"]) == 0
    assert _calls == [(str(wf), ["a.b=1"], {"resume": True})]  # the flag it takes, and only that one
    assert "toy study ran" in capsys.readouterr().out
    assert main(["run", str(wf), "--folds", "3"]) == 3  # a flag it does not take: refused by name
    assert f"{wf}: a toy workflow does not take --folds yet" in capsys.readouterr().err
    assert len(_calls) == 1
    wf.write_text("task: segmentaton\ndata: {manifest: m.csv}\n")  # not registered: the schema says what is
    assert main(["run", str(wf)]) == 3
    assert "segmentaton" in capsys.readouterr().err and len(_calls) == 1


def test_the_generative_studies_take_resume_as_their_runner_does():
    import inspect

    from medimg.tasks import get_task, task_entry

    for name in ("anomaly", "superres", "synthesis"):
        task = get_task(name)
        flags = {"check": False, "resume": True}
        assert task.take_run_flags("wf.yaml", flags) == flags
        assert {"resume", "check"} <= set(inspect.signature(task_entry(task, "study")).parameters)
