"""Assemble a 3D volume from the files of one DICOM series, with exact geometry.

Slices are sorted by ImagePositionPatient projected on the slice normal;
duplicates, missing slices, non-uniform spacing and gantry tilt are detected and
either refused with a clear reason or resampled when asked. Stored values are
rescaled (CT in HU) into a float32 volume. Uncompressed slices are read straight
from their byte offset; compressed ones go through pydicom's decoders
(pylibjpeg, python-gdcm).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRBigEndian

from medimg.errors import DataError
from medimg.io.dicom.geometry import affine_lps, plane_name, slice_normal, sort_slices
from medimg.io.dicom.headers import SliceHeader, read_header
from medimg.io.volume import Volume

SpacingPolicy = Literal["refuse", "resample"]
TiltPolicy = Literal["keep", "resample", "refuse"]
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


def _check_consistent(headers: Sequence[SliceHeader]) -> None:
    ref = headers[0]
    for h in headers[1:]:
        if (h.rows, h.columns) != (ref.rows, ref.columns):
            raise DataError(
                f"{h.path}: {h.rows}x{h.columns} pixels, but {ref.path.name} has {ref.rows}x{ref.columns}"
            )
        if not np.allclose(h.orientation, ref.orientation, atol=1e-4):
            raise DataError(f"{h.path}: ImageOrientationPatient differs from {ref.path.name}; not one volume")
        if not np.allclose(h.pixel_spacing, ref.pixel_spacing, rtol=1e-4):
            raise DataError(
                f"{h.path}: PixelSpacing {h.pixel_spacing} differs from {ref.pixel_spacing} in {ref.path.name}"
            )


def _resample_along_normal(data: np.ndarray, dist: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of (n, rows, cols) slices at ``dist`` onto a uniform grid of ``step``."""
    count = int(round((dist[-1] - dist[0]) / step)) + 1
    targets = dist[0] + step * np.arange(count)
    out = np.empty((count, *data.shape[1:]), dtype=np.float32)
    for m, t in enumerate(targets):
        hi = int(np.clip(np.searchsorted(dist, t), 1, len(dist) - 1))
        w = (t - dist[hi - 1]) / (dist[hi] - dist[hi - 1])
        out[m] = (1 - w) * data[hi - 1] + w * data[hi]
    return out, targets


