"""BIDS-style acquisition metadata of an MR/CT image (what dcm2niix writes to its JSON sidecar).

Only acquisition parameters are kept: timing in seconds, angles in degrees,
the scanner's manufacturer and field strength. Never names, IDs, dates or
institution details (no PHI).
"""

from __future__ import annotations

from typing import Any

import pydicom

from medimg.io.dicom.csa import CsaInfo
from medimg.io.dicom.values import number


def _timing(ds: pydicom.Dataset, keyword: str, sequence: str, attr: str) -> float | None:
    """A value from the top level, else from the shared functional groups (enhanced images)."""
    value = number(ds.get(keyword))
    if value is not None:
        return value
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        item = shared[0].get(sequence)
        if item and attr in item[0]:
            return number(item[0][attr].value)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        item = per_frame[0].get(sequence)
        if item and attr in item[0]:
            return number(item[0][attr].value)
    return None


def phase_encoding(ds: pydicom.Dataset, csa: CsaInfo | None) -> dict[str, str]:
    """``PhaseEncodingDirection`` (``i``/``j``, ``-`` for negative) in medimg's voxel axes.

    medimg keeps DICOM's voxel order (i along a row, j down the rows), so the CSA
    polarity applies as it is (dcm2niix flips j and so inverts it). Without a known
    polarity only ``PhaseEncodingAxis`` is given.
    """
    rc = str(ds.get("InPlanePhaseEncodingDirection", "")).upper().strip()
    axis = {"ROW": "i", "COL": "j"}.get(rc)
    if axis is None:
        return {}
    if csa is None or csa.phase_positive not in (0, 1):
        return {"PhaseEncodingAxis": axis}
    return {"PhaseEncodingDirection": axis if csa.phase_positive == 1 else f"{axis}-"}


def acquisition_meta(ds: pydicom.Dataset, csa: CsaInfo | None) -> dict[str, Any]:
    """RepetitionTime/EchoTime (s), FlipAngle, SliceTiming (s), phase encoding, Manufacturer, field strength.

    Example:
        >>> acquisition_meta(pydicom.dcmread("IM-0001-0001.dcm"), None)  # doctest: +SKIP
        {'Manufacturer': 'Siemens', 'MagneticFieldStrength': 3.0, 'RepetitionTime': 3.2, ...}
    """
    out: dict[str, Any] = {}
    manufacturer = str(ds.get("Manufacturer", "")).strip()
    if manufacturer:
        out["Manufacturer"] = manufacturer
    field = number(ds.get("MagneticFieldStrength"))
    if field is not None:
        out["MagneticFieldStrength"] = field
    tr = _timing(ds, "RepetitionTime", "MRTimingAndRelatedParametersSequence", "RepetitionTime")
    te = _timing(ds, "EchoTime", "MREchoSequence", "EffectiveEchoTime")
    flip = _timing(ds, "FlipAngle", "MRTimingAndRelatedParametersSequence", "FlipAngle")
    if tr is not None and tr > 0:
        out["RepetitionTime"] = tr / 1000.0
    if te is not None:
        out["EchoTime"] = te / 1000.0
    if flip is not None:
        out["FlipAngle"] = flip
    if csa is not None and csa.slice_times_ms:
        out["SliceTiming"] = [round(t / 1000.0, 6) for t in csa.slice_times_ms]
    out.update(phase_encoding(ds, csa))
    return out
