"""PacsClient configuration without a server: credentials from the environment only."""

from __future__ import annotations

import pytest

from medimg.errors import ConfigError
from medimg.inference.pacs import PacsClient


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEDIMG_PACS_USER", "MEDIMG_PACS_PASSWORD", "MEDIMG_PACS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_token_and_basic_auth_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIMG_PACS_TOKEN", "t0ken")
    session = PacsClient("http://127.0.0.1:9/dicom-web")._client._session
    assert session.headers["Authorization"] == "Bearer t0ken" and session.auth is None
    monkeypatch.delenv("MEDIMG_PACS_TOKEN")
    monkeypatch.setenv("MEDIMG_PACS_USER", "reader")
    monkeypatch.setenv("MEDIMG_PACS_PASSWORD", "secret")
    session = PacsClient("http://127.0.0.1:9/dicom-web/")._client._session
    assert session.auth == ("reader", "secret") and "Authorization" not in session.headers


def test_bad_urls_and_half_credentials_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="credentials in the URL"):
        PacsClient("http://reader:secret@pacs.example/dicom-web")
    with pytest.raises(ConfigError, match=r"http\(s\)://"):
        PacsClient("pacs.example/dicom-web")
    monkeypatch.setenv("MEDIMG_PACS_PASSWORD", "secret")
    with pytest.raises(ConfigError, match="MEDIMG_PACS_USER"):
        PacsClient("http://pacs.example/dicom-web")
