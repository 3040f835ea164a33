"""Siemens mosaic images: several slices tiled into one 2D image, placed with the CSA header.

A mosaic holds ``N`` slices (CSA ``NumberOfImagesInMosaic``) on a square grid of
``ceil(sqrt(N))`` tiles per side, filled row by row. Its ImagePositionPatient
refers to the top-left corner of the whole mosaic, as if it were one large
slice; the first slice's true position is that corner moved by half the
difference between mosaic and tile sizes along the row and column directions
(the correction dcm2niix and nibabel's ``MosaicWrapper`` apply). Slice ``k``
lies ``k`` slice spacings along the CSA ``SliceNormalVector``. United Imaging's
``VFRAME`` mosaics tile slices the same way, with each slice's position in a
private sequence.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom

from medimg.errors import DataError
from medimg.io.dicom.csa import normal_array
from medimg.io.dicom.slice_header import SliceHeader


def tiles_per_side(n_slices: int) -> int:
    """Tiles along each side of the mosaic grid.

    Example:
        >>> tiles_per_side(36), tiles_per_side(37)
        (6, 7)
    """
    return math.ceil(math.sqrt(n_slices))


def mosaic_layout(h: SliceHeader) -> None:
    """Set ``h.mosaic``, the tile size and the true position of every slice (``h.frame_positions``).

    Leaves the header unchanged (not a mosaic) when the CSA header gives no slice count,
    and sets ``h.frame_note`` when the mosaic cannot be placed in space.
    """
    n = h.csa.n_mosaic if h.csa else None
    if not n:
        return
    side = tiles_per_side(n)
    if h.rows % side or h.columns % side:
        h.frame_note = f"mosaic of {h.rows}x{h.columns} pixels cannot hold {n} equal tiles ({side} per side)"
        return
    h.mosaic, h.tile_rows, h.tile_columns = n, h.rows // side, h.columns // side
    normal = normal_array(h.csa)
    if h.orientation is None or h.position is None or h.pixel_spacing is None:
        return
    if normal is None:
        h.frame_note = "mosaic without a CSA SliceNormalVector; cannot order its slices in space"
        return
    iop = np.asarray(h.orientation, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    row_spacing, col_spacing = h.pixel_spacing
    first = (
        np.asarray(h.position, dtype=np.float64)
        + col_dir * row_spacing * (h.rows - h.tile_rows) / 2.0
        + row_dir * col_spacing * (h.columns - h.tile_columns) / 2.0
    )
    step = h.slice_spacing or h.slice_thickness or 1.0
    h.frame_positions = first + np.arange(n)[:, None] * step * normal[None, :]
    h.position = (float(first[0]), float(first[1]), float(first[2]))


def uih_mosaic_layout(h: SliceHeader, ds: pydicom.Dataset) -> None:
    """Set the mosaic layout of a United Imaging ``VFRAME`` image from its private tags.

    United Imaging writes the slice count in (0065,1050), the tile size as ``"rows*columns"``
    in (0065,1004), and one item per slice, with its true ImagePositionPatient, in the
    sequence (0065,1051). Tiles fill the image row by row. (The items' AcquisitionTime
    differ from dcm2niix's slice times by up to 10 ms, so no SliceTiming is derived.)
    """
    count, size, items = ds.get((0x0065, 0x1050)), ds.get((0x0065, 0x1004)), ds.get((0x0065, 0x1051))
    try:
        n = int(float(count.value))  # type: ignore[union-attr]
        tile_rows, tile_columns = (int(v) for v in str(size.value).split("*"))  # type: ignore[union-attr]
        positions = [[float(v) for v in item.ImagePositionPatient] for item in items.value]  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        h.frame_note = (
            "United Imaging mosaic (ImageType VFRAME) without readable slice count, tile size or positions"
        )
        return
    across = h.columns // tile_columns if tile_columns else 0
    if len(positions) != n or n < 1 or across * (h.rows // tile_rows) < n:
        h.frame_note = (
            f"United Imaging mosaic of {h.rows}x{h.columns} pixels cannot hold {n} tiles of {size.value}"
        )
        return
    h.mosaic, h.tile_rows, h.tile_columns = n, tile_rows, tile_columns
    h.frame_positions = np.asarray(positions, dtype=np.float64)
    h.position = (positions[0][0], positions[0][1], positions[0][2])


def unpack_mosaic(pixels: np.ndarray, h: SliceHeader) -> np.ndarray:
    """Cut a mosaic's pixels ``(1, rows, columns)`` into its slices ``(N, tile_rows, tile_columns)``.

    Example:
        >>> unpack_mosaic(pixels, header).shape  # doctest: +SKIP
        (36, 64, 64)
    """
    if pixels.shape[-2:] != (h.rows, h.columns):
        raise DataError(f"{h.path}: mosaic pixels have shape {pixels.shape}, expected {h.rows}x{h.columns}")
    down, across = h.rows // h.tile_rows, h.columns // h.tile_columns
    image = pixels.reshape(h.rows, h.columns)[: down * h.tile_rows, : across * h.tile_columns]
    grid = image.reshape(down, h.tile_rows, across, h.tile_columns).transpose(0, 2, 1, 3)
    return grid.reshape(down * across, h.tile_rows, h.tile_columns)[: h.mosaic]
