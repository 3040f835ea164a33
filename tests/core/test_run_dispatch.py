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
            "an anomaly workflow does not take --folds, --resume yet",
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
