"""QA scan of a folder tree: a manifest of usable series and a table of everything excluded.

The manifest has one row per usable series and feeds training directly: its
``image`` column is a path ``load_image`` accepts (a series folder, or
``folder#series_key`` when the folder holds several usable series; NIfTI files
are listed by path). :func:`write_scan` writes those paths relative to the
manifest's own folder (or absolute), so the scan output can be moved with the
data and read from any working folder. Keys are pseudonymous (keyed hashes); no
names, IDs, birth dates or accession numbers are written. The excluded table has
one line per bad file or set-aside series, with the reason: localizers, derived
images, secondary captures and non-image objects (structured reports, key object
selections, presentation states, ...) are set aside on purpose and are not problems.
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
from medimg.io.dicom.geometry import orientation_code, plane_name
from medimg.io.dicom.grid import series_grid
from medimg.io.dicom.headers import read_header
from medimg.io.dicom.pseudonym import pseudonym
from medimg.io.load import is_nifti, read_nifti, split_series_path

log = logging.getLogger("medimg.scan")

MANIFEST_COLUMNS = [
    "image", "patient_key", "study_key", "series_key", "modality", "body_part", "manufacturer", "model",
    "dims", "spacing", "orientation", "plane", "slice_thickness", "n_files", "transfer_syntax", "qa_flags",
]  # fmt: skip
EXCLUDED_COLUMNS = ["path", "kind", "reason", "series_key"]

NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report or key object selection",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.66": "raw data, registration or surface object",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
}
"""SOP class UID prefixes of DICOM objects that hold no image by design, and what they are."""


@dataclass
class ScanResult:
    """Rows of the manifest and of the excluded table, and where each series' files are.

    Attributes:
        manifest: one row per usable series or NIfTI file (``MANIFEST_COLUMNS``).
        excluded: one entry per bad file or set-aside series (or non-image object).
        keys: ``series_key`` -> its pseudonymous ``patient_key``/``study_key``/``series_key``,
            for every DICOM series seen (usable, set aside or non-image).
        series: ``series_key`` -> each usable DICOM series of the manifest (its headers), so
            a caller converts or predicts without reading the headers again.
        nifti_files: the NIfTI files under the root (read and listed in the manifest only
            when scanned with ``nifti=True``), so a caller does not walk the tree again.
    """

    manifest: list[dict] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    nifti_files: list[Path] = field(default_factory=list)

    @property
    def files(self) -> dict[str, tuple[Path, ...]]:
        """``series_key`` -> the files of each usable DICOM series of the manifest."""
        return {key: tuple(h.path for h in s.headers) for key, s in self.series.items()}

    @property
    def problems(self) -> int:
        """Number of broken files or series (set-aside localizers etc. do not count)."""
        return sum(e.is_problem for e in self.excluded)


def _fmt(values: tuple[float, ...] | list[float]) -> str:
    return "x".join(f"{v:.6g}" for v in values)


def _series_row(s: Series, image: str, spacing_policy: str) -> dict:
    h = s.first
    grid = series_grid(s.headers)  # the grid load_series builds: mosaics tiled, 4D series grouped
    stack, aff = grid.stack, grid.affine
    if (stack.missing or stack.nonuniform) and spacing_policy == "refuse":
        what = f"{stack.missing} missing slice(s)" if stack.missing else "non-uniform slice spacing"
        raise DataError(f"{what}; refusing to guess (scan with --spacing-policy resample to accept)")
    spacing = tuple(float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))
    return {
        "image": image,
        **s.keys(),
        "modality": h.modality,
        "body_part": h.body_part,
        "manufacturer": h.manufacturer,
        "model": h.model,
        "dims": "x".join(str(int(n)) for n in grid.shape),
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


def non_image_kind(sop_class_uid: str) -> str | None:
    """What a non-image DICOM object is (from its SOP class), or None for an image SOP class.

    Example:
        >>> non_image_kind("1.2.840.10008.5.1.4.1.1.88.33")
        'structured report or key object selection'
        >>> non_image_kind("1.2.840.10008.5.1.4.1.1.2") is None  # CT Image Storage
        True
    """
    for prefix, kind in NON_IMAGE_SOP_CLASSES.items():
        if sop_class_uid.startswith(prefix):
            return kind
    return None


def _set_aside_non_images(result: ScanResult) -> None:
    """Files without pixels whose SOP class holds none by design: set aside, not broken.

    ``read_headers`` lists every file without pixel data as unreadable; a CT slice
    without pixels is broken, a structured report is not. Each such file is read
    again (header only) to tell them apart by SOP class.
    """
    for i, entry in enumerate(result.excluded):
        if entry.kind != "unreadable" or not Path(entry.path).is_file():
            continue
        try:
            h = read_header(entry.path)
        except DataError:
            continue
        what = non_image_kind(h.sop_class_uid)
        if h.has_pixels or what is None:
            continue
        keys = Series([h]).keys()
        result.keys[keys["series_key"]] = keys
        name = _uid_name(h.sop_class_uid)
        reason = f"{what} ({name}, modality {h.modality or '?'}); no image to predict on"
        result.excluded[i] = Excluded(entry.path, reason, "non_image", keys["series_key"])


def _uid_name(uid: str) -> str:
    """pydicom's name of a UID (``Comprehensive SR Storage``), or the UID itself when unknown."""
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else uid


