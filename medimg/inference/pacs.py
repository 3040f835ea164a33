"""A PACS over DICOMweb: query (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS).

Credentials come from the environment only, never from a command line or a config
file: ``MEDIMG_PACS_USER`` + ``MEDIMG_PACS_PASSWORD`` (HTTP basic) or
``MEDIMG_PACS_TOKEN`` (a bearer token). A URL with credentials in it is refused.
Nothing here logs patient attributes; results name series by their UIDs.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medimg.errors import ConfigError, MedimgError
from medimg.io.atomic import atomic_write

log = logging.getLogger(__name__)

ENV_USER = "MEDIMG_PACS_USER"
ENV_PASSWORD = "MEDIMG_PACS_PASSWORD"
ENV_TOKEN = "MEDIMG_PACS_TOKEN"


class PacsError(MedimgError):
    """The PACS refused or failed a request; the message names the URL and the status."""


@dataclass(frozen=True)
class SeriesInfo:
    """One series found by a query (no patient attributes)."""

    study_uid: str
    series_uid: str
    modality: str
    series_number: int | None
    n_instances: int | None


def _value(item: Mapping[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _session_from_env(url: str) -> tuple[Any, dict[str, str]]:
    import requests

    session = requests.Session()
    headers: dict[str, str] = {}
    user, password, token = (os.environ.get(k) for k in (ENV_USER, ENV_PASSWORD, ENV_TOKEN))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user or password:
        if not (user and password):
            raise ConfigError(f"PACS credentials: set both {ENV_USER} and {ENV_PASSWORD} (or {ENV_TOKEN})")
        session.auth = (user, password)
    return session, headers


class PacsClient:
    """DICOMweb client for one PACS, authenticated from the environment.

    Args:
        url: the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``.
        timeout: seconds per HTTP request.

    Example:
        >>> pacs = PacsClient("http://localhost:8042/dicom-web")  # doctest: +SKIP
        >>> for s in pacs.query_series(modality="CT"):  # doctest: +SKIP
        ...     files = pacs.retrieve_series(s.study_uid, s.series_uid, Path("in") / s.series_uid)
        >>> pacs.store([Path("out/seg.dcm"), Path("out/sr.dcm")])  # doctest: +SKIP
    """

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"PACS URL {url!r}: expected http(s)://host[:port]/dicomweb-root")
        if parsed.username or parsed.password:
            raise ConfigError(
                f"PACS URL for {parsed.hostname}: credentials in the URL are refused; "
                f"set {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN} in the environment"
            )
        from medimg.extras import require

        DICOMwebClient = require("dicomweb_client.api", "medimg predict --pacs").DICOMwebClient

        self.url = url.rstrip("/")
        session, headers = _session_from_env(self.url)
        self._client = DICOMwebClient(self.url, session=session, headers=headers or None, timeout=timeout)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            hint = " (check the PACS credentials in the environment)" if status in (401, 403) else ""
            raise PacsError(f"{what} at {self.url} failed: HTTP {status}{hint}") from exc
        except requests.RequestException as exc:
            raise PacsError(f"{what} at {self.url} failed: {type(exc).__name__}") from exc

    def query_series(
        self,
        study_uid: str | None = None,
        *,
        modality: str | None = None,
        filters: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[SeriesInfo]:
        """Find series (QIDO-RS), optionally within one study and by modality or other attributes.

        Example:
            >>> pacs.query_series(modality="CT", filters={"StudyDate": "20240101-20240131"})  # doctest: +SKIP
        """
        search = dict(filters or {})
        if modality:
            search["Modality"] = modality
        fields = ["NumberOfSeriesRelatedInstances", "Modality", "SeriesNumber"]
        found = self._call(
            "QIDO-RS series query",
            self._client.search_for_series,
            study_instance_uid=study_uid,
            search_filters=search or None,
            fields=fields,
            limit=limit,
            get_remaining=limit is None,
        )
        out = []
        for item in found:
            number, count = _value(item, "00200011"), _value(item, "00201209")
            out.append(
                SeriesInfo(
                    study_uid=str(_value(item, "0020000D")),
                    series_uid=str(_value(item, "0020000E")),
                    modality=str(_value(item, "00080060") or ""),
                    series_number=int(number) if number is not None else None,
                    n_instances=int(count) if count is not None else None,
                )
            )
        return out

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """SOP Instance UIDs of a series (QIDO-RS), sorted.

        Example:
            >>> pacs.instance_uids(study_uid, series_uid)[:1]  # doctest: +SKIP
            ['1.2.826.0.1.3680043.8.498.1']
        """
        found = self._call(
            "QIDO-RS instance query",
            self._client.search_for_instances,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            fields=["SOPInstanceUID"],
            get_remaining=True,
        )
        return sorted(str(_value(item, "00080018")) for item in found)

    def retrieve_series(
        self, study_uid: str, series_uid: str, dest_dir: str | os.PathLike[str]
    ) -> list[Path]:
        """Download every instance of a series (WADO-RS) as ``<SOPInstanceUID>.dcm`` files.

        Each file is written atomically; an interrupted download leaves no partial file,
        and running it again overwrites what is there.

        Example:
            >>> files = pacs.retrieve_series(study_uid, series_uid, Path("cache") / series_uid)  # doctest: +SKIP
        """
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        iterator = self._call("WADO-RS series retrieve", self._client.iter_series, study_uid, series_uid)
        while True:
            dataset = self._call("WADO-RS series retrieve", next, iterator, None)
            if dataset is None:
                break
            path = dest / f"{dataset.SOPInstanceUID}.dcm"
            with atomic_write(path) as tmp:
                dataset.save_as(tmp, enforce_file_format=True)
            paths.append(path)
        if not paths:
            raise PacsError(f"WADO-RS series retrieve at {self.url}: series {series_uid} has no instances")
        log.info("retrieved %d instances of series %s", len(paths), series_uid)
        return paths

    def store(self, paths: Iterable[str | os.PathLike[str]], *, batch_size: int = 50) -> list[str]:
        """Upload DICOM files (STOW-RS) and return the SOP Instance UIDs the PACS accepted.

        Raises :class:`PacsError` when the PACS reports any instance as failed.

        Example:
            >>> pacs.store(["out/case-001/seg.dcm", "out/case-001/sr.dcm"])  # doctest: +SKIP
        """
        import pydicom

        files = [Path(p) for p in paths]
        stored: list[str] = []
        for start in range(0, len(files), batch_size):
            datasets = [pydicom.dcmread(p) for p in files[start : start + batch_size]]
            stored.extend(self._store_batch(datasets))
        return stored

    def _store_batch(self, datasets: Sequence[Any]) -> list[str]:
        response = self._call("STOW-RS store", self._client.store_instances, datasets)
        accepted = [str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])]
        failed = [str(item.ReferencedSOPInstanceUID) for item in response.get("FailedSOPSequence", [])]
        if failed:
            raise PacsError(
                f"STOW-RS store at {self.url}: {len(failed)} instance(s) refused: {', '.join(failed[:5])}"
            )
        return accepted
