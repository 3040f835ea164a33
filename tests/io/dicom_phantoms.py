"""Synthetic phantoms for the DICOM/NIfTI tests: asymmetric, anisotropic, in any orientation."""

from __future__ import annotations

import math
import secrets
import struct
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medimg.io.volume import Volume

# Row direction, column direction (LPS) of common acquisition planes.
PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
}


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, y, z."""
    a, b, c = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def phantom_data(shape: tuple[int, int, int] = (36, 28, 20), seed: int = 0) -> np.ndarray:
    """Integer HU-like values with no symmetry: a gradient, an off-centre block, a marker voxel."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    data = -1000 + 7 * i + 3 * j * j // 4 + 11 * k
    data[2 : shape[0] // 3, shape[1] // 2 : -2, 1 : shape[2] // 2] += 900
    data[1, 2, min(3, shape[2] - 1)] = 1500
    data = data + rng.integers(0, 5, size=shape)
    return data.astype(np.int16)


def phantom(
    plane: str = "axial",
    shape: tuple[int, int, int] = (36, 28, 20),
    spacing: tuple[float, float, float] = (0.7, 0.9, 2.5),
    oblique: tuple[float, float, float] = (0.0, 0.0, 0.0),
    origin: tuple[float, float, float] = (-40.5, 25.25, 12.0),
    seed: int = 0,
) -> Volume:
    """An LPS :class:`Volume` acquired in ``plane``, optionally rotated by ``oblique`` degrees."""
    row_dir, col_dir = (np.asarray(v, dtype=float) for v in PLANES[plane])
    normal = np.cross(row_dir, col_dir)
    rot = rotation(*oblique)
    aff = np.eye(4)
    aff[:3, 0] = rot @ row_dir * spacing[0]
    aff[:3, 1] = rot @ col_dir * spacing[1]
    aff[:3, 2] = rot @ normal * spacing[2]
    aff[:3, 3] = origin
    return Volume(phantom_data(shape, seed), aff, "LPS")


# --- scanner-style exports: Siemens mosaic with a CSA header, enhanced multi-frame MR -------------

_MR = "1.2.840.10008.5.1.4.1.1.4"
_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def csa_blob(tags: dict[str, tuple[str, list]]) -> bytes:
    """A Siemens CSA2 ("SV10") header holding ``name -> (VR, values)``, as nibabel's csareader reads it."""
    out = b"SV10" + b"\x04\x03\x02\x01" + struct.pack("<2I", len(tags), 77)
    for name, (vr, values) in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0, len(values), 77)
        for v in values:
            data = (f"{v:.8f}" if vr == "FD" else str(v)).encode() + b"\0"
            out += struct.pack("<4i", len(data), len(data), 77, len(data)) + data + b"\0" * (-len(data) % 4)
    return out


