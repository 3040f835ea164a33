"""Series written by medimg (and de-identified copies) pass the dciodvfy DICOM validator."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dicom_phantoms import phantom

from medimg.io.dicom.deid import deidentify_folder
from medimg.io.dicom.write import write_series


def dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("dciodvfy (dicom3tools) is required under CI")
        pytest.skip("dciodvfy (dicom3tools) not installed")
    return path


def errors(tool: str, path: Path) -> list[str]:
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("modality", ["CT", "MR", "PT", "OT"])
def test_written_series_validate(tmp_path: Path, modality: str) -> None:
    tool = dciodvfy()
    files = write_series(phantom("axial", shape=(12, 10, 3)), tmp_path / modality, modality=modality,
                         rescale=(1.0, -1024.0) if modality == "CT" else (1.0, 0.0))  # fmt: skip
    assert errors(tool, files[1]) == []
    written, _ = deidentify_folder(tmp_path / modality, tmp_path / "deid")
    assert errors(tool, written[0]) == []
