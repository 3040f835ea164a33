"""DICOM inputs of a cohort: one case per usable series, everything else listed with its reason.

A folder given to ``medimg predict`` (a hospital export, a study, a series) is
scanned exactly as ``medimg scan`` scans it (:func:`medimg.io.scan.scan`): series
are grouped, split and classified, and each usable series becomes one case.
Localizers, derived images, secondary captures and non-image objects (structured
reports, presentation states, ...) are set aside; broken series are failures;
files that are not readable DICOM are listed as unreadable. Nothing is read as one
volume by accident.

Case ids come from the pseudonymous keys, never from names or IDs:
``patient-<8 hex>_series-<12 hex>`` (the patient key first, so a patient's series
sort together). The same export with the same pseudonym key gives the same ids,
so a rerun skips finished series.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from medimg.inference.cases import CaseInput, SetAside
from medimg.io.dicom.discover import Excluded
from medimg.io.scan import ScanResult, scan

DICOM_SUFFIXES = ("", ".dcm", ".dicom", ".ima")
"""File suffixes under which an unreadable file is listed; other files (sidecars, notes) are ignored."""


def _short(key: str, digits: int) -> str:
    kind, _, digest = key.partition("-")
    return f"{kind}-{digest[:digits]}" if digest else key[:digits]


def dicom_case_id(keys: Mapping[str, str]) -> str:
    """Case id of a DICOM series from its pseudonymous keys: ``patient-<8 hex>_series-<12 hex>``.

    Example:
        >>> dicom_case_id({"patient_key": "patient-0123456789abcdef", "series_key": "series-fedcba9876543210"})
        'patient-01234567_series-fedcba987654'
    """
    series = _short(keys["series_key"], 12)
    return f"{_short(keys['patient_key'], 8)}_{series}" if keys.get("patient_key") else series


def split_series_ref(text: str) -> tuple[str, str]:
    """``"folder#series-1f2e"`` -> ``("folder", "series-1f2e")``; a plain path -> ``(path, "")``.

    Example:
        >>> split_series_ref("export/study1#series-1f2e")
        ('export/study1', 'series-1f2e')
    """
    if "#" in text and not Path(text).exists():
        base, _, key = text.partition("#")
        return base, key
    return text, ""


def series_folder(files: Iterable[Path]) -> Path:
    """Deepest folder holding every file of a series (as ``medimg.io.dicom.discover.Series.folder``)."""
    return Path(os.path.commonpath([str(Path(f).parent) for f in files]))


def series_case(case_id: str, keys: Mapping[str, str], files: tuple[Path, ...]) -> CaseInput:
    """A case for one DICOM series: its files are its content, ``folder#series_key`` is what is loaded."""
    image = f"{series_folder(files)}#{keys['series_key']}"
    return CaseInput(case_id, files, meta={"image": image, "dicom": True, **keys})


def _listed(entry: Excluded) -> bool:
    """Unreadable files are listed only when they could be DICOM (not sidecars, notes, ...)."""
    if entry.kind == "not_dicom":  # README.txt, JSON sidecars, NIfTI beside the DICOM
        return False
    if entry.kind != "unreadable":
        return True
    name = Path(entry.path).name.lower()
    suffix = Path(name).suffix
    return suffix in DICOM_SUFFIXES or not suffix[1:].isalpha()


def set_aside_entries(excluded: Iterable[Excluded]) -> list[SetAside]:
    """One :class:`SetAside` per excluded series (files of one series grouped) or unreadable file.

    Ids are the shortened series key (``series-<12 hex>``), or ``file-<12 hex>`` of the
    path's sha256 for a file that belongs to no series.
    """
    grouped: dict[tuple[str, str], list[Excluded]] = {}
    for entry in excluded:
        if not _listed(entry):
            continue
        if entry.series_key:
            ident = _short(entry.series_key, 12)
        else:
            ident = "file-" + hashlib.sha256(os.path.abspath(entry.path).encode()).hexdigest()[:12]
        grouped.setdefault((ident, entry.kind), []).append(entry)
    out = []
    for (ident, kind), entries in grouped.items():
        reason = entries[0].reason + (f" ({len(entries)} files)" if len(entries) > 1 else "")
        out.append(SetAside(ident, kind, reason))
    return out


