"""Planted PHI never reaches the manifest, the logs, the sidecar or the de-identified output."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_phantoms import phantom

import medimg.cli.deid as deid_cli
from medimg.cli.main import main
from medimg.io.dicom.assemble import load_series
from medimg.io.dicom.deid import deidentify_dataset
from medimg.io.dicom.write import write_series
from medimg.io.load import load_image

PHI = {
    "PatientName": "Smithers^Waylon^Quincy",
    "PatientID": "MRN-99887766",
    "PatientBirthDate": "19610413",
    "AccessionNumber": "ACC5544332",
    "InstitutionName": "St Elsewhere General Hospital",
}
EXTRA = {
    "PatientBirthDate": PHI["PatientBirthDate"],
    "AccessionNumber": PHI["AccessionNumber"],
    "InstitutionName": PHI["InstitutionName"],
    "ReferringPhysicianName": "Feelgood^Doctor",
    "OtherPatientIDs": "OTHER-123456",
    "StudyDescription": "CT chest Smithers follow-up",
}
NEEDLES = [*PHI.values(), "Smithers", "99887766", "Feelgood", "OTHER-123456", "Elsewhere"]


def _write_phi_study(root: Path) -> Path:
    folder = root / "Export"
    study = "1.2.826.0.1.3680043.8.498.77"
    write_series(
        phantom("axial", shape=(14, 10, 6)), folder / "s1", study_uid=study, patient_name=PHI["PatientName"],
        patient_id=PHI["PatientID"], extra_tags=EXTRA, rescale=(1.0, -1024.0),
    )  # fmt: skip
    write_series(
        phantom("sagittal", shape=(10, 8, 5), seed=2), folder / "s2", study_uid=study,
        patient_name=PHI["PatientName"], patient_id=PHI["PatientID"], extra_tags=EXTRA, series_number=2,
    )  # fmt: skip
    ds = pydicom.dcmread(next((folder / "s1").iterdir()))
    ds.add_new((0x0011, 0x0010), "LO", "ACME private")
    ds.add_new((0x0011, 0x1001), "LO", PHI["PatientName"])
    ds.save_as(next((folder / "s1").iterdir()))
    return folder


def _assert_clean(text: str, where: str) -> None:
    for needle in NEEDLES:
        assert needle.lower() not in text.lower(), f"{needle!r} leaked into {where}"


def test_scan_manifest_and_logs_carry_no_phi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    folder = _write_phi_study(tmp_path)
    caplog.set_level(logging.DEBUG)
    assert main(["-v", "scan", str(folder), "--out", str(tmp_path / "qa"), "-j", "1"]) == 0
    assert main(["-v", "convert", str(folder / "s1"), str(tmp_path / "s1.nii.gz"), "--sidecar"]) == 0
    out = capsys.readouterr()
    for f in ("qa/manifest.csv", "qa/excluded.csv", "s1.json"):
        _assert_clean((tmp_path / f).read_text(), f)
    _assert_clean(caplog.text + out.out + out.err, "logs")
    manifest = (tmp_path / "qa/manifest.csv").read_text()
    assert (
        manifest.count("patient-") == 2 and len({ln.split(",")[1] for ln in manifest.splitlines()[1:]}) == 1
    )


def test_deid_folder_removes_phi_and_keeps_geometry(tmp_path: Path, capsys) -> None:
    folder = _write_phi_study(tmp_path)
    out = tmp_path / "deid"
    parser = argparse.ArgumentParser()
    args = deid_cli.register(parser.add_subparsers()).parse_args([str(folder), str(out)])
    assert deid_cli.execute(args) == 0
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 11
    for f in files:
        _assert_clean(f.read_bytes().decode("latin-1"), str(f))
        assert "Export" not in str(f.relative_to(out))
    datasets = [pydicom.dcmread(f) for f in files]
    assert {ds.PatientIdentityRemoved for ds in datasets} == {"YES"}
    assert all(ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100" for ds in datasets)
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1  # consistent remapping across the study
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    assert datasets[0].StudyInstanceUID != "1.2.826.0.1.3680043.8.498.77"
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in datasets)
    assert all(ds.StudyDate == "" and (0x0011, 0x1001) not in ds for ds in datasets)
    # the pixels and the geometry survive de-identification
    original = load_image(folder / "s1")
    s1 = [f for f, ds in zip(files, datasets, strict=True) if ds.Rows == 10]
    cleaned = load_series(s1)
    np.testing.assert_array_equal(cleaned.data, original.data)
    np.testing.assert_allclose(cleaned.affine, original.affine, atol=1e-6)


def test_deid_options_retain_uids_and_shift_dates(tmp_path: Path) -> None:
    folder = _write_phi_study(tmp_path)
    ds = pydicom.dcmread(next((folder / "s1").iterdir()))
    uid = ds.StudyInstanceUID
    kept = deidentify_dataset(copy.deepcopy(ds), retain_uids=True, dates="keep")
    assert kept.StudyInstanceUID == uid and kept.StudyDate == "20200101"
    assert [c.CodeValue for c in kept.DeidentificationMethodCodeSequence] == ["113100", "113110", "113106"]
    shifted = deidentify_dataset(copy.deepcopy(ds), dates="shift")
    assert shifted.StudyDate != "20200101" and len(shifted.StudyDate) == 8
    assert shifted.LongitudinalTemporalInformationModified == "MODIFIED"
    again = deidentify_dataset(pydicom.dcmread(next((folder / "s1").iterdir())), dates="shift")
    assert again.StudyDate == shifted.StudyDate and again.StudyInstanceUID == shifted.StudyInstanceUID


def test_deid_refuses_burned_in_annotation(tmp_path: Path) -> None:
    folder = tmp_path / "us"
    write_series(phantom("axial", shape=(8, 8, 2)), folder, extra_tags={"BurnedInAnnotation": "YES"})
    args = deid_cli.register(argparse.ArgumentParser().add_subparsers()).parse_args(
        [str(folder), str(tmp_path / "o")]
    )
    assert deid_cli.execute(args) == 1
    assert not list((tmp_path / "o").rglob("*.dcm")) if (tmp_path / "o").exists() else True


def test_mlflow_run_using_the_data_carries_no_phi(tmp_path: Path) -> None:
    import mlflow

    folder = _write_phi_study(tmp_path)
    assert main(["scan", str(folder), "--out", str(tmp_path / "qa"), "-j", "1"]) == 0
    vol = load_image(folder / "s1")
    store = tmp_path / "mlruns"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("phi-check", artifact_location=store.as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_params({k: str(v) for k, v in vol.meta.items() if k != "source"})
        mlflow.set_tags({"patient_key": vol.meta["patient_key"], "series_key": vol.meta["series_key"]})
        mlflow.log_artifact(str(tmp_path / "qa" / "manifest.csv"))
    mlflow.set_tracking_uri(None)
    dumped = (tmp_path / "mlflow.db").read_bytes().decode("latin-1")
    dumped += "".join(p.read_text() for p in store.rglob("*") if p.is_file())
    assert "patient-" in dumped and vol.meta["series_key"] in dumped
    _assert_clean(dumped, "the MLflow store")
