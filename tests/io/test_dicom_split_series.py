"""Mixed folders: non-DICOM files set aside, echoes split, a slice without position refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_phantoms import phantom

from medimg.errors import DataError
from medimg.io.dicom.assemble import load_series
from medimg.io.dicom.discover import discover
from medimg.io.dicom.write import write_series
from medimg.io.scan import scan
from medimg.io.volume import Volume


def test_non_dicom_files_are_set_aside_without_being_a_problem(tmp_path: Path) -> None:
    files = write_series(phantom("axial", shape=(8, 6, 4)), tmp_path / "t1", modality="MR")
    (tmp_path / "t1" / "README.txt").write_text("exported from the scanner console\n")
    (tmp_path / "t1" / "t1.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    (tmp_path / "t1" / "NOTES").write_text("protocol: t1 mprage, 1 mm\nrésumé of the session\n")
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)), tmp_path / "t1" / "t1.nii.gz")
    series, excluded = discover(tmp_path)
    assert [(s.kind, len(s.headers)) for s in series] == [("volume", 4)]
    kinds = {Path(e.path).name: e.kind for e in excluded}
    assert kinds == {"README.txt": "not_dicom", "t1.json": "not_dicom", "NOTES": "not_dicom",
                     "t1.nii.gz": "not_dicom"}  # fmt: skip
    assert not any(e.is_problem for e in excluded)
    result = scan(tmp_path)
    assert result.problems == 0 and len(result.manifest) == 2  # the DICOM series and the NIfTI file
    # a file with the DICM prefix whose header is broken stays a problem
    raw = files[0].read_bytes()
    (tmp_path / "t1" / "broken.dcm").write_bytes(raw[:132] + b"\xff" * 64)
    # so does a binary file without suffix or named .dcm: it may be DICOM damaged in transfer
    (tmp_path / "t1" / "IM_0005").write_bytes(b"\x00" * 300)
    (tmp_path / "t1" / "IM_0006.dcm").write_bytes(b"\x07\x91 binary" * 40)
    problems = {Path(e.path).name: e.reason for e in discover(tmp_path)[1] if e.is_problem}
    assert sorted(problems) == ["IM_0005", "IM_0006.dcm", "broken.dcm"]
    assert "not a DICOM file" in problems["IM_0005"] and "DICOM header" in problems["broken.dcm"]


def test_slice_without_position_refuses_its_series_by_file_name(tmp_path: Path) -> None:
    files = write_series(phantom("axial", shape=(8, 6, 5)), tmp_path / "a", modality="MR")
    write_series(phantom("sagittal", shape=(8, 6, 4)), tmp_path / "b", modality="MR")
    ds = pydicom.dcmread(files[2])
    del ds.ImagePositionPatient
    ds.save_as(files[2])
    series, _ = discover(tmp_path)
    kinds = sorted((len(s.headers), s.kind) for s in series)
    assert kinds == [(4, "volume"), (5, "unsupported")]
    bad = next(s for s in series if s.kind == "unsupported")
    assert str(files[2]) in bad.reason and "ImagePositionPatient" in bad.reason
    with pytest.raises(DataError, match=files[2].name):
        load_series(files)
    result = scan(tmp_path)
    assert len(result.manifest) == 1 and result.problems == 1


def test_magnitude_and_phase_in_one_series_are_split(tmp_path: Path) -> None:
    vol = phantom("axial", shape=(8, 6, 4))
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for kind, offset in (("M", 1100), ("P", 2000)):
        data = Volume(vol.data.astype(np.int32) + offset, vol.affine, "LPS")
        write_series(data, tmp_path, modality="MR", series_uid=uid, study_uid=study, shuffle_names=True,
                     extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", kind, "ND"]})  # fmt: skip
    series, _ = discover(tmp_path)
    assert [(s.kind, s.first.component, s.flags) for s in series] == [
        ("volume", "", []), ("volume", "PHASE", [])
    ]  # fmt: skip
    means = [float(load_series(s.headers).data.mean() - vol.data.mean()) for s in series]
    assert means == pytest.approx([1100.0, 2000.0])


def test_derived_map_is_a_volume_flagged_derived(tmp_path: Path) -> None:
    write_series(phantom("axial", shape=(8, 6, 3)), tmp_path, modality="MR",
                 extra_tags={"ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]})  # fmt: skip
    series, _ = discover(tmp_path)
    assert [(s.kind, s.flags) for s in series] == [("volume", ["derived"])]


def test_series_key_does_not_depend_on_what_else_the_scan_saw(tmp_path: Path) -> None:
    """One SeriesInstanceUID written twice (an axial and a sagittal copy in two folders): the
    keys the whole-export scan writes load each part from its own folder."""
    from medimg.io.load import load_image

    uid, study = "1.2.826.0.1.3680043.8.498.100", "1.2.826.0.1.3680043.8.498.101"
    write_series(phantom("axial", shape=(8, 6, 5)), tmp_path / "export/a", series_uid=uid, study_uid=study)
    write_series(phantom("sagittal", shape=(7, 6, 4)), tmp_path / "export/b", series_uid=uid, study_uid=study)
    result = scan(tmp_path / "export")
    assert len(result.manifest) == 2
    for row in result.manifest:
        folder = Path(str(row["image"]).split("#", 1)[0])
        alone = scan(folder)  # the folder on its own: the other part of the UID is not seen
        assert [r["series_key"] for r in alone.manifest] == [row["series_key"]]
        vol = load_image(f"{folder}#{row['series_key']}")
        assert "x".join(str(n) for n in vol.shape) == row["dims"]


def test_files_sharing_one_sop_instance_uid_get_distinct_series_keys(tmp_path: Path) -> None:
    """Variants of one image (same SOPInstanceUID and SeriesInstanceUID, another SeriesNumber
    and file name, as in dcm2niix's 12-bit QA export): each is its own series, with its own
    key, and ``folder#key`` loads that variant."""
    from medimg.io.load import load_image

    write_series(phantom("axial", shape=(8, 6, 1)), tmp_path / "src", modality="MR")
    src = pydicom.dcmread(next((tmp_path / "src").iterdir()))
    (tmp_path / "x").mkdir()
    for number, offset in ((2, 0), (3, 5), (4, 9)):
        ds = pydicom.dcmread(next((tmp_path / "src").iterdir()))
        ds.SeriesNumber = number
        ds.PixelData = (src.pixel_array + offset).astype(src.pixel_array.dtype).tobytes()
        ds.save_as(tmp_path / "x" / f"variant{number}.dcm")
    result = scan(tmp_path / "x")
    keys = [r["series_key"] for r in result.manifest]
    assert len(keys) == len(set(keys)) == 3
    means = sorted(float(load_image(f"{tmp_path / 'x'}#{k}").data.mean()) for k in keys)
    assert [m - means[0] for m in means] == pytest.approx([0.0, 5.0, 9.0])