def scan_series(folder: Path, workers: int = 1) -> ScanResult:
    """The DICOM part of ``medimg scan`` over ``folder`` (NIfTI files are not read)."""
    return scan(folder, workers=workers, nifti=False)


def folder_series_cases(folder: Path, workers: int = 1) -> tuple[list[CaseInput], list[SetAside], list[Path]]:
    """One case per usable DICOM series under ``folder`` (any depth), what was set aside, and
    the NIfTI files the same walk found (not read).

    Example:
        >>> cases, set_aside, nifti = folder_series_cases(Path("export"))  # doctest: +SKIP
        >>> [(s.case_id, s.status, s.reason) for s in set_aside][:1]  # doctest: +SKIP
        [('series-77de0a1b9c3d', 'set_aside', 'localizer (ImageType ORIGINAL/PRIMARY/LOCALIZER)')]
    """
    result = scan_series(folder, workers)
    usable, derived = acquired_series(result)
    files = result.files
    cases = [series_case(dicom_case_id(result.keys[k]), result.keys[k], files[k]) for k in usable]
    return cases, derived + set_aside_entries(result.excluded), result.nifti_files


def acquired_series(result: ScanResult) -> tuple[list[str], list[SetAside]]:
    """Keys of the usable series that are acquisitions, and the derived ones set aside.

    ``medimg scan`` and ``convert`` list derived series (ADC/FA maps, reformats) as volumes, as
    dcm2niix converts them; a model is run on acquisitions only, unless the user names a derived
    series as ``folder#series_key``.
    """
    usable, derived = [], []
    files = result.files
    for row in result.manifest:
        key = row["series_key"]
        if key not in result.series:
            continue
        if "derived" not in str(row.get("qa_flags", "")).split(";"):
            usable.append(key)
            continue
        reason = (
            "derived image (a map or reformat the scanner computed, not an acquisition); "
            f"name it as '{series_folder(files[key])}#{key}' to predict on it"
        )
        derived.append(SetAside(_short(key, 12), "derived", reason))
    return usable, derived


def one_series_case(
    folder: Path, series_key: str, case_id: str | None, result: ScanResult
) -> tuple[list[CaseInput], list[SetAside]]:
    """The case(s) a ``folder`` or ``folder#series_key`` reference names, given the folder's scan.

    A key names one usable series. Without a key the folder's usable series are
    expanded, unless ``case_id`` (a manifest's ``case_key``) asks for exactly one.
    What cannot be a case is returned as a failed :class:`SetAside` with the reason.
    """
    ident = case_id or (_short(series_key, 12) if series_key else f"folder-{_path_digest(folder)}")
    files = result.files
    if series_key:
        if series_key not in result.series:
            why = next((e.reason for e in result.excluded if e.series_key == series_key), None)
            reason = (
                f"{folder}#{series_key} is set aside or unusable: {why}"
                if why
                else f"{folder}: no usable series with key {series_key} "
                "(was the manifest made with another pseudonym key?)"
            )
            return [], [SetAside(ident, "unsupported", reason)]
        keys = result.keys[series_key]
        return [series_case(case_id or dicom_case_id(keys), keys, files[series_key])], []
    keys_found, derived = acquired_series(result)
    if not keys_found and derived:
        return [], derived
    if not keys_found:
        reasons = "; ".join(sorted({f"{e.kind}: {e.reason}" for e in result.excluded})[:3])
        return [], [
            SetAside(ident, "unsupported", f"{folder}: no usable DICOM series ({reasons or 'no files'})")
        ]
    if case_id and len(keys_found) > 1:
        reason = (
            f"{folder} holds {len(keys_found)} usable series ({', '.join(keys_found)}); "
            f"name one as '{folder}#<series_key>' (medimg scan lists them)"
        )
        return [], [SetAside(case_id, "unsupported", reason)]
    cases = []
    for key in keys_found:
        keys = result.keys[key]
        cases.append(series_case(case_id or dicom_case_id(keys), keys, files[key]))
    return cases, derived


def _path_digest(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]
