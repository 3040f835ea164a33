"""Slices as frames: one record per 2D slice, whether a file holds one slice, a mosaic or many frames.

Classic DICOM holds one slice per file; a Siemens mosaic tiles many slices into
one image; an enhanced image holds many frames. Grouping and assembly work on
:class:`Frame` records, one per slice, so the three are handled the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medimg.errors import DataError
from medimg.io.dicom.slice_header import SliceHeader


@dataclass
class Frame:
    """One 2D slice: its file, its index in that file's pixel data, where it lies, how it is scaled."""

    header: SliceHeader
    index: int  # frame (or mosaic tile) within the file
    position: np.ndarray  # ImagePositionPatient of the slice (LPS mm)
    slope: float = 1.0
    intercept: float = 0.0
    temporal: int | None = None
    volume_key: tuple[int, ...] | None = None  # enhanced: dimension indices other than the in-stack position
    trigger: float | None = None
    acquisition: int | None = None
    b_value: float | None = None
    echo: float | None = None
    component: str = ""
    acq_time: float | None = None  # seconds since midnight (AcquisitionTime, FrameAcquisitionDateTime)
    gradient: tuple[float, ...] | None = None  # diffusion gradient direction

    @property
    def is_isotropic_trace(self) -> bool:
        """A diffusion-weighted frame without gradient direction: a trace (isotropic) image the scanner derived."""
        return (
            bool(self.b_value) and self.gradient is not None and not any(abs(g) > 1e-6 for g in self.gradient)
        )

    @property
    def instance(self) -> tuple[int, int, str]:
        """Order of the slice in the export: InstanceNumber, then frame, then file name."""
        return (self.header.instance_number or 0, self.index, self.header.path.name)


def _no_position(h: SliceHeader) -> DataError:
    return DataError(f"{h.path}: no ImagePositionPatient; this slice cannot be placed in space")


def _file_frames(h: SliceHeader) -> list[Frame]:
    common = dict(
        slope=h.rescale_slope,
        intercept=h.rescale_intercept,
        temporal=h.temporal_position,
        trigger=h.trigger_time,
        acquisition=h.acquisition_number,
        b_value=h.b_value,
        echo=h.echo_time if h.echo_number is None else float(h.echo_number),
        component=h.component,
        acq_time=h.acquisition_time,
        gradient=h.gradient,
    )
    if h.mosaic:
        if h.frame_positions is None:
            raise DataError(f"{h.path}: {h.frame_note or 'mosaic without ImagePositionPatient'}")
        return [Frame(h, k, h.frame_positions[k], **common) for k in range(h.mosaic)]  # type: ignore[arg-type]
    if h.number_of_frames > 1:
        if h.frame_tags is None:
            raise DataError(f"{h.path}: {h.frame_note or 'multi-frame image without per-frame positions'}")
        out = []
        for k, t in enumerate(h.frame_tags):
            if h.frame_select is not None and (t.echo_time, t.component) != h.frame_select:
                continue
            out.append(
                Frame(
                    h,
                    k,
                    np.asarray(t.position, dtype=np.float64),
                    t.slope,
                    t.intercept,
                    t.temporal,
                    t.volume_key,
                    t.trigger,
                    h.acquisition_number,
                    t.b_value,
                    t.echo_time,
                    t.component,
                    t.acq_time,
                    t.gradient,
                )  # fmt: skip
            )
        return out
    if h.position is None:
        raise _no_position(h)
    return [Frame(h, 0, np.asarray(h.position, dtype=np.float64), **common)]  # type: ignore[arg-type]


def expand_frames(headers: Sequence[SliceHeader]) -> list[Frame]:
    """Every slice of ``headers`` as a :class:`Frame` (mosaics cut into tiles, multi-frame into frames).

    Raises:
        DataError: naming the file of a slice that cannot be placed in space.

    Example:
        >>> frames = expand_frames([read_header(p) for p in files])  # doctest: +SKIP
    """
    return [f for h in headers for f in _file_frames(h)]


def frame_splits(headers: Sequence[SliceHeader]) -> list[tuple[float | None, str]]:
    """The (echo time, complex component) pairs of enhanced images, when they hold several.

    dcm2niix writes one file per echo and per component (``_e2``, ``_ph``); medimg
    makes one series of each. An empty list means the images are one series.
    """
    keys = {(t.echo_time, t.component) for h in headers for t in (h.frame_tags or [])}
    return sorted(keys, key=lambda k: (k[1], k[0] or 0.0)) if len(keys) > 1 else []


def drop_isotropic_traces(frames: list[Frame]) -> tuple[list[Frame], int]:
    """Frames without Philips' derived isotropic (trace) diffusion volume, and how many were dropped.

    Philips stores, inside a DTI series, a trace image (b > 0, gradient 0,0,0) computed
    from the others; dcm2niix leaves it out of the 4D volume, and so does medimg.
    """
    if not frames or "PHILIPS" not in frames[0].header.manufacturer.upper():
        return frames, 0
    kept = [f for f in frames if not f.is_isotropic_trace]
    if not kept or not any(f.gradient is not None and f.b_value for f in kept):
        return frames, 0  # not a DTI series with directions: keep everything
    return kept, len(frames) - len(kept)