def _untilt(data: np.ndarray, aff: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Shift each slice in-plane so the sheared grid becomes orthogonal (linear interpolation)."""
    from scipy import ndimage

    step = aff[:3, 2]
    shear = step - (step @ normal) * normal
    a = (shear @ aff[:3, 0]) / (aff[:3, 0] @ aff[:3, 0])  # columns per slice
    b = (shear @ aff[:3, 1]) / (aff[:3, 1] @ aff[:3, 1])  # rows per slice
    fill = float(data.min()) if data.size else 0.0
    out = np.empty_like(data)
    for k in range(data.shape[0]):
        out[k] = ndimage.shift(data[k], (k * b, k * a), order=1, mode="constant", cval=fill)
    aff[:3, 2] = (step @ normal) * normal
    return out


def load_series(
    files: Sequence[str | os.PathLike[str]] | Sequence[SliceHeader],
    *,
    spacing_policy: SpacingPolicy = "refuse",
    tilt_policy: TiltPolicy = "keep",
    workers: int = 1,
) -> Volume:
    """Load the files of one series as a float32 :class:`Volume` in LPS.

    Args:
        files: paths (or already read headers) of one series, in any order.
        spacing_policy: on missing slices or non-uniform spacing, ``"refuse"`` (raise)
            or ``"resample"`` linearly onto the median step.
        tilt_policy: on gantry tilt, ``"keep"`` the exact sheared affine, ``"resample"``
            to an orthogonal grid, or ``"refuse"``.
        workers: threads reading pixel data.

    Raises:
        DataError: naming the file and the reason the series cannot be one volume.

    Example:
        >>> vol = load_series(sorted(Path("study/ct").glob("*.dcm")))  # doctest: +SKIP
        >>> vol.space, vol.spacing  # doctest: +SKIP
        ('LPS', (0.7, 0.7, 2.5))
    """
    if not files:
        raise DataError("load_series: no files given")
    headers = [f if isinstance(f, SliceHeader) else read_header(f) for f in files]
    for h in headers:
        check_pixel_format(h)
    _check_consistent(headers)
    if len(headers) > 1 and any(h.number_of_frames > 1 for h in headers):
        raise DataError(
            f"{headers[0].path.parent}: {len(headers)} files given and some are multi-frame; "
            "load each multi-frame file on its own"
        )
    ref = headers[0]
    flags: list[str] = []
    if len(headers) == 1 and ref.number_of_frames > 1:
        if ref.frame_positions is None:
            raise DataError(
                f"{ref.path}: {ref.frame_note or 'multi-frame image without per-frame positions'}; not one volume"
            )
        positions = ref.frame_positions
    else:
        positions = np.array([h.position for h in headers], dtype=np.float64)
    stack = sort_slices(positions, ref.orientation)
    if stack.duplicates:
        i, j = stack.duplicates[0]
        a, b = headers[min(i, len(headers) - 1)].path, headers[min(j, len(headers) - 1)].path
        raise DataError(
            f"{a.parent}: {len(stack.duplicates)} duplicate slice position(s), e.g. {a.name} and {b.name} "
            f"at {stack.distances[0]:.3f} mm along the normal; the series mixes acquisitions or echoes"
        )
    if (stack.missing or stack.nonuniform) and spacing_policy == "refuse":
        what = f"{stack.missing} missing slice(s)" if stack.missing else "non-uniform slice spacing"
        gaps = np.round(np.diff(stack.distances), 3)
        raise DataError(
            f"{ref.path.parent}: {what} (gaps along the normal: {sorted(set(gaps.tolist()))} mm); "
            "refusing to guess (use spacing_policy='resample' to interpolate onto a uniform grid)"
        )
    if stack.tilt_deg > 0.01 and tilt_policy == "refuse":
        raise DataError(
            f"{ref.path.parent}: gantry tilt of {stack.tilt_deg:.2f} degrees (tilt_policy='refuse')"
        )
    flags += stack.flags

    data = np.empty((len(positions), ref.rows, ref.columns), dtype=np.float32)

    def fill(item: tuple[int, int]) -> None:
        k, src = item
        h = headers[src]
        np.multiply(read_stored_pixels(h)[0], h.rescale_slope, out=data[k], casting="unsafe")
        data[k] += h.rescale_intercept

    if len(headers) == 1:
        frames = read_stored_pixels(ref)
        if ref.frame_rescale is not None:
            rescale = ref.frame_rescale[stack.order]
            np.multiply(frames[stack.order], rescale[:, :1, None], out=data, casting="unsafe")
            data += rescale[:, 1:, None].astype(np.float32)
        else:
            np.multiply(frames[stack.order], ref.rescale_slope, out=data, casting="unsafe")
            data += ref.rescale_intercept
    else:
        items = list(enumerate(int(s) for s in stack.order))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(fill, items))
        else:
            for item in items:
                fill(item)

    origin = positions[stack.order[0]]
    step = stack.step if len(positions) > 1 else slice_normal(ref.orientation) * (ref.slice_thickness or 1.0)
    if (stack.missing or stack.nonuniform) and spacing_policy == "resample":
        median = float(np.median(np.diff(stack.distances)))
        data, targets = _resample_along_normal(data, stack.distances, median)
        step = stack.normal * median + (stack.step - (stack.step @ stack.normal) * stack.normal) * (
            median / max(float(stack.step @ stack.normal), 1e-9)
        )
    aff = affine_lps(ref.orientation, ref.pixel_spacing, origin, step)
    if stack.tilt_deg > 0.01 and tilt_policy == "resample":
        data = _untilt(data, aff, stack.normal)
        flags.append("tilt_resampled")
    if ref.photometric == "MONOCHROME1":
        flags.append("monochrome1")
    meta = {
        "modality": ref.modality,
        "manufacturer": ref.manufacturer,
        "model": ref.model,
        "body_part": ref.body_part,
        "plane": plane_name(ref.orientation),
        "slice_thickness": ref.slice_thickness,
        "tilt_deg": round(stack.tilt_deg, 4),
        "n_files": len(headers),
        "transfer_syntax": ref.transfer_syntax,
        "qa_flags": flags,
        "source": str(Path(ref.path).parent),
    }
    return Volume(data.transpose(2, 1, 0), aff, "LPS", meta)
