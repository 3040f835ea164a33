"""Fast header-only reads of DICOM files into a small, typed record (:class:`SliceHeader`).

The pixel data is not read: its byte offset and length are recorded instead, so
a truncated file is caught from the header pass and uncompressed slices can later
be read straight into a preallocated volume.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from medimg.errors import DataError
from medimg.io.dicom.csa import is_mosaic, read_csa
from medimg.io.dicom.enhanced import enhanced_geometry, philips_scale
from medimg.io.dicom.mosaic import mosaic_layout, uih_mosaic_layout
from medimg.io.dicom.sidecar import acquisition_meta
from medimg.io.dicom.slice_header import SliceHeader
from medimg.io.dicom.values import dicom_seconds, floats, integer, number
from medimg.io.dicom.vendor import complex_component, diffusion_b_value, diffusion_gradient

_PIXEL_TAG = 0x7FE00010
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_UNDEFINED = 0xFFFFFFFF


class NotDicomError(DataError):
    """A file that is not DICOM at all (a README, a JSON sidecar, a NIfTI next to the slices)."""


def _pixel_element(fp: Any, ts: str, file_size: int) -> tuple[bool, int | None, int | None]:
    """Parse the pixel data element header at the file position: (present, offset, length)."""
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return False, None, None
    little = ts != ExplicitVRBigEndian
    g, e = struct.unpack("<HH" if little else ">HH", head[:4])
    if (g << 16 | e) != _PIXEL_TAG:
        return False, None, None
    if ts == ImplicitVRLittleEndian:
        (length,) = struct.unpack("<I", head[4:8])
        offset = start + 8
    elif head[4:6] in _LONG_VRS:
        (length,) = struct.unpack("<I" if little else ">I", head[8:12])
        offset = start + 12
    else:
        (length,) = struct.unpack("<H" if little else ">H", head[6:8])
        offset = start + 8
    if length == _UNDEFINED:
        return True, None, None
    return True, offset, int(length)


def _looks_like_dicom(p: Path) -> bool:
    """True when a file without the 'DICM' prefix still parses as a DICOM image (old ACR-NEMA style)."""
    try:
        ds = pydicom.dcmread(p, force=True, stop_before_pixels=True)
        return bool(ds.get("SOPClassUID")) and int(ds.get("Rows", 0) or 0) > 0
    except Exception:  # text, JSON, NIfTI...: pydicom fails in many ways on non-DICOM bytes
        return False


def read_header(path: str | os.PathLike[str]) -> SliceHeader:
    """Read one DICOM file's header (no pixels) into a :class:`SliceHeader`.

    Raises:
        DataError: naming the file and the reason (empty, not DICOM, corrupt header,
            truncated pixel data).

    Example:
        >>> h = read_header("series/IM0001.dcm")  # doctest: +SKIP
        >>> h.modality, h.rows, h.columns, h.position  # doctest: +SKIP
    """
    p = Path(path)
    size = _file_size(p)
    ds, ts, deflated, (present, offset, length) = _read_dataset(p, size)
    h = SliceHeader(path=p, transfer_syntax=ts, file_size=size)
    try:
        _fill(h, ds)
    except Exception as exc:
        raise DataError(f"{p}: invalid value in DICOM header ({type(exc).__name__}: {exc})") from exc
    if deflated:
        present = "PixelData" in pydicom.dcmread(p, specific_tags=["PixelData"])
    h.has_pixels, h.pixel_offset, h.pixel_length = present, offset, length
    _check_complete(h, ds, p, size)
    return h


def _file_size(p: Path) -> int:
    """The file's size; an unreadable or empty file is an error naming it."""
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror})") from exc
    if size == 0:
        raise DataError(f"{p}: empty file (0 bytes)")
    return size


def _read_dataset(
    p: Path, size: int
) -> tuple[pydicom.Dataset, str, bool, tuple[bool, int | None, int | None]]:
    """The header without pixels, its transfer syntax, whether it is deflated, and where the pixel data
    lies: ``(present, offset, length)`` (unknown for a deflated file)."""
    try:
        with open(p, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            ts = str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)) if ds.file_meta else ""
            deflated = ts == "1.2.840.10008.1.2.1.99"
            pixels = (
                (False, None, None) if deflated else _pixel_element(fp, ts or ImplicitVRLittleEndian, size)
            )
    except InvalidDicomError as exc:
        if _looks_like_dicom(p):
            raise DataError(
                f"{p}: DICOM data set without the 128-byte preamble and 'DICM' prefix (old ACR-NEMA "
                "style); rewrite it as a DICOM file (e.g. dcmconv) to read it"
            ) from exc
        raise NotDicomError(f"{p}: not a DICOM file (no 'DICM' prefix after the 128-byte preamble)") from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise DataError(f"{p}: corrupt or truncated DICOM header ({type(exc).__name__}: {exc})") from exc
    return ds, ts, deflated, pixels


