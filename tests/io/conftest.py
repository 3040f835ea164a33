"""Shared settings for the I/O tests: a fixed pseudonym key and a private MEDIMG_HOME."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("MEDIMG_PSEUDONYM_KEY", "medimg-test-key")
    monkeypatch.setenv("MEDIMG_HOME", str(tmp_path_factory.mktemp("medimg_home")))
