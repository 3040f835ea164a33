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
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medimg.errors import DataError
from medimg.io.dicom.frames import Frame
from medimg.io.dicom.geometry import SliceStack, plane_name
from medimg.io.dicom.grid import series_grid
from medimg.io.dicom.headers import read_header
from medimg.io.dicom.pixels import check_pixel_format, read_slices, read_stored_pixels
from medimg.io.dicom.slice_header import SliceHeader
from medimg.io.dicom.slicetiming import slice_timing
from medimg.io.volume import Volume

__all__ = ["check_pixel_format", "load_series", "read_stored_pixels"]

SpacingPolicy = Literal["refuse", "resample"]
TiltPolicy = Literal["keep", "resample", "refuse"]


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


def _check_stack(stack: SliceStack, ref: SliceHeader, spacing_policy: str, tilt_policy: str) -> None:
    if stack.duplicates:
        raise DataError(
            f"{ref.path.parent}: {len(stack.duplicates)} duplicate slice position(s) within one volume "
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


def _read_volumes(
    volumes: list[list[Frame]], stacks: list[SliceStack], shape: tuple[int, int], workers: int
) -> np.ndarray:
    """Rescaled pixels ``(volumes, slices, rows, columns)``; each file is read once."""
    data = np.empty((len(volumes), len(volumes[0]), *shape), dtype=np.float32)
    by_file: dict[Any, list[tuple[Frame, int, int]]] = defaultdict(list)
    for t, (frames, stack) in enumerate(zip(volumes, stacks, strict=True)):
        for z, idx in enumerate(stack.order):
            f = frames[int(idx)]
            by_file[f.header.path].append((f, t, z))

    def fill(items: list[tuple[Frame, int, int]]) -> None:
        slices = read_slices(items[0][0].header)
        for f, t, z in items:
            np.multiply(slices[f.index], f.slope, out=data[t, z], casting="unsafe")
            data[t, z] += np.float32(f.intercept)

    if workers > 1 and len(by_file) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, by_file.values()))
    else:
        for items in by_file.values():
            fill(items)
    return data


def load_series(
    files: Sequence[str | os.PathLike[str]] | Sequence[SliceHeader],
    *,
    spacing_policy: SpacingPolicy = "refuse",
    tilt_policy: TiltPolicy = "keep",
    workers: int = 1,
) -> Volume:
    """Load the files of one series as a float32 :class:`Volume` in LPS (3D, or 4D ``(x, y, z, t)``).

    Classic slices, Siemens mosaics and enhanced multi-frame images are all read;
    slice positions repeated over time, b-values or acquisitions make a 4D volume
    whose spatial affine is that of every time point (see :mod:`medimg.io.dicom.fourd`).

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
    ref = headers[0]
    if sum(h.number_of_frames > 1 for h in headers) > 1 and len({h.series_uid for h in headers}) > 1:
        raise DataError(
            f"{ref.path.parent}: {len(headers)} multi-frame files of different series given together; "
            "load each multi-frame file on its own"
        )
    grid = series_grid(headers)
    stack = grid.stack
    _check_stack(stack, ref, spacing_policy, tilt_policy)
    data = _read_volumes(grid.volumes, grid.stacks, (grid.shape[1], grid.shape[0]), workers)
    aff = grid.affine
    data, done = _regularise(data, aff, stack, spacing_policy, tilt_policy)
    flags = stack.flags + ([grid.grouping] if grid.grouping else []) + grid.notes + done
    if ref.photometric == "MONOCHROME1":
        flags.append("monochrome1")
    meta = _meta(ref, headers, stack, flags, grid.volumes)
    array = data.transpose(3, 2, 1, 0)  # (t, z, row, col) -> (col, row, z, t)
    return Volume(array[..., 0] if len(grid.volumes) == 1 else array, aff, "LPS", meta)


def _regularise(
    data: np.ndarray, aff: np.ndarray, stack: SliceStack, spacing_policy: str, tilt_policy: str
) -> tuple[np.ndarray, list[str]]:
    """Resample every volume onto a uniform or untilted grid when asked (``aff`` is updated in place)."""
    done = []
    if (stack.missing or stack.nonuniform) and spacing_policy == "resample":
        median = float(np.median(np.diff(stack.distances)))
        data = np.stack([_resample_along_normal(d, stack.distances, median)[0] for d in data])
        aff[:3, 2] = stack.normal * median + (stack.step - (stack.step @ stack.normal) * stack.normal) * (
            median / max(float(stack.step @ stack.normal), 1e-9)
        )
    if stack.tilt_deg > 0.01 and tilt_policy == "resample":
        tilted = aff.copy()
        data = np.stack([_untilt(d, tilted.copy() if t else aff, stack.normal) for t, d in enumerate(data)])
        done.append("tilt_resampled")
    return data, done


def _meta(
    ref: SliceHeader,
    headers: Sequence[SliceHeader],
    stack: SliceStack,
    flags: list[str],
    volumes: list[list[Frame]],
) -> dict[str, Any]:
    first = volumes[0]
    meta: dict[str, Any] = {
        "modality": ref.modality,
        "manufacturer": ref.manufacturer,
        "model": ref.model,
        "body_part": ref.body_part,
        "plane": plane_name(ref.orientation),  # type: ignore[arg-type]
        "slice_thickness": ref.slice_thickness,
        "tilt_deg": round(stack.tilt_deg, 4),
        "n_files": len(headers),
        "transfer_syntax": ref.transfer_syntax,
        "qa_flags": flags,
        "source": str(Path(ref.path).parent),
    }
    acquisition = dict(ref.acquisition)
    times = acquisition.pop("SliceTiming", None)
    if times and ref.mosaic and len(times) == ref.mosaic:
        acquisition["SliceTiming"] = [times[first[int(i)].index] for i in stack.order]
    elif not ref.mosaic:
        derived = slice_timing([first[int(i)] for i in stack.order], acquisition.get("RepetitionTime"))
        if derived:
            acquisition["SliceTiming"] = derived
    meta.update(acquisition)
    meta["n_volumes"] = len(volumes)
    if len(volumes) > 1 and any(v[0].b_value for v in volumes):  # b = 0 volumes may lack the tag
        meta["DiffusionBValues"] = [float(v[0].b_value or 0.0) for v in volumes]
    return meta
