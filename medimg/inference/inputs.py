"""Turn what a user points at (files, folders, a manifest) into cohort cases."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medimg.errors import DataError
from medimg.inference.cases import CaseInput
from medimg.io.load import is_dicom_dir

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(p: Path) -> bool:
    return p.name.endswith(NIFTI_SUFFIXES)


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


def collect_cases(inputs: list[str], image_column: str = "image") -> list[CaseInput]:
    """Cases from NIfTI files, DICOM series folders, folders of NIfTI files, or a manifest CSV.

    A manifest's ``case_key`` column names the cases (use it when file names carry PHI).

    Example:
        >>> cases = collect_cases(["scans/a.nii.gz", "dicom/series1"])  # doctest: +SKIP
    """
    cases: list[CaseInput] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"{p}: input not found (expected a NIfTI file, a DICOM folder or a manifest CSV)")
        if p.suffix == ".csv":
            df = pd.read_csv(p)
            if image_column not in df:
                raise DataError(
                    f"{p}: manifest has no {image_column!r} column; columns are {list(df.columns)}"
                )
            keys = (
                df["case_key"] if "case_key" in df else [case_id_from_path(Path(v)) for v in df[image_column]]
            )
            for key, img in zip(keys, df[image_column], strict=True):
                ip = Path(img) if Path(img).is_absolute() else (p.parent / img)
                cases.append(CaseInput(str(key), (ip,)))
        elif p.is_file() and _is_nifti(p) or p.is_dir() and looks_like_dicom_dir(p):
            cases.append(CaseInput(case_id_from_path(p), (p,)))
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and _is_nifti(f))
            subdirs = sorted(d for d in p.iterdir() if d.is_dir() and looks_like_dicom_dir(d))
            if not found and not subdirs:
                raise DataError(f"{p}: no NIfTI files or DICOM series folders inside")
            cases += [CaseInput(case_id_from_path(f), (f,)) for f in found]
            cases += [CaseInput(case_id_from_path(d), (d,)) for d in subdirs]
        else:
            raise DataError(f"{p}: not a NIfTI file (.nii/.nii.gz), a DICOM folder or a manifest (.csv)")
    cases = _disambiguate(cases)
    ids = [c.case_id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise DataError(
            f"two inputs map to the same case name {sorted(dup)[0]!r}; use a manifest with case_key"
        )
    return cases


def _disambiguate(cases: list[CaseInput]) -> list[CaseInput]:
    """``a/image.nii.gz`` and ``b/image.nii.gz`` become ``a_image`` and ``b_image``."""
    ids = [c.case_id for c in cases]
    out = []
    for c in cases:
        if ids.count(c.case_id) > 1 and c.paths:
            parent = case_id_from_path(c.paths[0].parent)
            out.append(CaseInput(f"{parent}_{c.case_id}", c.paths, c.content_sha256, c.meta))
        else:
            out.append(c)
    return out
