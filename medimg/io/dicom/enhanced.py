"""Enhanced (multi-frame) MR/CT images: per-frame functional groups into per-frame tags.

An enhanced image keeps every slice (frame) of one or several volumes in one
file; where each frame lies, how its values are scaled, which echo, time point,
b-value or complex component it holds, is in the per-frame (or shared)
functional groups. This module turns them into one :class:`FrameTags` per frame.
Philips stores a private scale slope (2005,100E) in its per-frame private group;
like dcm2niix, medimg applies it (``value = stored * RS + RI`` divided by
``RS * SS``) so values are the scanner's floating-point values, not display ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom

from medimg.io.dicom.slice_header import FrameTags, SliceHeader
from medimg.io.dicom.values import dicom_seconds, floats, number

_IN_STACK_POSITION = 0x00209057  # dimension that only says where a frame lies in its stack
_PHILIPS_PRIVATE = (0x2005, 0x140F)
_PHILIPS_SCALE_SLOPE = (0x2005, 0x100E)


def philips_scale(ds: pydicom.Dataset, slope: float, intercept: float) -> tuple[float, float]:
    """Slope and intercept giving Philips floating-point values when (2005,100E) is present."""
    item = ds.get(_PHILIPS_SCALE_SLOPE)
    try:
        ss = float(item.value) if item is not None else 0.0
    except (TypeError, ValueError):
        ss = 0.0
    if ss == 0.0 or slope == 0.0:
        return slope, intercept
    return 1.0 / ss, intercept / (slope * ss)


def _finder(shared: pydicom.Dataset) -> Any:
    def find(frame: pydicom.Dataset, seq: str, attr: str) -> Any:
        for src in (frame, shared):
            item = src.get(seq)
            if item and attr in item[0]:
                return item[0][attr].value
        return None

    return find


def _gradient(seq: Any) -> tuple[float, ...] | None:
    if not seq:
        return None
    return floats(seq[0].get("DiffusionGradientOrientation"), 3)


def _frame_tags(frame: pydicom.Dataset, shared: pydicom.Dataset, keep: list[int], philips: bool) -> FrameTags:
    find = _finder(shared)
    pos = floats(find(frame, "PlanePositionSequence", "ImagePositionPatient"), 3)
    slope = number(find(frame, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = number(find(frame, "PixelValueTransformationSequence", "RescaleIntercept")) or 0.0
    slope = 1.0 if slope is None else slope
    if philips:
        for src in (frame, shared):
            private = src.get(_PHILIPS_PRIVATE)
            if private is not None and private.VR == "SQ" and len(private.value):
                slope, intercept = philips_scale(private.value[0], slope, intercept)
                break
    dims = find(frame, "FrameContentSequence", "DimensionIndexValues")
    dims = [int(v) for v in (dims if isinstance(dims, (list, pydicom.multival.MultiValue)) else [dims])] if dims is not None else None  # fmt: skip
    temporal = find(frame, "FrameContentSequence", "TemporalPositionIndex")
    return FrameTags(
        position=(pos[0], pos[1], pos[2]) if pos else None,
        slope=slope,
        intercept=intercept,
        temporal=int(temporal) if temporal not in (None, "") else None,
        volume_key=tuple(dims[i] for i in keep if i < len(dims)) if dims is not None else None,
        echo_time=number(find(frame, "MREchoSequence", "EffectiveEchoTime")),
        b_value=number(find(frame, "MRDiffusionSequence", "DiffusionBValue")),
        gradient=_gradient(find(frame, "MRDiffusionSequence", "DiffusionGradientDirectionSequence")),
        trigger=number(find(frame, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")),
        component=str(find(frame, "MRImageFrameTypeSequence", "ComplexImageComponent") or "").upper(),
        stack=str(find(frame, "FrameContentSequence", "StackID") or ""),
        acq_time=dicom_seconds(find(frame, "FrameContentSequence", "FrameAcquisitionDateTime")),
    )


def enhanced_geometry(ds: pydicom.Dataset, h: SliceHeader) -> None:
    """Fill ``h`` (geometry, rescale and one :class:`FrameTags` per frame) from the functional groups."""
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else pydicom.Dataset()
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    find = _finder(shared)
    first = per_frame[0] if len(per_frame) else pydicom.Dataset()
    h.orientation = floats(find(first, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    ps = floats(find(first, "PixelMeasuresSequence", "PixelSpacing"), 2)
    h.pixel_spacing = (ps[0], ps[1]) if ps else None
    h.slice_thickness = number(find(first, "PixelMeasuresSequence", "SliceThickness"))
    pointers = [int(item.get("DimensionIndexPointer", 0)) for item in ds.get("DimensionIndexSequence") or []]
    keep = [i for i, p in enumerate(pointers) if p != _IN_STACK_POSITION]
    philips = "PHILIPS" in h.manufacturer.upper()
    tags = [_frame_tags(f, shared, keep, philips) for f in per_frame]
    orientations = {
        floats(find(f, "PlaneOrientationSequence", "ImageOrientationPatient"), 6) for f in per_frame
    }
    if len(orientations) > 1:
        h.frame_note = f"frames differ in orientation ({len(orientations)} stacks in one file)"
    elif len(tags) != h.number_of_frames:
        h.frame_note = f"{len(tags)} per-frame groups for {h.number_of_frames} frames"
    elif not tags or any(t.position is None for t in tags):
        h.frame_note = "multi-frame image without per-frame ImagePositionPatient"
    else:
        h.frame_tags = tags
        h.frame_positions = np.asarray([t.position for t in tags], dtype=np.float64)
        h.position = tags[0].position
    if tags:
        h.rescale_slope, h.rescale_intercept = tags[0].slope, tags[0].intercept
        rescale = {(t.slope, t.intercept) for t in tags}
        if len(rescale) > 1 and len(tags) == h.number_of_frames:
            h.frame_rescale = np.asarray([(t.slope, t.intercept) for t in tags], dtype=np.float64)
