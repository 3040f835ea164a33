"""``medimg convert ROOT OUT`` on a mixed export: every usable series converted, the rest listed, no PHI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from dicom_phantoms import phantom

from medimg.cli.main import main
from medimg.errors import ConfigError
from medimg.io.convert_tree import convert_tree, sidecar_meta
from medimg.io.dicom.write import write_series
from medimg.io.series_label import series_label
from medimg.io.volume import Volume

PHI = ["Doe", "Jane", "PAT-A-123", "Roe", "Richard", "PAT-B-456", "2024-01-05", "20240105", "ACC778899"]


def build_export(root: Path) -> dict[str, object]:
    """Two patients: a CT and a localizer, an MR and a series missing a slice; a README. Returns the truth."""
    ct = phantom("axial", shape=(20, 16, 10), spacing=(0.7, 0.9, 2.5), oblique=(0.0, 12.0, 5.0))
    mr = phantom("sagittal", shape=(18, 14, 8), spacing=(1.1, 1.0, 1.5), seed=1)
    a = {
        "patient_name": "Doe^Jane",
        "patient_id": "PAT-A-123",
        "extra_tags": {"AccessionNumber": "ACC778899"},
    }
    b = {"patient_name": "Roe^Richard", "patient_id": "PAT-B-456"}
    write_series(ct, root / "p1" / "s1", rescale=(1.0, -1024.0), series_number=3,
                 series_description="CT CHEST Doe Jane 2024-01-05", **a)  # fmt: skip
    loc = phantom("axial", shape=(16, 12, 1), seed=2)
    write_series(loc, root / "p1" / "s2", series_number=1, series_description="Scout",
                 patient_name="Doe^Jane", patient_id="PAT-A-123",
                 extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})  # fmt: skip
    write_series(mr, root / "p2" / "s1", modality="MR", series_number=5,
                 series_description="SAG T1 Richard PAT-B-456", **b)  # fmt: skip
    gap = write_series(phantom("axial", shape=(12, 12, 6), seed=3), root / "p2" / "s2", series_number=7, **b)
    gap[3].unlink()  # a slice lost in transfer: the series is broken
    (root / "README.txt").write_text("Exported by the PACS on 2024-01-05 for Jane Doe\n")
    return {"ct": ct, "mr": mr}


def _written(out: Path) -> list[Path]:
    return sorted(out.rglob("*.nii.gz"))


def test_tree_converts_every_usable_series_with_its_geometry(tmp_path: Path) -> None:
    truth = build_export(tmp_path / "export")
    result = convert_tree(tmp_path / "export", tmp_path / "out")
    files = _written(tmp_path / "out")
    assert len(files) == 2 == len(result.written) and result.problems >= 1
    by_name = {("ct" if "_ct-chest_" in f.name else "mr"): f for f in files}
    assert set(by_name) == {"ct", "mr"}, [f.name for f in files]
    assert by_name["ct"].name.startswith("0003_ct-chest_series-")
    assert by_name["mr"].name.startswith("0005_sag-t1_series-")
    for kind, path in by_name.items():
        img = nib.load(path)
        vol = truth[kind]
        assert img.shape == vol.shape
        np.testing.assert_allclose(img.affine, vol.affine_in("RAS"), atol=1e-4)
        np.testing.assert_array_equal(np.asarray(img.dataobj), vol.data)  # int16, voxel order kept
        side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert side["shape"] == list(vol.shape) and side["series_key"] in path.name
        np.testing.assert_allclose(side["affine_ras"], vol.affine_in("RAS"), atol=1e-4)
    assert by_name["ct"].parent.parent.name != by_name["mr"].parent.parent.name  # two patient keys
    assert not list((tmp_path / "out").rglob("*.part*"))  # nothing half-written


def test_tree_lists_what_it_set_aside_and_leaks_no_phi(tmp_path: Path) -> None:
    build_export(tmp_path / "export")
    convert_tree(tmp_path / "export", tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    excluded = pd.read_csv(tmp_path / "out" / "excluded.csv")
    # paths relative to the manifest's folder, as medimg scan writes them
    assert len(manifest) == 2 and all((tmp_path / "out" / p).is_file() for p in manifest["image"])
    assert set(manifest["dims"]) == {"20x16x10", "18x14x8"}
    rows = zip(excluded["path"], excluded["kind"], excluded["reason"], strict=True)
    reasons = {"/".join(Path(p).parts[-2:]): (k, r) for p, k, r in rows}
    assert reasons["p1/s2"][0] == "localizer" and "LOCALIZER" in reasons["p1/s2"][1]
    assert reasons["p2/s2"][0] == "unsupported" and "1 missing slice" in reasons["p2/s2"][1]
    assert "DICOM" in reasons["export/README.txt"][1]
    texts = [f.read_text() for f in (tmp_path / "out").rglob("*") if f.suffix in (".json", ".csv")]
    names = [str(f.relative_to(tmp_path / "out")) for f in (tmp_path / "out").rglob("*")]
    for word in PHI:
        assert not any(word.lower() in t.lower() for t in texts + names), word


def test_cli_exit_code_follows_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_export(tmp_path / "export")
    assert main(["convert", str(tmp_path / "export"), str(tmp_path / "out"), "-j", "1"]) == 1
    captured = capsys.readouterr()
    assert "2 series converted" in captured.out and "could not be used" in captured.err
    clean = tmp_path / "clean"
    write_series(phantom("axial", shape=(8, 8, 4)), clean / "ct")
    write_series(phantom("axial", shape=(8, 8, 1)), clean / "loc", extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})  # fmt: skip
    assert (
        main(["convert", str(clean), str(tmp_path / "out2"), "-j", "1"]) == 0
    )  # a localizer set aside is no fault
    assert len(_written(tmp_path / "out2")) == 1


def test_a_series_that_fails_to_decode_does_not_stop_the_others(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    write_series(phantom("axial", shape=(16, 12, 4)), tmp_path / "export" / "ct")
    files = write_series(phantom("axial", shape=(16, 12, 4), seed=5), tmp_path / "export" / "rle",
                         transfer_syntax=RLELossless)  # fmt: skip
    raw = bytearray(files[2].read_bytes())
    raw[-60:-20] = b"\xff" * 40  # corrupt RLE segment: the header reads fine, decoding fails
    files[2].write_bytes(bytes(raw))
    result = convert_tree(tmp_path / "export", tmp_path / "out")
    assert len(result.written) == 1 and result.problems == 1
    (bad,) = [e for e in result.scan.excluded if e.path.endswith("rle")]
    assert bad.kind == "unsupported" and bad.reason and bad.series_key
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert (
        len(manifest) == 1
        and (tmp_path / "out" / manifest["image"][0]).resolve() == result.written[0].resolve()
    )


def test_sidecar_drops_paths_free_text_and_identity() -> None:
    meta = {"source": "/data/Doe_Jane/ct", "SeriesDescription": "Doe", "ProtocolName": "x", "PatientAge": "045Y",
            "InstitutionName": "St Elsewhere", "AcquisitionTime": "101500", "StudyDate": "20240105",
            "RepetitionTime": 2.3, "modality": "MR", "patient_key": "patient-1"}  # fmt: skip
    side = sidecar_meta(Volume(np.zeros((2, 3, 4)), np.eye(4), "LPS", meta))
    assert set(side) == {"RepetitionTime", "modality", "patient_key", "shape", "spacing", "affine_ras"}
    assert side["affine_ras"][0][0] == -1.0  # the LPS affine is written in RAS


def test_output_inside_the_tree_is_refused(tmp_path: Path) -> None:
    write_series(phantom("axial", shape=(8, 8, 4)), tmp_path / "export" / "ct")
    with pytest.raises(ConfigError, match="must not lie inside"):
        convert_tree(tmp_path / "export", tmp_path / "export" / "nifti")


def test_series_label_keeps_only_acquisition_words() -> None:
    assert series_label("CT CHEST Doe Jane 2024-01-05", ["Doe^Jane", "PAT-A-123"]) == "ct-chest"
    assert series_label("SAG T1 Richard PAT-B-456", ["Roe^Richard", "PAT-B-456"]) == "sag-t1"
    assert (
        series_label("ep2d_diff_mddw_20_p2") == "ep2d-diff-p2"
    )  # 'mddw', '20' are neither vocabulary nor technical
    assert (
        series_label("fmri_SagAP DoeJane", ["Doe^Jane"]) == "fmri-sag-ap"
    )  # camelCase split, then the name dropped
    assert series_label("JD3 Head", ["Doe^John"]) == "head"  # the patient's initials are dropped
    assert series_label("Brain 1234567 MRN") == "brain"  # long numbers never pass
    assert series_label("") == ""
