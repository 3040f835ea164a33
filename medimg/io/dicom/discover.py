"""Series discovery: walk a folder, read headers in parallel, group, split and classify series.

A series is first the files sharing a SeriesInstanceUID and a SeriesNumber; it is
then split where its files differ in orientation, matrix size or pixel spacing
(e.g. a 3-plane localizer), and where repeated positions come from different
echoes or complex components (magnitude, phase), as dcm2niix writes them to
separate files. Positions repeated over time, b-values or acquisitions stay one
series: a 4D volume (see :mod:`medimg.io.dicom.fourd`). Each resulting series gets
a kind (``volume``, ``localizer``, ``secondary_capture``, ``unsupported``) and a
reason. Derived images with acquisition geometry (ADC, FA or trace maps, MPR
reformats) are volumes, as dcm2niix converts them, with the QA flag ``derived``
so a manifest can leave them out. Files that are not DICOM at all (README, JSON,
NIfTI next to the slices) are set aside as ``not_dicom``, which is no problem.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medimg.errors import DataError
from medimg.io.dicom.fourd import position_ids
from medimg.io.dicom.frames import expand_frames, frame_splits
from medimg.io.dicom.geometry import slice_normal
from medimg.io.dicom.grid import series_grid
from medimg.io.dicom.headers import NotDicomError, SliceHeader, read_header
from medimg.io.dicom.pseudonym import pseudonym

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_SKIP_NAMES = {"DICOMDIR"}
#: Suffixes of formats that sit next to DICOM exports and are not DICOM (set aside, no problem).
_OTHER_FORMATS = (
    ".txt", ".md", ".json", ".csv", ".tsv", ".xml", ".html", ".htm", ".pdf", ".png", ".jpg", ".jpeg",
    ".gif", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".hdr", ".img", ".mgz", ".nrrd", ".mha", ".mhd",
    ".mat", ".bval", ".bvec", ".log", ".yaml", ".yml", ".ini", ".sh", ".py",
)  # fmt: skip


@dataclass
class Excluded:
    """A file or series that is not usable, and why (one line of the excluded table)."""

    path: str
    reason: str
    kind: str = "unreadable"  # unreadable | not_dicom | localizer | secondary_capture | unsupported
    series_key: str = ""

    @property
    def is_problem(self) -> bool:
        """True for broken input (unreadable, truncated, inconsistent); False for a kind set aside.

        A file of another format (``not_dicom``: a README, a JSON sidecar, a NIfTI file) is
        set aside, not a problem.
        """
        return self.kind in ("unreadable", "unsupported")


@dataclass
class Series:
    """The files of one (split) series with its classification."""

    headers: list[SliceHeader]
    kind: str = "volume"
    reason: str = ""
    flags: list[str] = field(default_factory=list)

    @property
    def first(self) -> SliceHeader:
        return self.headers[0]

    @property
    def folder(self) -> Path:
        """Deepest folder holding every file of the series."""
        return Path(os.path.commonpath([str(h.path.parent) for h in self.headers]))

    def keys(self, key: bytes | str | None = None) -> dict[str, str]:
        """Pseudonymous ``patient_key``, ``study_key`` and ``series_key`` (keyed hashes).

        The series key hashes the SeriesInstanceUID with the instances of this (split)
        series, not with its rank among the splits of its UID: a scan of the whole export
        and a later read of one folder of it (``folder#series_key``) name it alike, even
        when other files of the same UID lie elsewhere in the export.
        """
        h = self.first
        # The file name too: exports hold distinct files under one SOPInstanceUID (variants of
        # one image), which a split by pixel format keeps apart and their keys must too.
        members = sorted(f"{x.sop_instance_uid}|{x.path.name}|{x.frame_select}" for x in self.headers)
        digest = hashlib.sha256("\n".join(members).encode()).hexdigest()[:16]
        return {
            "patient_key": pseudonym(h.patient_id, "patient", key),
            "study_key": pseudonym(h.study_uid, "study", key),
            "series_key": pseudonym(f"{h.series_uid}/{digest}", "series", key),
        }


def safe_name(path: str | os.PathLike[str]) -> str:
    """A path made printable on one line (control characters escaped)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(path))


