"""Turn what a user points at (files, folders, ``folder#series_key``, a manifest) into cohort cases.

Everything ``medimg scan`` writes and everything ``medimg run`` reads is accepted:

* a NIfTI file: one case, named after the file;
* a folder (a hospital export, a study, a series): its NIfTI files (directly inside)
  and one case per usable DICOM series at any depth, classified as ``medimg scan``
  does (:mod:`medimg.inference.series_inputs`); the rest is listed, set aside;
* ``folder#series_key``: that one series;
* a manifest CSV (``medimg scan``'s or a training manifest): one case per row, paths
  relative to the manifest's folder. Cases are named by ``case_key`` when the
  manifest has one, else by the series' pseudonymous keys (DICOM) or the file name.
  Next to a scan manifest, the scan's ``excluded.csv`` is listed as set aside.

Example:
    >>> found = collect_inputs(["qa/manifest.csv"])  # doctest: +SKIP
    >>> len(found.cases), [s.status for s in found.set_aside]  # doctest: +SKIP
    (4, ['set_aside', 'set_aside'])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medimg.errors import DataError
from medimg.inference.cases import CaseInput, SetAside
from medimg.inference.series_inputs import (
    folder_series_cases,
    one_series_case,
    scan_series,
    set_aside_entries,
    split_series_ref,
)
from medimg.io.dicom.discover import Excluded
from medimg.io.load import is_dicom_dir, is_nifti
from medimg.io.scan import ScanResult

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def case_id_from_path(p: Path) -> str:
    """A file-system safe case name from a path: the file name without .nii/.nii.gz."""
    name = p.name
    for suf in NIFTI_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "case"


def looks_like_dicom_dir(p: Path) -> bool:
    """True for a folder holding a DICOM series."""
    return p.is_dir() and bool(is_dicom_dir(p))


def resolve_path(root: Path, value: object) -> str:
    """A manifest value as a path: absolute as written, else relative to ``root`` (the manifest's folder)."""
    text = str(value)
    return text if Path(text).is_absolute() else str(root / text)


@dataclass
class CollectedInputs:
    """The cases to run and the input objects set aside (each with its reason)."""

    cases: list[CaseInput] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)

    def add(self, cases: list[CaseInput], set_aside: list[SetAside]) -> None:
        self.cases += cases
        self.set_aside += set_aside


