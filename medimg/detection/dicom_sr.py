"""Detected lesions as a DICOM SR measurement report (TID 1500, Comprehensive 3D SR, highdicom).

Each box is one TID 1411 volumetric ROI group. Its region is an ELLIPSOID (SCOORD3D, in the
source series' frame of reference, LPS mm): the ellipsoid inscribed in the box, given by the two
ends of each of its three axes, which run along the scan's voxel axes, so the centre (their
midpoint) and the size along each axis (their lengths) are the box's, exactly. The group carries
the detector's score (concept ``DETSCORE`` of the private ``99MEDIMG`` scheme, as the class
probabilities of :mod:`medimg.inference.dicom_sr`) and the box's largest side as its diameter
(mm). The observer and the algorithm identification are those of every medimg SR.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from medimg.detection.boxes import VoxelBox, WorldBox, voxel_to_world
from medimg.errors import DataError
from medimg.inference.dicom_seg import AlgorithmInfo, sort_source_datasets
from medimg.inference.dicom_sr import (
    SR_SERIES_NUMBER,
    _add_coding_scheme,
    _algorithm_identification,
    _comprehensive_sr,
)
from medimg.io.atomic import atomic_write
from medimg.io.volume import Volume

SCORE_CODE = ("DETSCORE", "99MEDIMG", "Detection score")


def ellipsoid_points(box: VoxelBox, volume: Volume) -> np.ndarray:
    """``(6, 3)`` LPS mm: the ends of the inscribed ellipsoid's axes (i-, i+, j-, j+, k-, k+)."""
    affine = volume.affine_in("LPS")
    centre = np.asarray(box.centre, float)
    points = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            index = centre.copy()
            index[axis] += sign * box.extent[axis] / 2
            points.append(affine[:3, :3] @ index + affine[:3, 3])
    return np.asarray(points)


def write_detection_sr(
    boxes: Sequence[VoxelBox],
    volume: Volume,
    source_datasets: Sequence[pydicom.Dataset],
    out_path: str | os.PathLike[str],
    algorithm: AlgorithmInfo,
    *,
    series_number: int = SR_SERIES_NUMBER,
) -> Path:
    """Write the boxes of one DICOM series (``volume`` read from ``source_datasets``) as an SR.

    Example:
        >>> write_detection_sr(boxes, volume, datasets, "out/boxes_sr.dcm", algo)  # doctest: +SKIP
    """
    ordered = sort_source_datasets(source_datasets)
    frame = str(ordered[0].get("FrameOfReferenceUID", ""))
    if not frame:
        raise DataError("write_detection_sr: the source series has no FrameOfReferenceUID")
    algorithm_id = _algorithm_identification(algorithm)
    groups = [
        _box_group(n, box, volume, frame, ordered, algorithm_id) for n, box in enumerate(boxes, start=1)
    ]
    if not groups:
        groups.append(_no_lesion_group())
    sr = _comprehensive_sr(ordered, None, groups, algorithm, series_number)
    _add_coding_scheme(sr)
    with atomic_write(out_path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return Path(out_path)


def _box_group(
    n: int, box: VoxelBox, volume: Volume, frame: str, ordered: Sequence[pydicom.Dataset], algorithm_id: Any
) -> Any:
    """Box ``n`` as a volumetric ROI: an ellipsoid surface with its score and diameter (mm)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    size = voxel_to_world(box, volume).size_mm
    surface = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D.ELLIPSOID,
        graphic_data=ellipsoid_points(box, volume),
        frame_of_reference_uid=frame,
        source_series=hd.sr.SourceSeriesForSegmentation(str(ordered[0].SeriesInstanceUID)),
    )
    measurements = [
        hd.sr.Measurement(
            name=hd.sr.CodedConcept(*SCORE_CODE),
            value=float(box.score),
            unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            algorithm_id=algorithm_id,
        ),
        hd.sr.Measurement(
            name=codes.SCT.Diameter,
            value=float(max(size)),
            unit=hd.sr.CodedConcept("mm", "UCUM", "millimeter"),
            algorithm_id=algorithm_id,
        ),
    ]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion {n}"),
        referenced_volume_surface=surface,
        finding_type=codes.SCT.Lesion,
        algorithm_id=algorithm_id,
        measurements=measurements,
    )


def _no_lesion_group() -> Any:
    """The one group of an SR without boxes: no lesion detected."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="no lesion detected"),
        finding_type=codes.SCT.Lesion,
    )


def read_detection_sr(path: str | os.PathLike[str]) -> list[WorldBox]:
    """The boxes of an SR written by :func:`write_detection_sr`, read back with highdicom (LPS mm).

    Each box's centre is the midpoint of its ellipsoid's axes, its size the axes' lengths, its
    score the ``DETSCORE`` measurement.
    """
    import highdicom as hd

    sr = hd.sr.srread(path)
    boxes = []
    for group in sr.content.get_volumetric_roi_measurement_groups():
        points = np.asarray(group.roi.graphic_data, float).reshape(6, 3)
        score = next(float(m.value) for m in group.get_measurements() if m.name.value == SCORE_CODE[0])
        centre = points.mean(axis=0)
        size = [float(np.linalg.norm(points[2 * a + 1] - points[2 * a])) for a in range(3)]
        boxes.append(WorldBox(tuple(float(v) for v in centre), tuple(size), score, "LPS"))  # type: ignore[arg-type]
    return boxes
