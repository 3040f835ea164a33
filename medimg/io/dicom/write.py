"""Write a :class:`Volume` as a DICOM series (one file per slice) with exact geometry.

Used to build test series from phantoms (any orientation, shuffled file names,
several transfer syntaxes) and to export volumes. Voxel ``(i, j, k)`` becomes
column ``i``, row ``j`` of slice ``k``; the slice step is the affine's third column,
so a sheared affine yields a gantry-tilted series.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from medimg.errors import DataError
from medimg.io.atomic import atomic_write
from medimg.io.volume import Volume

SOP_CLASS_BY_MODALITY: dict[str, str] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}
_UNCOMPRESSED = {
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
}


def _stored_values(data: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Real-world values -> stored integers (uint16 when none is negative, else int16)."""
    stored = np.rint((np.asarray(data, dtype=np.float64) - intercept) / slope)
    lo, hi = (float(stored.min()), float(stored.max())) if stored.size else (0.0, 0.0)
    if lo >= 0 and hi <= 65535:
        return stored.astype(np.uint16)
    if lo >= -32768 and hi <= 32767:
        return stored.astype(np.int16)
    raise DataError(
        f"values {lo:g}..{hi:g} do not fit 16-bit stored values with rescale slope={slope:g}, "
        f"intercept={intercept:g}; choose a larger slope"
    )


def _series_dataset(
    modality: str, study_uid: str, series_uid: str, frame_uid: str, patient_name: str, patient_id: str
) -> Dataset:
    now = _dt.datetime(2020, 1, 1, 12, 0, 0)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = SOP_CLASS_BY_MODALITY[modality]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "medimg"
    ds.ManufacturerModelName = "phantom"
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.Laterality = ""
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    if modality == "CT":
        ds.KVP = 120
    if modality == "OT":
        ds.ConversionType = "WSD"
        ds.PatientOrientation = ""
    if modality == "PT":
        _add_pet_tags(ds)
    if modality == "MR":
        _add_mr_tags(ds)
    return ds


def _add_pet_tags(ds: Dataset) -> None:
    """The PET image and isotope modules' tags (orientation code sequences replace PatientPosition)."""
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.CorrectedImage = ["ATTN", "DECY"]
    ds.DecayCorrection = "START"
    ds.CollimatorType = "NONE"
    ds.RadiopharmaceuticalInformationSequence = []
    ds.PatientOrientationCodeSequence = []
    ds.PatientGantryRelationshipCodeSequence = []
    del ds.PatientPosition  # replaced by the orientation code sequences in PET
    ds.AcquisitionDate, ds.AcquisitionTime = ds.StudyDate, ds.StudyTime
    ds.FrameReferenceTime = 0
    ds.ActualFrameDuration = 60000
    ds.DecayFactor = 1


def _add_mr_tags(ds: Dataset) -> None:
    """The MR image module's acquisition tags."""
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.RepetitionTime = 10.0
    ds.EchoTime = 4.0
    ds.EchoTrainLength = 1


