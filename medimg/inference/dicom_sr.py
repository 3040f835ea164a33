"""DICOM SR measurement report (TID 1500, highdicom): label volumes and class probabilities.

Each labelled volume is a TID 1411 volumetric measurement group that references its
segment in the DICOM SEG written by :func:`medimg.inference.dicom_seg.write_seg`
(when given), so a viewer links the number to the region. Class probabilities of a
classification model are a TID 1501 group. The observer is the model (a device
with its name and version); every measurement carries the algorithm identification
with the weights sha256.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom

from medimg.errors import DataError
from medimg.inference.dicom_seg import AlgorithmInfo, sort_source_datasets
from medimg.io.atomic import atomic_write

SR_SERIES_NUMBER = 9901
_PROCEDURE_BY_MODALITY = {
    "CT": "CTUnspecifiedBodyRegion",
    "MR": "MRIUnspecifiedBodyRegion",
    "PT": "PETUnspecifiedBodyRegion",
    "NM": "NMUnspecifiedBodyRegion",
}


def _load_seg(seg: pydicom.Dataset | str | os.PathLike[str] | None) -> pydicom.Dataset | None:
    if seg is None or isinstance(seg, pydicom.Dataset):
        return seg
    try:
        return pydicom.dcmread(seg)
    except Exception as exc:
        raise DataError(
            f"{seg}: cannot read the DICOM SEG to reference ({type(exc).__name__}: {exc})"
        ) from exc


def write_sr(
    volumes_ml: Mapping[int, float] | None,
    source_datasets: Sequence[pydicom.Dataset],
    labels: Mapping[int, str],
    out_path: str | os.PathLike[str],
    algorithm: AlgorithmInfo,
    *,
    seg: pydicom.Dataset | str | os.PathLike[str] | None = None,
    probabilities: Mapping[str, float] | None = None,
    series_number: int = SR_SERIES_NUMBER,
) -> Path:
    """Write a Comprehensive 3D SR measurement report (TID 1500) and return its path.

    Args:
        volumes_ml: mask value -> volume in millilitres (``None`` or empty: no volumes).
        source_datasets: the slices of the source series (headers suffice).
        labels: mask value -> name; names the measurement groups and finds SEG segments.
        out_path: the ``.dcm`` file to write (atomically).
        algorithm: model name, version and weights sha256.
        seg: the SEG (dataset or path) whose segments the volumes reference.
        probabilities: class name -> probability, for classification models.
        series_number: series number of the new SR series.

    Example:
        >>> write_sr({1: 812.5}, datasets, {1: "liver"}, "out/sr.dcm", algo, seg="out/seg.dcm")  # doctest: +SKIP
    """
    ordered = sort_source_datasets(source_datasets)
    seg_ds = _load_seg(seg)
    volumes = dict(volumes_ml or {})
    if not volumes and not probabilities:
        raise DataError("write_sr: nothing to report (expected volumes_ml and/or probabilities)")
    algorithm_id = _algorithm_identification(algorithm)
    groups = _volume_groups(volumes, labels, seg_ds, algorithm_id)
    if probabilities:
        groups.append(_probability_group(probabilities, algorithm_id))
    sr = _comprehensive_sr(ordered, seg_ds, groups, algorithm, series_number)
    if probabilities:
        _add_coding_scheme(sr)
    with atomic_write(out_path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return Path(out_path)


def _algorithm_identification(algorithm: AlgorithmInfo) -> Any:
    """The algorithm identification every measurement carries (name, version, parameters)."""
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=algorithm.name[:64],
        version=algorithm.version[:64],
        parameters=[f"{k}={v}" for k, v in algorithm.parameters().items()],
    )


def _observation_context(algorithm: AlgorithmInfo) -> Any:
    """The observer is the model: a device with its name, version and a UID derived from the weights."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=pydicom.uid.generate_uid(
            entropy_srcs=[algorithm.name, algorithm.version, algorithm.weights_sha256]
        ),
        name=algorithm.name[:64],
        manufacturer_name=algorithm.manufacturer[:64],
        model_name=f"{algorithm.name} {algorithm.version}"[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _segment_numbers(seg_ds: pydicom.Dataset | None) -> dict[str, int]:
    """Segment label -> segment number in the SEG (empty without one)."""
    segment_by_label: dict[str, int] = {}
    if seg_ds is not None:
        for item in seg_ds.SegmentSequence:
            segment_by_label[str(item.SegmentLabel)] = int(item.SegmentNumber)
    return segment_by_label


def _volume_groups(
    volumes: Mapping[int, float],
    labels: Mapping[int, str],
    seg_ds: pydicom.Dataset | None,
    algorithm_id: Any,
) -> list:
    """One measurement group per labelled volume; TID 1411 referencing its SEG segment when there is one."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    segment_by_label = _segment_numbers(seg_ds)
    groups: list = []
    for value, ml in sorted(volumes.items()):
        name = str(labels.get(value, f"label {value}"))[:64]
        measurement = hd.sr.Measurement(
            name=codes.SCT.Volume,
            value=float(ml),
            unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
            algorithm_id=algorithm_id,
        )
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{name} volume"[:64])
        if seg_ds is not None and name in segment_by_label:
            referenced = hd.sr.ReferencedSegment.from_segmentation(seg_ds, segment_by_label[name])
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_segment=referenced,
                    finding_type=codes.SCT.Tissue,
                    algorithm_id=algorithm_id,
                    measurements=[measurement],
                )
            )
        else:
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking, finding_type=codes.SCT.Tissue, measurements=[measurement]
                )
            )
    return groups


def _probability_group(probabilities: Mapping[str, float], algorithm_id: Any) -> Any:
    """The TID 1501 group of class probabilities (codes of the private 99MEDIMG scheme)."""
    import highdicom as hd

    measurements = [
        hd.sr.Measurement(
            name=hd.sr.CodedConcept(f"CLSPROB{i}", "99MEDIMG", f"Probability of {name}"[:64]),
            value=float(p),
            unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            algorithm_id=algorithm_id,
        )
        for i, (name, p) in enumerate(probabilities.items(), start=1)
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="class probabilities"),
        measurements=measurements,
    )


def _comprehensive_sr(
    ordered: Sequence[pydicom.Dataset],
    seg_ds: pydicom.Dataset | None,
    groups: list,
    algorithm: AlgorithmInfo,
    series_number: int,
) -> Any:
    """The TID 1500 measurement report in a new Comprehensive 3D SR series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    context = _observation_context(algorithm)
    modality = str(ordered[0].get("Modality", "CT"))
    procedure = getattr(codes.LN, _PROCEDURE_BY_MODALITY.get(modality, "CTUnspecifiedBodyRegion"))
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=procedure, imaging_measurements=groups
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*ordered, *([seg_ds] if seg_ds is not None else [])],
        content=report,
        is_complete=True,
        **algorithm.new_instance("SR", series_number),
    )


