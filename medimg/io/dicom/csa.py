"""Siemens CSA headers (tags (0029,1010) image and (0029,1020) series), through nibabel's reader.

Siemens MR stores what DICOM has no tag for in a private binary blob, the CSA
header: the number of slices packed in a mosaic, the true slice normal, the
acquisition time of each slice (slice timing), the diffusion b-value and the
polarity of phase encoding. medimg reads it with :mod:`nibabel.nicom.csareader`
and keeps only those values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom


@dataclass
class CsaInfo:
    """The few CSA image-header values medimg uses (``None`` where absent)."""

    n_mosaic: int | None = None  # NumberOfImagesInMosaic
    slice_normal: tuple[float, float, float] | None = None  # SliceNormalVector (LPS)
    slice_times_ms: tuple[float, ...] | None = None  # MosaicRefAcqTimes, one per slice
    b_value: float | None = None  # B_value
    phase_positive: int | None = None  # PhaseEncodingDirectionPositive: 1 positive, 0 negative


def _csareader() -> Any:
    with warnings.catch_warnings():  # nibabel.nicom warns that its readers are experimental
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader
    return csareader


def _items(tags: dict[str, Any], name: str) -> list[Any]:
    entry = tags.get(name)
    return list(entry.get("items") or []) if entry else []


def read_csa(ds: pydicom.Dataset) -> CsaInfo | None:
    """CSA image-header values of a Siemens dataset, or ``None`` when it has no (readable) CSA header.

    Example:
        >>> info = read_csa(pydicom.dcmread("IM-0001-0001.dcm"))  # doctest: +SKIP
        >>> info.n_mosaic, info.slice_normal  # doctest: +SKIP
        (36, (0.0, -0.16, -0.987))
    """
    csa = _csareader()
    try:
        header = csa.get_csa_header(ds, "image")
    except Exception:  # a corrupt private blob must not make the image unreadable
        return None
    if not header or not header.get("tags"):
        return None
    tags = header["tags"]
    info = CsaInfo()
    n = _items(tags, "NumberOfImagesInMosaic")
    info.n_mosaic = int(n[0]) if n else None
    normal = _items(tags, "SliceNormalVector")
    if len(normal) == 3:
        info.slice_normal = (float(normal[0]), float(normal[1]), float(normal[2]))
    times = _items(tags, "MosaicRefAcqTimes")
    if times:
        info.slice_times_ms = tuple(float(t) for t in times)
    b = _items(tags, "B_value")
    info.b_value = float(b[0]) if b else None
    pe = _items(tags, "PhaseEncodingDirectionPositive")
    info.phase_positive = int(pe[0]) if pe else None
    return info


def is_mosaic(image_type: tuple[str, ...], info: CsaInfo | None) -> bool:
    """True for a Siemens mosaic: ImageType says MOSAIC and the CSA header gives the slice count."""
    return "MOSAIC" in image_type and info is not None and bool(info.n_mosaic)


def normal_array(info: CsaInfo | None) -> np.ndarray | None:
    """The CSA slice normal as a unit vector (``None`` when absent or degenerate)."""
    if info is None or info.slice_normal is None:
        return None
    v = np.asarray(info.slice_normal, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-6 else None