class _Scans:
    """Scans of DICOM folders, each folder scanned once per collection."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._done: dict[Path, ScanResult] = {}

    def __call__(self, folder: Path) -> ScanResult:
        key = folder.resolve()
        if key not in self._done:
            self._done[key] = scan_series(folder, self.workers)
        return self._done[key]


def collect_inputs(inputs: list[str], image_column: str = "image", workers: int = 1) -> CollectedInputs:
    """Cases and set-aside objects from NIfTI files, folders, ``folder#series_key`` or manifest CSVs.

    Args:
        inputs: what the user named on the command line.
        image_column: the manifest column holding the image path.
        workers: processes reading DICOM headers.

    Raises:
        DataError: an input that does not exist or is of no known kind, a manifest
            without the image column, two inputs with the same case id.

    Example:
        >>> found = collect_inputs(["export/"])  # doctest: +SKIP
    """
    found = CollectedInputs()
    scans = _Scans(workers)
    for raw in inputs:
        base, key = split_series_ref(raw)
        p = Path(base)
        if not p.exists():
            raise DataError(
                f"{p}: input not found (expected a NIfTI file, a folder, folder#series_key or a manifest CSV)"
            )
        if key:
            if not p.is_dir():
                raise DataError(f"{raw}: '#series_key' follows a DICOM folder, and {p} is not a folder")
            found.add(*one_series_case(p, key, None, scans(p)))
        elif p.suffix.lower() == ".csv":
            found.add(*_manifest_inputs(p, image_column, scans))
        elif p.is_file() and is_nifti(p):
            found.cases.append(CaseInput(case_id_from_path(p), (p,), meta={"image": str(p)}))
        elif p.is_dir():
            found.add(*_folder_inputs(p, workers))
        else:
            raise DataError(
                f"{p}: not a NIfTI file (.nii/.nii.gz), a folder, folder#series_key or a manifest (.csv)"
            )
    # The same series reached twice (an export and one of its studies, nested folders) is one case.
    found.cases = list({(c.case_id, c.paths): c for c in found.cases}.values())
    found.set_aside = list(dict.fromkeys(found.set_aside))
    found.cases = _disambiguate(found.cases)
    ids = [c.case_id for c in found.cases]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataError(
            f"two inputs map to the same case name {dup[0]!r}; name each input once, or use a manifest with case_key"
        )
    return found


def collect_cases(inputs: list[str], image_column: str = "image", workers: int = 1) -> list[CaseInput]:
    """The cases of :func:`collect_inputs` (objects set aside are dropped).

    Example:
        >>> cases = collect_cases(["scans/a.nii.gz", "dicom/series1"])  # doctest: +SKIP
    """
    return collect_inputs(inputs, image_column, workers).cases


def _folder_inputs(folder: Path, workers: int) -> tuple[list[CaseInput], list[SetAside]]:
    # NIfTI files at any depth, as `medimg convert` and `medimg scan` list them: a volume in a
    # subfolder of an export is a case (or a failed case with its reason), never skipped. The
    # DICOM scan's walk of the tree found them.
    series, set_aside, nifti = folder_series_cases(folder, workers)
    cases = [CaseInput(case_id_from_path(f), (f,), meta={"image": str(f)}) for f in nifti]
    if not cases and not series and not set_aside:
        raise DataError(f"{folder}: no NIfTI files or DICOM series inside")
    return cases + series, set_aside


def _read_csv(path: Path, image_column: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read manifest CSV ({type(exc).__name__}: {exc})") from exc
    if image_column not in df:
        raise DataError(f"{path}: manifest has no {image_column!r} column; columns are {list(df.columns)}")
    return df


def _manifest_inputs(path: Path, image_column: str, scans: _Scans) -> tuple[list[CaseInput], list[SetAside]]:
    """One case per manifest row (DICOM rows are matched to their series' files)."""
    df = _read_csv(path, image_column)
    root = path.parent
    cases: list[CaseInput] = []
    set_aside: list[SetAside] = []
    for number, row in enumerate(df.to_dict("records"), start=2):
        meta: dict[str, Any] = {"row": row, "root": root}
        case_key = row.get("case_key") or None
        if not str(row[image_column]).strip():
            reason = f"{path}: line {number}: empty {image_column!r} (expected an image path)"
            set_aside.append(SetAside(case_key or f"line-{number}", "unsupported", reason))
            continue
        image = resolve_path(root, row[image_column])
        base, key = split_series_ref(image)
        if Path(base).is_dir():
            found, aside = one_series_case(Path(base), key, case_key, scans(Path(base)))
            cases += [CaseInput(c.case_id, c.paths, meta={**c.meta, **meta}) for c in found]
            set_aside += aside
        else:  # a NIfTI file (a missing one fails as its case, with the reason)
            name = case_key or case_id_from_path(Path(base))
            cases.append(CaseInput(name, (Path(base),), meta={**meta, "image": base}))
    if "series_key" in df and (root / "excluded.csv").is_file():
        set_aside += _scan_excluded(root / "excluded.csv")
    return cases, set_aside


def _scan_excluded(path: Path) -> list[SetAside]:
    """What ``medimg scan`` set aside, from its excluded table next to the manifest."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"path", "kind", "reason"} <= set(df.columns):
        return []
    entries = [
        Excluded(resolve_path(path.parent, r["path"]), r["reason"], r["kind"], r.get("series_key", ""))
        for r in df.to_dict("records")
    ]
    return set_aside_entries(entries)


def _disambiguate(cases: list[CaseInput]) -> list[CaseInput]:
    """``a/image.nii.gz`` and ``b/image.nii.gz`` become ``a_image`` and ``b_image``."""
    ids = [c.case_id for c in cases]
    out = []
    for c in cases:
        named = bool((c.meta.get("row") or {}).get("case_key"))
        if ids.count(c.case_id) > 1 and c.paths and not c.meta.get("dicom") and not named:
            parent = case_id_from_path(c.paths[0].parent)
            out.append(CaseInput(f"{parent}_{c.case_id}", c.paths, c.content_sha256, c.meta))
        else:
            out.append(c)
    return out