def _add_coding_scheme(sr: pydicom.Dataset) -> None:
    """Declare the private 99MEDIMG coding scheme of the class-probability concepts."""
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = "99MEDIMG"
    scheme.CodingSchemeName = "medimg model outputs"
    scheme.CodingSchemeResponsibleOrganization = "medimg"
    sr.CodingSchemeIdentificationSequence = [scheme]


def read_sr_measurements(path: str | os.PathLike[str]) -> list[tuple[str, str, float, str]]:
    """Numeric measurements of an SR: ``(tracking identifier, concept, value, unit)`` per item.

    Example:
        >>> read_sr_measurements("out/sr.dcm")  # doctest: +SKIP
        [('liver volume', 'Volume', 812.5, 'ml')]
    """
    ds = pydicom.dcmread(path)
    found: list[tuple[str, str, float, str]] = []

    def walk(items: Sequence[pydicom.Dataset], group: str) -> None:
        for item in items:
            concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            if concept is not None and item.get("ValueType") == "TEXT" and concept.CodeValue == "112039":
                group = str(item.TextValue)
        for item in items:
            concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            if item.get("ValueType") == "NUM" and concept is not None:
                value = item.MeasuredValueSequence[0]
                unit = str(value.MeasurementUnitsCodeSequence[0].CodeValue)
                found.append((group, str(concept.CodeMeaning), float(value.NumericValue), unit))
            if "ContentSequence" in item:
                walk(item.ContentSequence, group)

    walk(ds.get("ContentSequence", []), "")
    return found
