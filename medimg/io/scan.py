"""QA scan of a folder tree: a manifest of usable series and a table of everything excluded.

The manifest has one row per usable series and feeds training directly: its
``image`` column is a path ``load_image`` accepts (a series folder, or
``folder#series_key`` when the folder holds several usable series; NIfTI files
are listed by path). Keys are pseudonymous (keyed hashes); no names, IDs, birth
dates or accession numbers are written. The excluded table has one line per bad
file or set-aside series, with the reason.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medimg.errors import DataError
from medimg.io.atomic import atomic_write
from medimg.io.dicom.assemble import load_series
from medimg.io.dicom.discover import (
    Excluded,
    Series,
    classify,
    find_files,
    group_series,
    read_headers,
    safe_name,
)
from medimg.io.dicom.geometry import affine_lps, orientation_code, plane_name, sort_slices
from medimg.io.dicom.pseudonym import pseudonym
from medimg.io.load import is_nifti, read_nifti

log = logging.getLogger("medimg.scan")

MANIFEST_COLUMNS = [
    "image", "patient_key", "study_key", "series_key", "modality", "body_part", "manufacturer", "model",
    "dims", "spacing", "orientation", "plane", "slice_thickness", "n_files", "transfer_syntax", "qa_flags",
]  # fmt: skip
EXCLUDED_COLUMNS = ["path", "kind", "reason", "series_key"]


@dataclass
class ScanResult:
    """Rows of the manifest and of the excluded table."""

    manifest: list[dict] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Number of broken files or series (set-aside localizers etc. do not count)."""
        return sum(e.is_problem for e in self.excluded)


def _fmt(values: tuple[float, ...] | list[float]) -> str:
    return "x".join(f"{v:.6g}" for v in values)


def _series_row(s: Series, image: str, spacing_policy: str) -> dict:
    h = s.first
    positions = h.frame_positions if h.number_of_frames > 1 else np.array([x.position for x in s.headers])
    stack = sort_slices(positions, h.orientation)
    if (stack.missing or stack.nonuniform) and spacing_policy == "refuse":
        what = f"{stack.missing} missing slice(s)" if stack.missing else "non-uniform slice spacing"
        raise DataError(f"{what}; refusing to guess (scan with --spacing-policy resample to accept)")
    step = stack.step if len(positions) > 1 else stack.normal * (h.slice_thickness or 1.0)
    aff = affine_lps(h.orientation, h.pixel_spacing, positions[stack.order[0]], step)
    spacing = tuple(float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))
    return {
        "image": image,
        **s.keys(),
        "modality": h.modality,
        "body_part": h.body_part,
        "manufacturer": h.manufacturer,
        "model": h.model,
        "dims": _fmt((h.columns, h.rows, len(positions))).replace(".0", ""),
        "spacing": _fmt(spacing),
        "orientation": orientation_code(aff, "LPS"),
        "plane": plane_name(h.orientation),
        "slice_thickness": h.slice_thickness if h.slice_thickness is not None else "",
        "n_files": len(s.headers),
        "transfer_syntax": h.transfer_syntax,
        "qa_flags": ";".join(s.flags),
    }


def _nifti_row(path: Path) -> dict:
    vol = read_nifti(path)
    return {
        "image": str(path),
        "patient_key": pseudonym(str(path.parent), "patient"),
        "study_key": pseudonym(str(path.parent), "study"),
        "series_key": pseudonym(str(path), "series"),
        "modality": "",
        "dims": _fmt(vol.shape).replace(".0", ""),
        "spacing": _fmt(vol.spacing),
        "orientation": orientation_code(vol.affine, "RAS"),
        "n_files": 1,
        "qa_flags": "",
    }


def scan(
    root: str | os.PathLike[str], workers: int = 1, spacing_policy: str = "refuse", verify: bool = False
) -> ScanResult:
    """Scan ``root`` (DICOM and NIfTI files, any depth) into manifest rows and excluded rows.

    Args:
        root: folder (or single file) to scan.
        workers: processes reading headers.
        spacing_policy: ``"refuse"`` excludes series with missing slices or non-uniform
            spacing; ``"resample"`` lists them with a QA flag.
        verify: also decode every usable series (slower; catches undecodable pixel data).

    Example:
        >>> result = scan("incoming/", workers=2)  # doctest: +SKIP
        >>> len(result.manifest), result.problems  # doctest: +SKIP
    """
    root = Path(root)
    files = find_files(root)
    nifti_paths = [p for p in files if is_nifti(p)]
    headers, excluded = read_headers([p for p in files if not is_nifti(p)], workers)
    series = [classify(s) for s in group_series(headers)]
    result = ScanResult(excluded=list(excluded))
    for p in nifti_paths:
        try:
            result.manifest.append(_nifti_row(p))
        except DataError as exc:
            result.excluded.append(Excluded(safe_name(p), str(exc).removeprefix(f"{p}: "), "unreadable"))
    usable = [s for s in series if s.kind == "volume"]
    per_folder = Counter(s.folder for s in usable)
    for s in series:
        key = s.keys()["series_key"]
        if s.kind != "volume":
            result.excluded.append(Excluded(safe_name(s.folder), s.reason, s.kind, key))
            continue
        image = str(s.folder) if per_folder[s.folder] == 1 else f"{s.folder}#{key}"
        try:
            row = _series_row(s, image, spacing_policy)
            if verify:
                load_series(s.headers, spacing_policy=spacing_policy)  # type: ignore[arg-type]
            result.manifest.append(row)
        except DataError as exc:
            msg = str(exc).removeprefix(f"{s.folder}: ")
            result.excluded.append(Excluded(safe_name(s.folder), msg, "unsupported", key))
        except Exception as exc:  # one bad series never takes the scan down
            log.exception("unexpected error on series %s", key)
            reason = f"unexpected error ({type(exc).__name__}: {exc}); please report it"
            result.excluded.append(Excluded(safe_name(s.folder), reason, "unsupported", key))
    log.info(
        "scanned %s: %d usable series, %d excluded (%d problems)",
        safe_name(root), len(result.manifest), len(result.excluded), result.problems,
    )  # fmt: skip
    return result


PATH_COLUMNS = ("image", "path")
"""Columns of the scan tables that hold file paths (escaped as ``./=...`` in CSV, still resolvable)."""


def write_table(rows: list[dict], columns: list[str], path: str | os.PathLike[str]) -> Path:
    """Write rows as CSV or Parquet (by suffix), atomically, with ``columns`` in order.

    CSV cells that a spreadsheet would run as a formula are escaped (:mod:`medimg.io.csvsafe`).
    """
    import pandas as pd

    from medimg.io.csvsafe import escape_frame

    frame = pd.DataFrame(rows, columns=columns)
    with atomic_write(path) as tmp:
        if str(path).endswith(".parquet"):
            frame.to_parquet(tmp, index=False)
        else:
            escape_frame(frame, PATH_COLUMNS).to_csv(tmp, index=False)
    return Path(path)


def write_scan(
    result: ScanResult, manifest: str | os.PathLike[str], excluded: str | os.PathLike[str]
) -> None:
    """Write the manifest and the excluded table (same format, chosen by suffix)."""
    write_table(result.manifest, MANIFEST_COLUMNS, manifest)
    write_table([e.__dict__ for e in result.excluded], EXCLUDED_COLUMNS, excluded)
