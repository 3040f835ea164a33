"""DICOM SR (TID 1500): valid per dciodvfy, volumes reference their SEG segments, model identified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from phantom_outputs import ALGO, LABELS

from medimg.errors import DataError
from medimg.inference.cases import CaseInput, CaseOutputs, label_volumes_ml
from medimg.inference.cohort import run_cohort
from medimg.inference.dicom_seg import (
    mask_on_source_grid,
    read_seg,
    sort_source_datasets,
    write_seg,
)
from medimg.inference.dicom_sr import read_sr_measurements, write_sr
from medimg.inference.writers import DicomSegWriter, DicomSrWriter, NiftiMaskWriter
from medimg.io.dicom.write import write_series
from medimg.io.load import load_image
from medimg.io.nifti import load_nifti
from medimg.io.volume import Volume


def _walk(items: Any) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        out.extend(_walk(item.get("ContentSequence", [])))
    return out


def test_sr_reports_volumes_referencing_the_seg(source_series: Any, dciodvfy: Any, tmp_path: Path) -> None:
    mask = Volume(source_series.mask, source_series.volume.affine, "LPS")
    seg_path = write_seg(mask, source_series.datasets, LABELS, tmp_path / "seg.dcm", ALGO)
    by_name = label_volumes_ml(mask, LABELS)
    voxel_ml = 0.8 * 1.1 * 2.5 / 1000
    assert by_name["liver"] == pytest.approx(6 * 3 * 3 * voxel_ml, rel=1e-3)
    volumes = {1: by_name["liver"], 3: by_name["tumor"]}
    sr_path = write_sr(
        volumes,
        source_series.datasets,
        LABELS,
        tmp_path / "sr.dcm",
        ALGO,
        seg=seg_path,
        probabilities={"malignant": 0.75},
    )

    assert dciodvfy(sr_path) == []
    measured = {(g, c): (v, u) for g, c, v, u in read_sr_measurements(sr_path)}
    assert measured[("liver volume", "Volume")] == (pytest.approx(volumes[1]), "ml")
    assert measured[("tumor volume", "Volume")] == (pytest.approx(volumes[3]), "ml")
    assert measured[("class probabilities", "Probability of malignant")] == (0.75, "1")

    sr, seg = pydicom.dcmread(sr_path), pydicom.dcmread(seg_path)
    source = source_series.datasets[0]
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.Modality == "SR"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    items = _walk(sr.ContentSequence)
    references = [i for i in items if i.get("ValueType") == "IMAGE" and "ReferencedSOPSequence" in i]
    segments = {
        int(r.ReferencedSOPSequence[0].ReferencedSegmentNumber)
        for r in references
        if r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    }
    assert segments == {1, 2}
    evidence = {
        s.SeriesInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
    }
    assert evidence == {source.SeriesInstanceUID, seg.SeriesInstanceUID}
    texts = [str(i.get("TextValue", "")) for i in items] + [str(i.get("UID", "")) for i in items]
    assert "phantom-unet" in texts and "2.1.0" in texts
    assert any("5e" * 32 in t for t in texts)


def test_sr_without_seg_and_with_probabilities_only_is_valid(
    source_series: Any, dciodvfy: Any, tmp_path: Path
) -> None:
    plain = write_sr({1: 3.25}, source_series.datasets, LABELS, tmp_path / "plain.dcm", ALGO)
    assert dciodvfy(plain) == []
    assert read_sr_measurements(plain) == [("liver volume", "Volume", 3.25, "ml")]
    probs = write_sr(
        None, source_series.datasets, LABELS, tmp_path / "p.dcm", ALGO, probabilities={"a": 0.1, "b": 0.9}
    )
    assert dciodvfy(probs) == []
    assert [(c, v) for _, c, v, _ in read_sr_measurements(probs)] == [
        ("Probability of a", 0.1),
        ("Probability of b", 0.9),
    ]
    assert pydicom.dcmread(probs).CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99MEDIMG"


def test_sr_without_anything_to_report_is_refused(source_series: Any, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing to report"):
        write_sr({}, source_series.datasets, LABELS, tmp_path / "sr.dcm", ALGO)


def test_cohort_writes_nifti_seg_and_sr_that_agree(
    series_factory: Any, dciodvfy: Any, tmp_path: Path
) -> None:
    series = [series_factory(f"series{i}") for i in range(2)]
    # The second folder also holds a localizer; the writers must pick the volume series.
    localizer = Volume(np.zeros((16, 12, 1), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]), "LPS")
    write_series(
        localizer,
        series[1].folder,
        file_prefix="LOC",
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    cases = [CaseInput(f"case-{i}", (s.folder,)) for i, s in enumerate(series)]

    def load(case: CaseInput) -> Volume:
        return load_image(case.paths[0])

    def predict(case: CaseInput, vol: Volume) -> CaseOutputs:
        mask = np.where(vol.data > 0, np.rint((vol.data - 60) / 40), 0).astype(np.uint8)
        # Case 0 hands its source headers to the writers; case 1 lets them find the series.
        source = {"datasets": series[0].datasets} if case.case_id == "case-0" else None
        return CaseOutputs(mask=Volume(mask, vol.affine, vol.space), labels=LABELS, source=source)

    writers = [NiftiMaskWriter(), DicomSegWriter(ALGO), DicomSrWriter(ALGO)]
    report = run_cohort(
        cases,
        predict,
        tmp_path / "out",
        load_fn=load,
        writers=writers,
        model_key=ALGO.weights_sha256,
        settings_key="default",
        progress=False,
    )
    assert report.exit_code == 0 and report.done == 2
    for case, s in zip(cases, series, strict=True):
        folder = tmp_path / "out" / "cases" / case.case_id
        assert dciodvfy(folder / "seg.dcm") == [] and dciodvfy(folder / "sr.dcm") == []
        ordered = sort_source_datasets(s.datasets)
        nifti = mask_on_source_grid(load_nifti(folder / "mask.nii.gz"), ordered)
        np.testing.assert_array_equal(nifti, s.mask)
        np.testing.assert_array_equal(read_seg(folder / "seg.dcm", s.datasets, LABELS), nifti)
        volumes = {g: v for g, c, v, _ in read_sr_measurements(folder / "sr.dcm") if c == "Volume"}
        row = next(r for r in report.rows if r["case_id"] == case.case_id)
        assert volumes == {
            "liver volume": pytest.approx(row["volumes_ml"]["liver"]),
            "tumor volume": pytest.approx(row["volumes_ml"]["tumor"]),
        }
