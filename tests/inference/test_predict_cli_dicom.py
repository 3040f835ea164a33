"""``medimg predict`` on DICOM: NIfTI + DICOM SEG + SR on the series' grid, and a PACS round trip."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _tiny import train_tiny

from medimg.cli.main import main
from medimg.data.synthetic import SyntheticGrid, make_case
from medimg.io.dicom.write import write_series
from medimg.io.load import load_image


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("tiny"))


def _series(folder: Path, index: int) -> Path:
    case = make_case(index, seed=5, grid=SyntheticGrid(shape=(32, 30, 12), spacing=(1.6, 1.7, 2.5)))
    write_series(
        case.image,
        folder,
        rescale=(1.0, -1024.0),
        shuffle_names=True,
        patient_name="Doe^Jane",
        patient_id="PID-123456",
    )
    return folder


def test_predict_dicom_series_writes_nifti_seg_and_sr(tiny_model, tmp_path, dciodvfy):
    series = _series(tmp_path / "series", 0)
    out = tmp_path / "out"
    assert main(["predict", str(tiny_model), str(series), "--out", str(out), "--no-progress"]) == 0
    case_dir = next(p.parent for p in out.rglob("mask.nii.gz"))
    vol = load_image(series).to_space("RAS")
    mask = nib.load(case_dir / "mask.nii.gz")
    assert mask.shape == vol.shape
    np.testing.assert_allclose(mask.affine, vol.affine, atol=1e-4)
    seg, sr = case_dir / "seg.dcm", case_dir / "sr.dcm"
    assert dciodvfy(seg) == [] and dciodvfy(sr) == []
    ds = pydicom.dcmread(seg)
    src_uid = pydicom.dcmread(next(series.iterdir())).SeriesInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src_uid
    text = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".csv"))
    assert b"Doe^Jane" not in text and b"PID-123456" not in text


@pytest.mark.pacs
def test_predict_from_pacs_stores_seg_and_sr_back(tiny_model, tmp_path, orthanc, monkeypatch):
    from medimg.inference.pacs import PacsClient

    for k, v in orthanc.env().items():
        monkeypatch.setenv(k, v)
    series = _series(tmp_path / "pacs_src", 1)
    pacs = PacsClient(orthanc.url)
    pacs.store(sorted(series.iterdir()))
    src = pydicom.dcmread(next(series.iterdir()))
    out = tmp_path / "out"
    argv = [
        "predict",
        str(tiny_model),
        "--pacs",
        orthanc.url,
        "--pacs-study",
        src.StudyInstanceUID,
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    found = {s.modality: s for s in pacs.query_series(src.StudyInstanceUID)}
    assert {"CT", "SEG", "SR"} <= set(found)
    seg_files = pacs.retrieve_series(src.StudyInstanceUID, found["SEG"].series_uid, tmp_path / "back")
    seg = pydicom.dcmread(seg_files[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert main(argv) == 0  # a rerun skips the case and stores nothing twice
    assert sorted(s.modality for s in pacs.query_series(src.StudyInstanceUID)) == ["CT", "SEG", "SR"]