def scan(
    root: str | os.PathLike[str],
    workers: int = 1,
    spacing_policy: str = "refuse",
    verify: bool = False,
    nifti: bool = True,
) -> ScanResult:
    """Scan ``root`` (DICOM and NIfTI files, any depth) into manifest rows and excluded rows.

    Args:
        root: folder (or single file) to scan.
        workers: processes reading headers.
        spacing_policy: ``"refuse"`` excludes series with missing slices or non-uniform
            spacing; ``"resample"`` lists them with a QA flag.
        verify: also decode every usable series (slower; catches undecodable pixel data).
        nifti: also read and list NIfTI files (False: DICOM only; NIfTI files are skipped).

    Example:
        >>> result = scan("incoming/", workers=2)  # doctest: +SKIP
        >>> len(result.manifest), result.problems  # doctest: +SKIP
    """
    root = Path(root)
    files = find_files(root)
    nifti_paths = [p for p in files if is_nifti(p)]
    headers, excluded = read_headers([p for p in files if not is_nifti(p)], workers)
    series = [classify(s) for s in group_series(headers)]
    result = ScanResult(excluded=list(excluded), nifti_files=nifti_paths)
    _set_aside_non_images(result)
    for p in nifti_paths if nifti else []:
        try:
            result.manifest.append(_nifti_row(p))
        except DataError as exc:
            result.excluded.append(Excluded(safe_name(p), str(exc).removeprefix(f"{p}: "), "unreadable"))
    usable = [s for s in series if s.kind == "volume"]
    per_folder = Counter(s.folder for s in usable)
    for s in series:
        key = s.keys()["series_key"]
        result.keys[key] = s.keys()
        if s.kind != "volume":
            result.excluded.append(Excluded(safe_name(s.folder), s.reason, s.kind, key))
            continue
        image = str(s.folder) if per_folder[s.folder] == 1 else f"{s.folder}#{key}"
        try:
            row = _series_row(s, image, spacing_policy)
            if verify:
                load_series(s.headers, spacing_policy=spacing_policy)  # type: ignore[arg-type]
            result.manifest.append(row)
            result.series[key] = s
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


def table_path(path: str, table_dir: Path, absolute: bool = False) -> str:
    """``path`` (optionally ``folder#series_key``) relative to ``table_dir``, or absolute.

    Example:
        >>> table_path("/data/export/ct#series-1f", Path("/data/qa"))
        '../export/ct#series-1f'
    """
    base, key = split_series_path(path)
    full = Path(os.path.abspath(base))
    text = str(full) if absolute else os.path.relpath(full, os.path.abspath(table_dir))
    return f"{text}#{key}" if key else text


def write_scan(
    result: ScanResult,
    manifest: str | os.PathLike[str],
    excluded: str | os.PathLike[str],
    absolute_paths: bool = False,
) -> None:
    """Write the manifest and the excluded table (same format, chosen by suffix).

    Paths are written relative to the folder of the table that holds them (what every
    manifest reader resolves them against), or absolute with ``absolute_paths``.

    Example:
        >>> write_scan(scan("export/"), "qa/manifest.csv", "qa/excluded.csv")  # doctest: +SKIP
    """
    rows = [
        {**row, "image": table_path(row["image"], Path(manifest).parent, absolute_paths)}
        for row in result.manifest
    ]
    write_table(rows, MANIFEST_COLUMNS, manifest)
    excluded_rows = [
        {**e.__dict__, "path": table_path(e.path, Path(excluded).parent, absolute_paths)}
        for e in result.excluded
    ]
    write_table(excluded_rows, EXCLUDED_COLUMNS, excluded)
