"""The voxel grid of a DICOM series from its headers alone: volumes, slice stack, affine, shape.

What :func:`medimg.io.dicom.assemble.load_series` reads pixels into, computed
without reading any pixel: a manifest row (dims, spacing, orientation) and the
volume agree because both come from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medimg.errors import DataError
from medimg.io.dicom.fourd import group_volumes
from medimg.io.dicom.frames import Frame, drop_isotropic_traces, expand_frames
from medimg.io.dicom.geometry import SliceStack, affine_lps, slice_normal, sort_slices
from medimg.io.dicom.slice_header import SliceHeader


@dataclass
class SeriesGrid:
    """Volumes of one series (frames per time point), their slice stacks, and the voxel grid."""

    volumes: list[list[Frame]]
    stacks: list[SliceStack]
    grouping: str  # "" for 3D, else the 4D grouping flag ("4d:temporal_position"...)
    affine: np.ndarray  # LPS, voxel (column, row, slice)
    shape: tuple[int, ...]  # (columns, rows, slices) or (columns, rows, slices, volumes)
    notes: list[str] = field(default_factory=list)  # QA flags of what was left out

    @property
    def stack(self) -> SliceStack:
        """The slice stack of the first volume (every volume has the same positions)."""
        return self.stacks[0]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along column, row and slice."""
        s = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(s[0]), float(s[1]), float(s[2]))


def series_grid(headers: Sequence[SliceHeader]) -> SeriesGrid:
    """Group the frames of ``headers`` into volumes and compute the LPS affine and array shape.

    Raises:
        DataError: a slice without position (naming its file) or positions repeated unevenly.

    Example:
        >>> grid = series_grid(series.headers)  # doctest: +SKIP
        >>> grid.shape, grid.grouping  # doctest: +SKIP
        ((64, 64, 36, 6), '4d:acquisition_number')
    """
    ref = headers[0]
    iop = ref.orientation
    if iop is None or ref.pixel_spacing is None:
        raise DataError(
            f"{ref.path}: no ImageOrientationPatient/PixelSpacing; cannot place the series in space"
        )
    frames, dropped = drop_isotropic_traces(expand_frames(headers))
    volumes, grouping = group_volumes(frames, slice_normal(iop))
    stacks = [sort_slices(np.array([f.position for f in v]), iop) for v in volumes]
    stack, first = stacks[0], volumes[0]
    if len(first) > 1:
        step = stack.step
    else:
        step = slice_normal(iop) * (ref.slice_spacing or ref.slice_thickness or 1.0)
    affine = affine_lps(iop, ref.pixel_spacing, first[int(stack.order[0])].position, step)
    rows, cols = (ref.tile_rows, ref.tile_columns) if ref.mosaic else (ref.rows, ref.columns)
    shape = (cols, rows, len(first)) + ((len(volumes),) if len(volumes) > 1 else ())
    notes = ["isotropic_trace_dropped"] if dropped else []
    return SeriesGrid(volumes, stacks, grouping, affine, shape, notes)