def _check_complete(h: SliceHeader, ds: pydicom.Dataset, p: Path, size: int) -> None:
    """Refuse a DICOMDIR, a header without SOP class or pixels, and truncated or short pixel data."""
    present, offset, length = h.has_pixels, h.pixel_offset, h.pixel_length
    media_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "")) if ds.file_meta else ""
    if media_class == "1.2.840.10008.1.3.10":
        raise DataError(f"{p}: DICOMDIR (media directory index), not an image")
    if not present and not h.sop_class_uid:
        raise DataError(
            f"{p}: truncated or incomplete DICOM header (no SOPClassUID; file ends at {size} bytes)"
        )
    if offset is not None and length is not None and offset + length > size:
        raise DataError(f"{p}: truncated pixel data ({size - offset} of {length} bytes present)")
    if (
        h.has_pixels
        and offset is not None
        and h.samples_per_pixel == 1
        and h.bits_allocated
        and length is not None
        and length < h.expected_pixel_bytes
    ):
        raise DataError(
            f"{p}: pixel data holds {length} bytes, expected {h.expected_pixel_bytes} "
            f"({h.rows}x{h.columns}x{h.number_of_frames} frames, {h.bits_allocated} bits)"
        )


def _fill(h: SliceHeader, ds: pydicom.Dataset) -> None:
    g = ds.get
    h.sop_class_uid = str(g("SOPClassUID", ""))
    h.sop_instance_uid = str(g("SOPInstanceUID", ""))
    h.study_uid = str(g("StudyInstanceUID", ""))
    h.series_uid = str(g("SeriesInstanceUID", ""))
    h.frame_of_reference_uid = str(g("FrameOfReferenceUID", ""))
    h.patient_id = str(g("PatientID", ""))
    h.modality = str(g("Modality", ""))
    h.manufacturer = str(g("Manufacturer", ""))
    h.model = str(g("ManufacturerModelName", ""))
    h.body_part = str(g("BodyPartExamined", ""))
    it = g("ImageType")
    h.image_type = tuple(
        str(v).upper()
        for v in (it if isinstance(it, (list, pydicom.multival.MultiValue)) else [it] if it else [])
    )
    h.rows, h.columns = int(g("Rows", 0) or 0), int(g("Columns", 0) or 0)
    h.samples_per_pixel = int(g("SamplesPerPixel", 1) or 1)
    h.photometric = str(g("PhotometricInterpretation", "")).strip()
    h.bits_allocated = int(g("BitsAllocated", 0) or 0)
    h.bits_stored = int(g("BitsStored", 0) or 0) or h.bits_allocated
    h.pixel_representation = int(g("PixelRepresentation", 0) or 0)
    h.number_of_frames = integer(g("NumberOfFrames")) or 1
    h.instance_number = integer(g("InstanceNumber"))
    h.acquisition_number = integer(g("AcquisitionNumber"))
    h.echo_number = integer(g("EchoNumbers"))
    h.temporal_position = integer(g("TemporalPositionIdentifier"))
    h.series_number = integer(g("SeriesNumber"))
    h.trigger_time = number(g("TriggerTime"))
    h.acquisition_time = dicom_seconds(g("AcquisitionTime"))
    h.echo_time = number(g("EchoTime"))
    h.component = complex_component(h.image_type)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        enhanced_geometry(ds, h)
    else:
        h.orientation = floats(g("ImageOrientationPatient"), 6)
        pos = floats(g("ImagePositionPatient"), 3)
        h.position = (pos[0], pos[1], pos[2]) if pos else None
        ps = floats(g("PixelSpacing"), 2)
        h.pixel_spacing = (ps[0], ps[1]) if ps else None
        thick = g("SliceThickness")
        h.slice_thickness = float(thick) if thick not in (None, "") else None
        h.slice_spacing = number(g("SpacingBetweenSlices"))
        if g("RescaleSlope") not in (None, ""):
            h.rescale_slope = float(g("RescaleSlope"))
        if g("RescaleIntercept") not in (None, ""):
            h.rescale_intercept = float(g("RescaleIntercept"))
        if "PHILIPS" in h.manufacturer.upper():
            h.rescale_slope, h.rescale_intercept = philips_scale(ds, h.rescale_slope, h.rescale_intercept)
    if "SIEMENS" in h.manufacturer.upper():
        h.csa = read_csa(ds)
    h.b_value = diffusion_b_value(ds, h.csa)
    h.gradient = diffusion_gradient(ds)
    if h.number_of_frames == 1 and is_mosaic(h.image_type, h.csa):  # enhanced XA keeps MOSAIC in ImageType
        mosaic_layout(h)
    h.acquisition = acquisition_meta(ds, h.csa)
    if h.number_of_frames == 1 and "VFRAME" in h.image_type:
        uih_mosaic_layout(h, ds)
