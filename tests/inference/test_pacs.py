"""PACS round-trip against a real Orthanc over DICOMweb: store, query, retrieve, store SEG + SR back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from phantom_outputs import ALGO, LABELS

from medimg.errors import ConfigError
from medimg.inference.cases import CaseInput, CaseOutputs
from medimg.inference.cohort import run_cohort
from medimg.inference.dicom_seg import read_seg, sort_source_datasets, source_affine_lps
from medimg.inference.dicom_sr import read_sr_measurements
from medimg.inference.pacs import PacsClient, PacsError
from medimg.inference.pacs_cohort import PacsStoreWriter, pacs_cases, retrieving, series_case_id
from medimg.inference.writers import DicomSegWriter, DicomSrWriter
from medimg.io.volume import Volume

pytestmark = pytest.mark.pacs


def load(case: CaseInput) -> dict[str, Any]:
    datasets = sort_source_datasets([pydicom.dcmread(p) for p in sorted(case.paths[0].iterdir())])
    data = np.stack(
        [ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets], -1
    )
    return {"datasets": datasets, "volume": Volume(data, source_affine_lps(datasets), "LPS")}


def predict(case: CaseInput, loaded: dict[str, Any]) -> CaseOutputs:
    vol = loaded["volume"]
    mask = np.where(vol.data > 0, np.rint((vol.data - 60) / 40), 0).astype(np.uint8)
    return CaseOutputs(mask=Volume(mask, vol.affine, "LPS"), labels=LABELS, source=loaded)


@pytest.fixture
def pacs(orthanc: Any, monkeypatch: pytest.MonkeyPatch) -> PacsClient:
    for name, value in orthanc.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MEDIMG_PACS_TOKEN", raising=False)
    return PacsClient(orthanc.url)


def test_store_query_retrieve_and_store_results_back(
    pacs: PacsClient, source_series: Any, tmp_path: Path
) -> None:
    source = source_series.datasets[0]
    stored = pacs.store(source_series.files)
    assert sorted(stored) == sorted(ds.SOPInstanceUID for ds in source_series.datasets)

    found = pacs.query_series(modality="CT")
    ours = [s for s in found if s.series_uid == source.SeriesInstanceUID]
    assert len(ours) == 1 and ours[0].study_uid == source.StudyInstanceUID
    assert ours[0].n_instances == len(source_series.files) and ours[0].modality == "CT"
    assert [s.series_uid for s in pacs.query_series(source.StudyInstanceUID)] == [source.SeriesInstanceUID]

    files = pacs.retrieve_series(source.StudyInstanceUID, source.SeriesInstanceUID, tmp_path / "retrieved")
    retrieved = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in files}
    for ds in source_series.datasets:
        np.testing.assert_array_equal(retrieved[ds.SOPInstanceUID].pixel_array, ds.pixel_array)
        assert retrieved[ds.SOPInstanceUID].ImagePositionPatient == ds.ImagePositionPatient
    assert not list((tmp_path / "retrieved").glob(".*"))

    report = run_cohort(
        [CaseInput("case-0", (tmp_path / "retrieved",))],
        predict,
        tmp_path / "out",
        load_fn=load,
        writers=[DicomSegWriter(ALGO), DicomSrWriter(ALGO)],
        model_key="m",
        settings_key="s",
        progress=False,
    )
    assert report.exit_code == 0
    outputs = [tmp_path / "out" / "cases" / "case-0" / n for n in ("seg.dcm", "sr.dcm")]
    assert len(pacs.store(outputs)) == 2

    by_modality = {s.modality: s for s in pacs.query_series(source.StudyInstanceUID)}
    assert set(by_modality) == {"CT", "SEG", "SR"}
    seg_files = pacs.retrieve_series(source.StudyInstanceUID, by_modality["SEG"].series_uid, tmp_path / "seg")
    seg = pydicom.dcmread(seg_files[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    np.testing.assert_array_equal(read_seg(seg_files[0], source_series.datasets, LABELS), source_series.mask)
    sr_files = pacs.retrieve_series(source.StudyInstanceUID, by_modality["SR"].series_uid, tmp_path / "sr")
    sr = pydicom.dcmread(sr_files[0])
    evidence = {
        s.SeriesInstanceUID
        for st in sr.CurrentRequestedProcedureEvidenceSequence
        for s in st.ReferencedSeriesSequence
    }
    assert evidence == {source.SeriesInstanceUID, seg.SeriesInstanceUID}
    assert {g for g, c, _, _ in read_sr_measurements(sr_files[0]) if c == "Volume"} == {
        "liver volume",
        "tumor volume",
    }


def test_credentials_come_from_the_environment_only(orthanc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDIMG_PACS_TOKEN", raising=False)
    monkeypatch.delenv("MEDIMG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDIMG_PACS_PASSWORD", raising=False)
    with pytest.raises(PacsError, match="HTTP 401.*credentials"):
        PacsClient(orthanc.url).query_series()
    monkeypatch.setenv("MEDIMG_PACS_USER", orthanc.user)
    with pytest.raises(ConfigError, match="MEDIMG_PACS_PASSWORD"):
        PacsClient(orthanc.url)
    monkeypatch.setenv("MEDIMG_PACS_PASSWORD", "wrong")
    with pytest.raises(PacsError, match="HTTP 401"):
        PacsClient(orthanc.url).query_series()
    with pytest.raises(ConfigError, match="credentials in the URL"):
        PacsClient(orthanc.url.replace("http://", f"http://{orthanc.user}:{orthanc.password}@"))


def test_cohort_from_a_pacs_query_stores_results_back_once(
    pacs: PacsClient, series_factory: Any, tmp_path: Path
) -> None:
    series = [series_factory(f"study{i}") for i in range(2)]
    for s in series:
        pacs.store(s.files)
    studies = {s.datasets[0].StudyInstanceUID: s for s in series}
    queried = [info for study in studies for info in pacs.query_series(study, modality="CT")]
    cases = pacs_cases(pacs, queried, tmp_path / "cache")
    assert sorted(c.case_id for c in cases) == sorted(
        series_case_id(s.datasets[0].SeriesInstanceUID) for s in series
    )
    writers = [DicomSegWriter(ALGO), DicomSrWriter(ALGO), PacsStoreWriter(pacs)]

    def run() -> Any:
        return run_cohort(
            cases,
            predict,
            tmp_path / "out",
            load_fn=retrieving(pacs, load),
            writers=writers,
            model_key="m",
            settings_key="s",
            progress=False,
        )

    assert run().done == 2
    for study, s in studies.items():
        by_modality = {}
        for info in pacs.query_series(study):
            by_modality.setdefault(info.modality, []).append(info)
        assert sorted(by_modality) == ["CT", "SEG", "SR"] and len(by_modality["SEG"]) == 1
        files = pacs.retrieve_series(study, by_modality["SEG"][0].series_uid, tmp_path / "check" / study)
        seg = pydicom.dcmread(files[0])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == s.datasets[0].SeriesInstanceUID
        np.testing.assert_array_equal(read_seg(files[0], s.datasets, LABELS), s.mask)
    # A rerun finds every case done (stored): nothing is retrieved, computed or stored again.
    rerun = run()
    assert rerun.skipped == 2 and rerun.exit_code == 0
    for study in studies:
        assert sorted(i.modality for i in pacs.query_series(study)) == ["CT", "SEG", "SR"]
