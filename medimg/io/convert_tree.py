"""Convert a whole export tree: every usable series to NIfTI with a sidecar, plus the QA manifest.

``convert_tree(root, out_dir)`` scans ``root`` as ``medimg scan`` does, then loads
and writes each usable series. Names carry no PHI: ``<patient_key>/<study_key>/
<SeriesNumber>_<label>_<series_key>.nii.gz``, where the label keeps only the
acquisition words of the SeriesDescription (:func:`medimg.io.series_label.series_label`).
``out_dir/manifest.csv`` lists the written images (``image`` is the NIfTI path) and
``out_dir/excluded.csv`` every file or series set aside, with the reason, exactly
as ``medimg scan`` writes them. A series that fails to load is moved from the
manifest to the excluded table; the others are converted anyway. Every file is
written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medimg.errors import ConfigError, DataError, MedimgError
from medimg.io.atomic import atomic_write_text
from medimg.io.dicom.discover import Excluded, Series, safe_name
from medimg.io.load import is_nifti, load_image
from medimg.io.nifti import save_nifti
from medimg.io.scan import ScanResult, scan, write_scan
from medimg.io.series_label import series_label
from medimg.io.volume import Volume

log = logging.getLogger("medimg.convert")

#: Metadata keys never written to a sidecar: file paths, free text, anything naming a person, place or day.
_PHI_KEY = re.compile(
    r"source|path|patient(?!_key)|name|birth|date|accession|institution|physician|operator|station|"
    r"address|serial|description|protocol|comment|text|(study|series|acquisition|content)_?time$",
    re.IGNORECASE,
)


@dataclass
class TreeResult:
    """What ``convert_tree`` wrote: the NIfTI files, and the scan tables (manifest and excluded)."""

    written: list[Path] = field(default_factory=list)
    scan: ScanResult = field(default_factory=ScanResult)

    @property
    def problems(self) -> int:
        """Broken files or series (the exit code of ``medimg convert ROOT OUT`` is 1 when > 0)."""
        return self.scan.problems


def choose_dtype(volume: Volume, dtype: str = "auto") -> np.dtype:
    """``int16`` when ``auto`` and every voxel is an integer in int16's range, else ``float32``.

    Example:
        >>> choose_dtype(Volume(np.array([[[1.0, -2.0]]]), np.eye(4)))
        dtype('int16')
    """
    if dtype != "auto":
        return np.dtype(dtype)
    d = volume.data
    integral = d.size and np.all(np.mod(d, 1) == 0) and d.min() >= -32768 and d.max() <= 32767
    return np.dtype("int16" if integral else "float32")


def sidecar_meta(volume: Volume, **extra: Any) -> dict[str, Any]:
    """The JSON sidecar of a volume: non-PHI metadata, shape, spacing and the RAS affine.

    Example:
        >>> sorted(sidecar_meta(Volume(np.zeros((2, 2, 2)), np.eye(4), meta={"source": "/x"})))
        ['affine_ras', 'shape', 'spacing']
    """
    meta = {k: v for k, v in volume.meta.items() if not _PHI_KEY.search(k)}
    meta.update(extra)
    meta.update(
        shape=list(volume.shape),
        spacing=[round(s, 6) for s in volume.spacing],
        affine_ras=volume.affine_in("RAS").tolist(),
    )
    return meta


def write_volume(volume: Volume, out: Path, dtype: str = "auto", **extra: Any) -> Path:
    """Write ``volume`` to ``out`` (.nii/.nii.gz) and its sidecar beside it (``.json``), atomically."""
    save_nifti(volume, out, dtype=choose_dtype(volume, dtype))
    name = out.name.removesuffix(".gz").removesuffix(".nii") + ".json"
    text = json.dumps(sidecar_meta(volume, **extra), indent=2, default=str) + "\n"
    atomic_write_text(out.with_name(name), text)
    return out


def _identity(series: Series) -> tuple[int | None, str, tuple[str, ...]]:
    """SeriesNumber, SeriesDescription and the identity values that must not leak into a label."""
    import pydicom

    tags = [
        "SeriesNumber",
        "SeriesDescription",
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "AccessionNumber",
    ]
    ds = pydicom.dcmread(series.first.path, stop_before_pixels=True, specific_tags=tags)
    number = ds.get("SeriesNumber")
    identity = tuple(str(ds.get(t, "")) for t in tags[2:])
    return (int(number) if number not in (None, "") else None), str(ds.get("SeriesDescription", "")), identity


def _output_name(row: dict[str, Any], number: int | None, label: str) -> Path:
    stem = "_".join(p for p in (f"{number:04d}" if number is not None else "", label, row["series_key"]) if p)
    return Path(row["patient_key"]) / row["study_key"] / f"{stem}.nii.gz"


def _load_row(
    row: dict[str, Any], by_key: dict[str, Series], policies: dict[str, str]
) -> tuple[Volume, Path, dict]:
    """Load one manifest row; return the volume, its output name (relative) and sidecar extras."""
    from medimg.io.dicom.assemble import load_series

    series = by_key.get(row["series_key"])
    if series is None:  # a NIfTI file of the tree (or a series only load_image can find)
        vol = load_image(row["image"], **policies)  # type: ignore[arg-type]
        return vol, _output_name(row, None, "nifti" if is_nifti(row["image"]) else ""), {}
    number, description, identity = _identity(series)
    vol = load_series(series.headers, **policies)  # type: ignore[arg-type]
    vol.meta.update(series.keys())
    vol.meta["qa_flags"] = sorted(set(vol.meta.get("qa_flags", [])) | set(series.flags))
    label = series_label(description, identity)
    return vol, _output_name(row, number, label), {"series_number": number, "series_label": label}


def convert_tree(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    spacing_policy: Literal["refuse", "resample"] = "refuse",
    tilt_policy: Literal["keep", "resample", "refuse"] = "keep",
    dtype: str = "auto",
) -> TreeResult:
    """Convert every usable series under ``root`` into ``out_dir`` (see the module docstring).

    Args:
        root: the export tree (DICOM and NIfTI files, any depth).
        out_dir: output folder; created if needed.
        workers: header-reading processes.
        spacing_policy, tilt_policy: as for :func:`medimg.io.dicom.assemble.load_series`.
        dtype: ``"auto"``, ``"int16"`` or ``"float32"`` (see :func:`choose_dtype`).

    Example:
        >>> result = convert_tree("incoming/", "nifti/")  # doctest: +SKIP
        >>> len(result.written), result.problems  # doctest: +SKIP
    """
    root, out = Path(root), Path(out_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a DICOM export tree)")
    if out.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{out}: the output folder must not lie inside the input tree {root}")
    result = TreeResult(scan=scan(root, workers=workers, spacing_policy=spacing_policy))
    by_key = result.scan.series  # the scan's own headers: no second read of the tree
    policies = {"spacing_policy": spacing_policy, "tilt_policy": tilt_policy}
    kept = []
    for row in result.scan.manifest:
        try:
            vol, rel, extra = _load_row(row, by_key, policies)
            result.written.append(write_volume(vol, out / rel, dtype, **extra))
            kept.append({**row, "image": str(out / rel)})
        except BaseException as exc:  # one bad series never stops the others (decoders may panic)
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            if not isinstance(exc, MedimgError):
                log.exception("unexpected error on series %s", row["series_key"])
            reason = (
                str(exc)
                if isinstance(exc, MedimgError)
                else f"unexpected error ({type(exc).__name__}: {exc})"
            )
            source = row["image"].split("#", 1)[0]
            reason = reason.removeprefix(f"{source}: ")
            result.scan.excluded.append(Excluded(safe_name(source), reason, "unsupported", row["series_key"]))
    result.scan.manifest = kept
    write_scan(result.scan, out / "manifest.csv", out / "excluded.csv")
    log.info("converted %d series into %s (%d problems)", len(kept), safe_name(out), result.problems)
    return result