def _is_partial(name: str) -> bool:
    """medimg's own in-progress atomic writes (``.name.XXXX.part.ext``)."""
    return name.startswith(".") and ".part" in name


def find_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every regular file under ``root`` (hidden folders, DICOMDIR and partial writes skipped), sorted.

    Example:
        >>> files = find_files("incoming/")  # doctest: +SKIP
    """
    root = Path(root)
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if f not in _SKIP_NAMES and not _is_partial(f)]
    return [p for p in out if p.is_file() and not p.is_symlink()]


def is_other_format(path: Path) -> bool:
    """True for a file of another format: a known suffix (``.txt``, ``.json``, ``.nii``...) or plain text.

    A file without the DICOM prefix that is neither (no suffix, ``.dcm``, binary bytes)
    may be DICOM damaged in transfer, and stays a problem.
    """
    if path.name.lower().endswith(_OTHER_FORMATS):
        return True
    try:
        with open(path, "rb") as fp:
            head = fp.read(1024)
    except OSError:
        return False
    for cut in range(4):  # the first 1024 bytes may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return bool(text.strip()) and all(c.isprintable() or c in "\r\n\t" for c in text)
    return False


def _read_one(path: Path) -> SliceHeader | Excluded:
    try:
        return read_header(path)
    except NotDicomError as exc:
        kind = "not_dicom" if is_other_format(path) else "unreadable"
        return Excluded(safe_name(path), str(exc).removeprefix(f"{path}: "), kind)
    except DataError as exc:
        return Excluded(safe_name(path), str(exc).removeprefix(f"{path}: "))


def read_headers(paths: Sequence[Path], workers: int = 1) -> tuple[list[SliceHeader], list[Excluded]]:
    """Read headers of ``paths`` (in processes when ``workers > 1``); split readable from not."""
    if workers > 1 and len(paths) > 64:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_read_one, paths, chunksize=32))
    else:
        results = [_read_one(p) for p in paths]
    headers = [r for r in results if isinstance(r, SliceHeader)]
    excluded = [r for r in results if isinstance(r, Excluded)]
    for h in list(headers):
        if not h.has_pixels:
            excluded.append(
                Excluded(
                    safe_name(h.path),
                    f"no pixel data (header-only DICOM object, SOP class {h.sop_class_uid})",
                )
            )
            headers.remove(h)
    return headers, excluded


def _split_key(h: SliceHeader) -> tuple:
    ori = tuple(np.round(h.orientation, 3)) if h.orientation else None
    ps = tuple(np.round(h.pixel_spacing, 4)) if h.pixel_spacing else None
    return (ori, h.rows, h.columns, ps, h.number_of_frames > 1, h.mosaic, h.samples_per_pixel)


def _repeats(headers: Sequence[SliceHeader]) -> bool:
    """True when some slice position occurs more than once (several volumes, echoes or components)."""
    if not headers or headers[0].orientation is None:
        return False
    try:
        frames = expand_frames(headers)
        return bool(np.bincount(position_ids(frames, slice_normal(headers[0].orientation))).max() > 1)
    except DataError:  # no position or degenerate orientation: classify() reports it
        return False


def _split_echoes(part: list[SliceHeader]) -> list[list[SliceHeader]]:
    """Split repeated positions by echo and complex component (dcm2niix's ``_e2``, ``_ph`` files)."""
    if not _repeats(part):
        return [part]
    splits = frame_splits(part)
    if splits:
        out = []
        for key in splits:
            chosen = [copy.copy(h) for h in part]
            for h in chosen:
                h.frame_select = key
            out.append([h for h in chosen if _selects_any(h)])
        return out
    if len(part) == 1:
        return [part]
    sub: dict[tuple, list[SliceHeader]] = defaultdict(list)
    for h in part:
        echo = h.echo_number if h.echo_number is not None else h.echo_time
        sub[(h.component, echo or 0)].append(h)
    return [sub[k] for k in sorted(sub)]


def _selects_any(h: SliceHeader) -> bool:
    return any((t.echo_time, t.component) == h.frame_select for t in h.frame_tags or [])


def group_series(headers: Iterable[SliceHeader]) -> list[Series]:
    """Group headers into series (UID and SeriesNumber) and split mixed ones (geometry, echo, component).

    Positions repeated over time stay in one series (a 4D volume).
    """
    by_uid: dict[tuple[str, str, int], list[SliceHeader]] = defaultdict(list)
    for h in headers:
        by_uid[(h.study_uid, h.series_uid, h.series_number or 0)].append(h)
    out: list[Series] = []
    for uid in sorted(by_uid):
        parts: dict[tuple, list[SliceHeader]] = defaultdict(list)
        for h in by_uid[uid]:
            key = _split_key(h)
            parts[key].append(h)
        groups = []
        for part in sorted(parts.values(), key=lambda hs: (-len(hs), str(hs[0].path))):
            groups += _split_echoes(part)
        out += [Series(sorted(g, key=lambda h: str(h.path))) for g in groups]
    return out


def classify(series: Series) -> Series:
    """Set ``kind``, ``reason`` and QA ``flags`` of a series from its headers and geometry."""
    try:
        return _classify(series)
    except DataError as exc:
        series.kind, series.reason = "unsupported", str(exc)
        return series


def _missing_position(series: Series) -> str:
    for h in series.headers:
        if not h.is_stack and h.position is None:
            return f"{h.path}: no ImagePositionPatient; this slice cannot be placed in space"
    return ""


def _classify(series: Series) -> Series:
    h = series.first
    n = sum(x.n_slices for x in series.headers)
    missing = _missing_position(series)
    if h.sop_class_uid.startswith(_SECONDARY_CAPTURE):
        series.kind, series.reason = "secondary_capture", "secondary capture image (no acquisition geometry)"
    elif h.samples_per_pixel != 1 or h.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        series.kind = "unsupported"
        series.reason = (
            f"colour image ({h.photometric}, {h.samples_per_pixel} samples/pixel); grey-level images only"
        )
    elif h.is_localizer:
        series.kind, series.reason = "localizer", f"localizer (ImageType {'/'.join(h.image_type)})"
    elif missing:
        series.kind, series.reason = "unsupported", missing
    elif h.orientation is None or h.position is None or h.pixel_spacing is None:
        series.kind, series.reason = (
            "unsupported",
            f"{h.path}: no ImagePositionPatient/ImageOrientationPatient/PixelSpacing",
        )
    elif h.is_stack and h.frame_positions is None:
        series.kind, series.reason = (
            "unsupported",
            f"{h.path}: {h.frame_note or 'multi-frame image without per-frame positions'}",
        )
    if series.kind != "volume":
        return series
    grid = series_grid(series.headers)
    series.flags = list(grid.stack.flags) + ([grid.grouping] if grid.grouping else []) + grid.notes
    if n == 1:
        series.flags.append("single_slice")
    if h.photometric == "MONOCHROME1":
        series.flags.append("monochrome1")
    if not h.patient_id:
        series.flags.append("no_patient_id")
    if h.image_type[:1] == ("DERIVED",):
        series.flags.append("derived")
    return series


def discover(root: str | os.PathLike[str], workers: int = 1) -> tuple[list[Series], list[Excluded]]:
    """Find, read, group and classify every DICOM series under ``root``.

    Returns:
        The series (every kind, classified) and the files that could not be read, each with a reason.

    Example:
        >>> series, excluded = discover("incoming/", workers=2)  # doctest: +SKIP
        >>> [(s.kind, len(s.headers)) for s in series]  # doctest: +SKIP
        [('volume', 120), ('localizer', 1)]
    """
    headers, excluded = read_headers(find_files(root), workers)
    return [classify(s) for s in group_series(headers)], excluded