def _base_mr(series_uid: str, study_uid: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = _MR
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.PatientID = "PHANTOM0001"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = 2000.0, 30.0, 90.0
    ds.MagneticFieldStrength = 3.0
    ds.InPlanePhaseEncodingDirection = "COL"
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.SOPInstanceUID = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _in_plane(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    dc, dr = float(np.linalg.norm(affine[:3, 0])), float(np.linalg.norm(affine[:3, 1]))
    return affine[:3, 0] / dc, affine[:3, 1] / dr, dc, dr


def write_mosaic(
    volumes: list[np.ndarray],
    affine_lps: np.ndarray,
    folder: Path,
    slice_times_ms: list[float],
    series_number: int = 5,
) -> list[Path]:
    """One Siemens mosaic file per time point of ``volumes`` (each ``(x, y, z)``, voxel k at ``affine_lps``).

    The CSA slice normal is the direction of the affine's third column, the
    ImagePositionPatient the top-left corner of the whole mosaic, file names shuffled.
    """
    row_dir, col_dir, dc, dr = _in_plane(affine_lps)
    cols, rows, n = volumes[0].shape
    side = math.ceil(math.sqrt(n))
    step = affine_lps[:3, 2]
    corner = (
        affine_lps[:3, 3] - col_dir * dr * (side * rows - rows) / 2 - row_dir * dc * (side * cols - cols) / 2
    )
    study, series = generate_uid(), generate_uid()
    paths = []
    for t, vol in enumerate(volumes):
        ds = _base_mr(series, study, series_number)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.Rows, ds.Columns = side * rows, side * cols
        ds.PixelSpacing = [dr, dc]
        ds.ImageOrientationPatient = [*row_dir.tolist(), *col_dir.tolist()]
        ds.ImagePositionPatient = corner.tolist()
        ds.SliceThickness = ds.SpacingBetweenSlices = float(np.linalg.norm(step))
        ds.AcquisitionNumber, ds.InstanceNumber = t + 1, t + 1
        mosaic = np.zeros((side * rows, side * cols), np.uint16)
        for k in range(n):
            r, c = divmod(k, side)
            mosaic[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] = vol[:, :, k].T
        ds.PixelData = mosaic.tobytes()
        block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        csa = {
            "NumberOfImagesInMosaic": ("US", [n]),
            "SliceNormalVector": ("FD", (step / np.linalg.norm(step)).tolist()),
            "MosaicRefAcqTimes": ("FD", list(slice_times_ms)),
            "PhaseEncodingDirectionPositive": ("IS", [1]),
        }
        block.add_new(0x10, "OB", csa_blob(csa))
        paths.append(_save(ds, folder / f"{secrets.token_hex(6)}.dcm"))
    return paths


def write_enhanced_mr(
    volumes: list[np.ndarray],
    affine_lps: np.ndarray,
    path: Path,
    echo_times: list[float] | None = None,
    seed: int = 0,
) -> Path:
    """An enhanced MR file holding ``volumes`` (time points, or echoes when ``echo_times`` is given).

    Frames are stored in a shuffled order; each frame has its own position, a
    rescale slope that varies per frame, and dimension indices (stack, in-stack
    position, temporal position).
    """
    row_dir, col_dir, dc, dr = _in_plane(affine_lps)
    cols, rows, n = volumes[0].shape
    ds = _base_mr(generate_uid(), generate_uid(), 7)
    ds.SOPClassUID = _ENHANCED_MR
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, len(volumes) * n
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [*row_dir.tolist(), *col_dir.tolist()]
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [dr, dc]
    shared.PixelMeasuresSequence[0].SliceThickness = float(np.linalg.norm(affine_lps[:3, 2]))
    ds.SharedFunctionalGroupsSequence = [shared]
    pointers = [0x00209056, 0x00209057, 0x00209128]
    ds.DimensionIndexSequence = [Dataset() for _ in pointers]
    for item, p in zip(ds.DimensionIndexSequence, pointers, strict=True):
        item.DimensionIndexPointer, item.FunctionalGroupPointer = p, 0x00209111
    order = np.random.default_rng(seed).permutation(len(volumes) * n)
    frames, pixels = [], []
    for f in order:
        t, k = divmod(int(f), n)
        slope = float(2 ** (f % 3))  # 1, 2 or 4: exact for values 4m - 10
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = (
            affine_lps[:3, 3] + k * affine_lps[:3, 2]
        ).tolist()
        item.FrameContentSequence = [Dataset()]
        item.FrameContentSequence[0].DimensionIndexValues = [1, k + 1, 1 if echo_times else t + 1]
        item.FrameContentSequence[0].TemporalPositionIndex = 1 if echo_times else t + 1
        item.PixelValueTransformationSequence = [Dataset()]
        item.PixelValueTransformationSequence[0].RescaleSlope = slope
        item.PixelValueTransformationSequence[0].RescaleIntercept = -10.0
        if echo_times:
            item.MREchoSequence = [Dataset()]
            item.MREchoSequence[0].EffectiveEchoTime = echo_times[t]
        frames.append(item)
        pixels.append(np.rint((volumes[t][:, :, k].T + 10.0) / slope).astype(np.uint16))
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack(pixels).tobytes()
    return _save(ds, path)


def write_uih_mosaic(volume: np.ndarray, affine_lps: np.ndarray, path: Path, across: int) -> Path:
    """A United Imaging ``VFRAME`` mosaic: tiles ``across`` per row, slice positions in (0065,1051)."""
    row_dir, col_dir, dc, dr = _in_plane(affine_lps)
    cols, rows, n = volume.shape
    down = math.ceil(n / across)
    ds = _base_mr(generate_uid(), generate_uid(), 12)
    ds.Manufacturer = "UIH"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "VFRAME"]
    ds.Rows, ds.Columns = down * rows, across * cols
    ds.PixelSpacing = [dr, dc]
    ds.ImageOrientationPatient = [*row_dir.tolist(), *col_dir.tolist()]
    ds.SliceThickness = float(np.linalg.norm(affine_lps[:3, 2]))
    ds.InstanceNumber = 1
    mosaic = np.zeros((down * rows, across * cols), np.uint16)
    items = []
    for k in range(n):
        r, c = divmod(k, across)
        mosaic[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] = volume[:, :, k].T
        item = Dataset()
        item.ImagePositionPatient = (affine_lps[:3, 3] + k * affine_lps[:3, 2]).tolist()
        items.append(item)
    ds.PixelData = mosaic.tobytes()
    ds.add_new((0x0065, 0x0010), "LO", "Image Private Header")
    ds.add_new((0x0065, 0x1004), "LO", f"{rows}*{cols}")
    ds.add_new((0x0065, 0x1050), "DS", str(n))
    ds.add_new((0x0065, 0x1051), "SQ", items)
    return _save(ds, path)
