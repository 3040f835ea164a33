"""Vendor tags medimg reads to tell volumes apart: complex component, diffusion b-value and gradient.

Scanners say the same thing in different places: the b-value is in the standard
DiffusionBValue tag, Siemens' CSA header, GE's (0043,1039) (with 1e9 added to
some values) or Philips' (2001,1003); the complex component (magnitude, phase)
is a value of the ImageType.
"""

from __future__ import annotations

import struct

import pydicom

from medimg.io.dicom.csa import CsaInfo
from medimg.io.dicom.values import number


def complex_component(image_type: tuple[str, ...]) -> str:
    """Complex component named by the ImageType (Siemens/Philips/GE write M, P, R or I)."""
    names = {
        "P": "PHASE",
        "PHASE": "PHASE",
        "R": "REAL",
        "REAL": "REAL",
        "I": "IMAGINARY",
        "IMAGINARY": "IMAGINARY",
    }
    for value in image_type[2:]:
        if value in names:
            return names[value]
    return ""


def diffusion_b_value(ds: pydicom.Dataset, csa: CsaInfo | None) -> float | None:
    """Diffusion b-value: standard tag, Siemens CSA, GE (0043,1039) or Philips (2001,1003)."""
    b = number(ds.get("DiffusionBValue"))
    if b is None and csa is not None:
        b = csa.b_value
    ge = ds.get((0x0043, 0x1039))
    if b is None and ge is not None and "GE" in str(ds.get("Manufacturer", "")).upper():
        first = number(ge.value[0] if isinstance(ge.value, (list, pydicom.multival.MultiValue)) else ge.value)
        b = None if first is None else first % 1e9  # GE adds 1e9 to some b-values
    ph = ds.get((0x2001, 0x1003))
    if b is None and ph is not None and "PHILIPS" in str(ds.get("Manufacturer", "")).upper():
        raw = ph.value
        b = struct.unpack("<f", raw)[0] if isinstance(raw, bytes) and len(raw) == 4 else number(raw)
    return b


def diffusion_gradient(ds: pydicom.Dataset) -> tuple[float, float, float] | None:
    """Diffusion gradient direction: DiffusionGradientOrientation, or Philips (2005,10B0-10B2)."""
    value = ds.get("DiffusionGradientOrientation")
    if value is not None and len(value) == 3:
        return (float(value[0]), float(value[1]), float(value[2]))
    parts = [ds.get((0x2005, e)) for e in (0x10B0, 0x10B1, 0x10B2)]
    if "PHILIPS" in str(ds.get("Manufacturer", "")).upper() and all(p is not None for p in parts):
        raw = [p.value for p in parts]  # type: ignore[union-attr]
        vals = [struct.unpack("<f", r)[0] if isinstance(r, bytes) and len(r) == 4 else number(r) for r in raw]
        if all(v is not None for v in vals):
            return (float(vals[0]), float(vals[1]), float(vals[2]))  # type: ignore[arg-type]
    return None
