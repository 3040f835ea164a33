"""Slice timing of classic and enhanced 2D acquisitions (the BIDS ``SliceTiming`` key, in seconds).

A Siemens mosaic carries its slice times in the CSA header (see
:mod:`medimg.io.dicom.csa`). Other exports give each slice its own time: GE
writes the slice's offset within the repetition as TriggerTime (ms); Siemens,
Philips and others write AcquisitionTime (or, in enhanced images, each frame's
FrameAcquisitionDateTime). medimg takes the times of the first volume's slices,
relative to the earliest, and keeps them only when they span less than one
repetition time (else they are not slice times of one volume).
"""

from __future__ import annotations

from collections.abc import Sequence

from medimg.io.dicom.frames import Frame


def slice_timing(frames: Sequence[Frame], repetition_time: float | None) -> list[float] | None:
    """Slice times (s) of one volume's frames, given in slice order; ``None`` when not derivable.

    Example:
        >>> slice_timing(first_volume_in_slice_order, 2.0)  # doctest: +SKIP
        [0.0, 1.0, 0.25, 1.25, 0.5, 1.5, 0.75, 1.75]
    """
    if len(frames) < 2 or not repetition_time:
        return None
    ge = "GE" in frames[0].header.manufacturer.upper()
    if ge and all(f.trigger is not None for f in frames):
        times = [float(f.trigger) / 1000.0 for f in frames]  # type: ignore[arg-type]
    elif all(f.acq_time is not None for f in frames):
        times = [float(f.acq_time) for f in frames]  # type: ignore[arg-type]
    else:
        return None
    start = min(times)
    times = [round(t - start, 6) for t in times]
    if max(times) <= 0 or max(times) >= repetition_time:
        return None
    return times