def write_series(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    *,
    modality: str = "CT",
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_name: str = "Anonymous^Phantom",
    patient_id: str = "PHANTOM0001",
    rescale: tuple[float, float] = (1.0, 0.0),
    shuffle_names: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_number: int = 1,
    series_description: str = "phantom",
    frame_of_reference_uid: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    file_prefix: str = "IM",
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice and return the paths in slice order.

    Args:
        volume: the voxels and their affine (any space; written in LPS as DICOM requires).
        out_dir: folder to write into (created if needed; other files there are kept).
        modality: ``"CT"``, ``"MR"``, ``"PT"`` or ``"OT"``; selects the SOP class.
        series_uid, study_uid, frame_of_reference_uid: UIDs to use (new ones when ``None``).
        patient_name, patient_id: identity tags (tests plant PHI here).
        rescale: ``(slope, intercept)``; stored = round((value - intercept) / slope) as
            uint16 when no stored value is negative, else int16.
        shuffle_names: random file names, so that name order says nothing about slice order.
        transfer_syntax: uncompressed (implicit/explicit little, explicit big endian, deflated)
            or a lossless compressed syntax pydicom can encode (RLE, JPEG-LS, JPEG 2000 lossless;
            openjpeg needs slices of at least 64x64 for JPEG 2000).
        series_number, series_description: shown by viewers.
        extra_tags: additional keyword -> value set on every slice (e.g. ``{"ImageType":
            ["ORIGINAL", "PRIMARY", "LOCALIZER"]}`` or ``{"AccessionNumber": "A123"}``).
        file_prefix: file names are ``{prefix}{k:04d}.dcm`` unless shuffled.

    Example:
        >>> vol = Volume(np.zeros((64, 48, 20), np.int16), np.diag([0.8, 0.8, 2.5, 1.0]), "RAS")
        >>> files = write_series(vol, "phantom/ct", rescale=(1.0, -1024.0))  # doctest: +SKIP
    """
    data, slope, intercept = _checked_data(volume, modality, rescale)
    geometry = _SliceGeometry.from_affine(volume.affine_in("LPS"))
    stored = _stored_values(data, slope, intercept)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    base = _series_dataset(modality, study_uid, series_uid, frame_uid, patient_name, patient_id)
    _describe_series(base, series_number, series_description, stored, geometry)
    _set_rescale(base, modality, slope, intercept)
    for key, value in (extra_tags or {}).items():
        setattr(base, key, value)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_slices(
        base, modality, stored, geometry, out, UID(transfer_syntax), shuffle_names, file_prefix
    )


def _checked_data(
    volume: Volume, modality: str, rescale: tuple[float, float]
) -> tuple[np.ndarray, float, float]:
    """The voxels as a 3D array (a 2D volume is one slice) and the rescale, checked."""
    if modality not in SOP_CLASS_BY_MODALITY:
        raise DataError(
            f"write_series: modality {modality!r} not supported; expected one of {sorted(SOP_CLASS_BY_MODALITY)}"
        )
    data = np.asarray(volume.data)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"write_series: expected a 2D or 3D volume, got shape {data.shape}")
    slope, intercept = float(rescale[0]), float(rescale[1])
    if slope == 0:
        raise DataError("write_series: rescale slope must not be 0")
    return data, slope, intercept


@dataclass(frozen=True)
class _SliceGeometry:
    """The LPS geometry of the slices: in-plane directions and spacings, slice step and normal."""

    origin: np.ndarray
    slice_step: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    dr: float
    dc: float
    normal: np.ndarray
    thickness: float

    @classmethod
    def from_affine(cls, aff: np.ndarray) -> _SliceGeometry:
        """Read an LPS affine; its in-plane axes must be non-zero and orthogonal."""
        col_step, row_step, slice_step, origin = aff[:3, 0], aff[:3, 1], aff[:3, 2], aff[:3, 3]
        dc, dr = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
        if dc == 0 or dr == 0:
            raise DataError("write_series: the affine has a zero-length in-plane axis")
        row_dir, col_dir = col_step / dc, row_step / dr
        if abs(float(row_dir @ col_dir)) > 1e-4:
            raise DataError(
                "write_series: in-plane axes of the affine are not orthogonal (DICOM needs them so)"
            )
        normal = np.cross(row_dir, col_dir)
        thickness = abs(float(slice_step @ normal)) or float(np.linalg.norm(slice_step)) or 1.0
        return cls(origin, slice_step, row_dir, col_dir, dr, dc, normal, thickness)


def _describe_series(
    base: Dataset, series_number: int, series_description: str, stored: np.ndarray, geometry: _SliceGeometry
) -> None:
    """Series number and description, image size, spacing, orientation and pixel representation."""
    base.SeriesNumber = int(series_number)
    base.SeriesDescription = series_description
    base.Rows, base.Columns = int(stored.shape[1]), int(stored.shape[0])
    base.PixelSpacing = [f"{geometry.dr:.10g}", f"{geometry.dc:.10g}"]
    base.SliceThickness = f"{geometry.thickness:.10g}"
    base.ImageOrientationPatient = [f"{v:.10g}" for v in (*geometry.row_dir, *geometry.col_dir)]
    base.PixelRepresentation = 1 if stored.dtype == np.int16 else 0


def _set_rescale(base: Dataset, modality: str, slope: float, intercept: float) -> None:
    """Rescale slope, intercept and type (left out of an MR series with the identity rescale)."""
    if modality != "MR" or (slope, intercept) != (1.0, 0.0):
        base.RescaleSlope = f"{slope:.10g}"
        base.RescaleIntercept = f"{intercept:.10g}"
        base.RescaleType = "HU" if modality == "CT" else "US"


def _write_slices(
    base: Dataset,
    modality: str,
    stored: np.ndarray,
    geometry: _SliceGeometry,
    out: Path,
    ts: UID,
    shuffle_names: bool,
    file_prefix: str,
) -> list[Path]:
    """Write one file per slice (atomically) and return the paths in slice order."""
    paths: list[Path] = []
    for k in range(stored.shape[2]):
        ds = _slice_dataset(base, modality, stored, geometry, k, ts)
        name = f"{secrets.token_hex(8)}.dcm" if shuffle_names else f"{file_prefix}{k:04d}.dcm"
        path = out / name
        with atomic_write(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(
    base: Dataset, modality: str, stored: np.ndarray, geometry: _SliceGeometry, k: int, ts: UID
) -> Dataset:
    """Slice ``k``: a copy of the series dataset with its UID, position, file meta and pixels."""
    ds = base.copy()
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    if modality == "PT":
        ds.NumberOfSlices = stored.shape[2]
        ds.ImageIndex = k + 1
    position = geometry.origin + k * geometry.slice_step
    ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
    ds.SliceLocation = f"{float(position @ geometry.normal):.10g}"
    pixels = np.ascontiguousarray(stored[:, :, k].T)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts not in _UNCOMPRESSED else ts
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.PixelData = (
        pixels.astype(pixels.dtype.newbyteorder(">")) if ts == ExplicitVRBigEndian else pixels
    ).tobytes()
    if ts not in _UNCOMPRESSED:
        ds.compress(ts, pixels)
    return ds
