"""Suite-wide settings: quiet, frugal, and nothing leaves the machine."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")

import pytest


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder, so relative workflow paths never touch the checkout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "cache"))
    yield
