"""Shared fixtures of the models tests: a private weights cache and frugal torch."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own MEDIMG_CACHE (downloads, bundles, MLflow artifacts) and HF cache."""
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "medimg-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
