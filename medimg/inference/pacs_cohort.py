"""Glue between a PACS and the cohort runner: cases from a query, lazy retrieval, storing results.

* :func:`pacs_cases` turns queried series into cases keyed on their SOP Instance UIDs
  (DICOM instances are immutable per UID), so nothing is downloaded to decide what
  is already done;
* :func:`retrieving` wraps a ``load_fn`` so each series is retrieved (WADO-RS) in the
  runner's background loader threads, overlapping the network with compute; the
  retrieved series is then classified as ``medimg scan`` classifies a folder: a
  localizer, derived image, secondary capture or non-image object is set aside with
  its reason (not a failure), and a series that splits into several usable volumes
  is refused with their keys rather than read as one;
* :class:`PacsStoreWriter` stores a case's SEG and SR (STOW-RS) as its last output and
  writes a receipt, so a case is done only once its results are in the PACS.

Case ids are pseudonymous (a hash of the series UID), never patient attributes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medimg.errors import ConfigError, DataError
from medimg.inference.cases import CaseInput, CaseOutputs, SetAside, SetAsideError
from medimg.inference.pacs import PacsClient, SeriesInfo
from medimg.io.atomic import atomic_write_text

NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "RTSTRUCT", "RTPLAN", "DOC", "REG"})
"""Series modalities that hold no image to predict on; left out of a PACS cohort."""


def query_filters(items: Sequence[str]) -> dict[str, str]:
    """``["StudyDate=20240101-20240131"]`` -> ``{"StudyDate": "20240101-20240131"}`` (``--pacs-filter``).

    Example:
        >>> query_filters(["Modality=CT", "StudyDate=2024"])
        {'Modality': 'CT', 'StudyDate': '2024'}
    """
    filters = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--pacs-filter {item!r}: expected TAG=VALUE")
        key, value = item.split("=", 1)
        filters[key] = value
    return filters


def series_case_id(series_uid: str) -> str:
    """Pseudonymous case id of a PACS series: ``s-`` + 16 hex digits of sha256(series UID).

    Example:
        >>> series_case_id("1.2.3")
        's-c47f5b18b8a430e6'
    """
    return "s-" + hashlib.sha256(series_uid.encode()).hexdigest()[:16]


def pacs_cases(client: PacsClient, series: Sequence[SeriesInfo], cache_dir: Path) -> list[CaseInput]:
    """Cases for queried series; each will be retrieved into ``cache_dir/<case_id>``.

    Example:
        >>> cases = pacs_cases(pacs, pacs.query_series(modality="CT"), Path("cache"))  # doctest: +SKIP
    """
    cases = []
    for info in series:
        if info.modality in NON_IMAGE_MODALITIES:
            continue
        uids = client.instance_uids(info.study_uid, info.series_uid)
        if not uids:
            raise DataError(f"PACS series {info.series_uid}: no instances")
        content = hashlib.sha256(("\n".join(uids)).encode()).hexdigest()
        case_id = series_case_id(info.series_uid)
        meta = {"study_uid": info.study_uid, "series_uid": info.series_uid, "sop_uids": uids}
        cases.append(CaseInput(case_id, (Path(cache_dir) / case_id,), content_sha256=content, meta=meta))
    return cases


def pacs_set_aside(series: Sequence[SeriesInfo]) -> list[SetAside]:
    """The queried series that are no case by their modality (SEG, SR, ...), listed with the reason.

    Example:
        >>> info = SeriesInfo("1.2", "1.2.3", "SR", 99, 1)
        >>> pacs_set_aside([info])[0].reason
        'modality SR (no image to predict on)'
    """
    return [
        SetAside(
            series_case_id(info.series_uid), "non_image", f"modality {info.modality} (no image to predict on)"
        )
        for info in series
        if info.modality in NON_IMAGE_MODALITIES
    ]


def retrieving(client: PacsClient, load_fn: Callable[[CaseInput], Any]) -> Callable[[CaseInput], Any]:
    """Wrap ``load_fn`` so the case's series is retrieved first (skipped when already cached).

    Example:
        >>> run_cohort(cases, predict, out, load_fn=retrieving(pacs, load_case), ...)  # doctest: +SKIP
    """

    def load(case: CaseInput) -> Any:
        folder = case.paths[0]
        expected = set(case.meta.get("sop_uids", ()))
        cached = {p.stem for p in folder.glob("*.dcm")} if folder.is_dir() else set()
        if not expected or not expected <= cached:
            files = client.retrieve_series(case.meta["study_uid"], case.meta["series_uid"], folder)
            missing = expected - {p.stem for p in files}
            if missing:
                raise DataError(
                    f"case {case.case_id}: the PACS returned {len(files)} instances, "
                    f"{len(missing)} of the queried ones are missing"
                )
        case.meta.update(_one_usable_series(case, folder))
        return load_fn(case)

    return load


def _one_usable_series(case: CaseInput, folder: Path) -> dict[str, Any]:
    """Classify a retrieved series; the ``image``/``series_key`` of its one usable volume.

    Raises:
        SetAsideError: the series is a localizer, derived, secondary capture or non-image object.
        DataError: it is broken, or splits into several usable volumes.
    """
    from medimg.inference.series_inputs import scan_series

    result = scan_series(folder)
    keys = list(result.series)
    if len(keys) == 1:
        return {"image": f"{folder}#{keys[0]}", "series_key": keys[0], "dicom": True}
    if len(keys) > 1:
        raise DataError(
            f"case {case.case_id}: the PACS series splits into {len(keys)} usable volumes ({', '.join(keys)}) "
            "(orientation, echo or time); predicting on one PACS series that holds several is not supported"
        )
    entry = next((e for e in result.excluded if not e.is_problem), None)
    if entry is not None:
        raise SetAsideError(entry.reason, entry.kind)
    reasons = "; ".join(sorted({e.reason for e in result.excluded})[:3]) or "no DICOM files"
    raise DataError(f"case {case.case_id}: no usable volume in the retrieved series ({reasons})")


class PacsStoreWriter:
    """Store what earlier writers wrote (by default the DICOM SEG and SR) into the PACS.

    List it last: the runner marks a case done only after it returns, so a done case
    is a stored case. Writes ``pacs_store.json`` (the stored SOP Instance UIDs).

    Example:
        >>> writers = [DicomSegWriter(algo), DicomSrWriter(algo), PacsStoreWriter(pacs)]  # doctest: +SKIP
    """

    name = "pacs_store"

    def __init__(self, client: PacsClient, store: Sequence[str] = ("dicom_seg", "dicom_sr")) -> None:
        self.client = client
        self.store = tuple(store)

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        paths = [outputs.written[name] for name in self.store if name in outputs.written]
        if not paths:
            raise DataError(
                f"case {case.case_id}: nothing to store; run one of {self.store} before {self.name}"
            )
        uids = self.client.store(paths)
        receipt = {"stored_sop_instance_uids": uids, "files": [p.name for p in paths]}
        return [atomic_write_text(case_dir / "pacs_store.json", json.dumps(receipt, indent=2) + "\n")]
