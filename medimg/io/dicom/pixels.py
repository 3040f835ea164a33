"""Pixel data of one DICOM file: format checks, fast native reads, decoding, mosaic tiles.

Uncompressed grey-level pixels are read straight from their byte offset;
compressed ones go through pydicom's decoders (pylibjpeg, python-gdcm). A
Siemens mosaic is cut into its slices here, so callers always get
``(slices, rows, columns)``.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRBigEndian

from medimg.errors import DataError
from medimg.io.dicom.mosaic import unpack_mosaic
from medimg.io.dicom.slice_header import SliceHeader

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def check_pixel_format(h: SliceHeader) -> None:
    """Refuse pixel formats that are not a grey-level volume (RGB ultrasound, palette, ...)."""
    if not h.has_pixels:
        raise DataError(f"{h.path}: no pixel data (header-only DICOM object)")
    if h.samples_per_pixel != 1 or h.photometric not in _MONOCHROME:
        raise DataError(
            f"{h.path}: colour image (PhotometricInterpretation {h.photometric or '?'}, "
            f"SamplesPerPixel {h.samples_per_pixel}); medimg reads grey-level (MONOCHROME1/2) images only"
        )
    if h.orientation is None or h.position is None:
        raise DataError(
            f"{h.path}: no ImageOrientationPatient/ImagePositionPatient; cannot place it in space"
        )
    if h.pixel_spacing is None:
        raise DataError(f"{h.path}: no PixelSpacing; cannot know the voxel size")


def _native_dtype(h: SliceHeader) -> np.dtype | None:
    if h.pixel_offset is None or h.bits_allocated not in (8, 16, 32):
        return None
    if h.transfer_syntax == ExplicitVRBigEndian and h.bits_allocated != 16:
        return None  # OW words are byte-swapped; pydicom knows the VR-dependent rules
    kind = "i" if h.pixel_representation == 1 else "u"
    order = ">" if h.transfer_syntax == ExplicitVRBigEndian else "<"
    return np.dtype(f"{order}{kind}{h.bits_allocated // 8}")


def read_stored_pixels(h: SliceHeader) -> np.ndarray:
    """Stored (not rescaled) pixel values of a file: ``(frames, rows, columns[, samples])``.

    Uncompressed grey-level pixels are read straight from their byte offset; anything
    else is decoded by pydicom and its plugins (pylibjpeg, python-gdcm).

    Raises:
        DataError: naming the file, the transfer syntax and why decoding failed.

    Example:
        >>> pixels = read_stored_pixels(read_header("ct/IM0001.dcm"))  # doctest: +SKIP
    """
    dtype = _native_dtype(h)
    frames = h.number_of_frames
    if dtype is not None and h.samples_per_pixel == 1 and h.expected_pixel_bytes == h.pixel_length:
        with open(h.path, "rb") as fp:
            fp.seek(h.pixel_offset or 0)
            buf = fp.read(h.pixel_length or 0)
        if len(buf) != h.pixel_length:
            raise DataError(f"{h.path}: truncated pixel data ({len(buf)} of {h.pixel_length} bytes)")
        arr = np.frombuffer(buf, dtype=dtype).reshape(frames, h.rows, h.columns)
        unused = h.bits_allocated - h.bits_stored
        if 0 < unused < h.bits_allocated:
            native = arr.astype(dtype.newbyteorder("="))
            if h.pixel_representation == 1:  # sign-extend from BitsStored
                arr = (native << unused) >> unused
            else:
                arr = native & ((1 << h.bits_stored) - 1)
        return arr
    try:
        arr = pydicom.dcmread(h.path).pixel_array
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(
            f"{h.path}: cannot decode pixel data (transfer syntax {h.transfer_syntax or 'unknown'}; {type(exc).__name__}: {msg})"
        ) from exc
    shape = (frames, h.rows, h.columns) + ((h.samples_per_pixel,) if h.samples_per_pixel > 1 else ())
    return arr.reshape(shape)


def read_slices(h: SliceHeader) -> np.ndarray:
    """Stored pixel values of every slice of a file: ``(slices, rows, columns)``, mosaics cut into tiles.

    Example:
        >>> read_slices(read_header("IM-0001-0001.dcm")).shape  # doctest: +SKIP
        (36, 64, 64)
    """
    pixels = read_stored_pixels(h)
    return unpack_mosaic(pixels, h) if h.mosaic else pixels
