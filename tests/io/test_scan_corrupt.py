"""A corrupted corpus: one clear line per bad file, the rest scanned, a non-zero exit code."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from dicom_phantoms import phantom

from medimg.cli.main import main
from medimg.errors import EXIT_INPUT_ERROR
from medimg.io.dicom.write import write_series
from medimg.io.volume import Volume


def build_corpus(root: Path) -> dict[str, str]:
    """Write good data and bad files; return bad file name -> words its reason must contain."""
    write_series(phantom("axial", shape=(16, 12, 8)), root / "good_ct", rescale=(1.0, -1024.0))
    good_nii = root / "nifti" / "good.nii.gz"
    good_nii.parent.mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([1.0, 2.0, 3.0, 1.0])),
        good_nii,
    )
    bad = root / "bad"
    bad.mkdir()
    expected: dict[str, str] = {}

    one = Volume(phantom("axial", shape=(16, 12, 1)).data, np.eye(4), "LPS")
    (src,) = write_series(one, root / "tmp_single", file_prefix="x")
    raw = src.read_bytes()
    (bad / "truncated_pixels.dcm").write_bytes(raw[: len(raw) - 100])
    expected["truncated_pixels.dcm"] = "truncated pixel data"
    (bad / "truncated_header.dcm").write_bytes(raw[:300])
    expected["truncated_header.dcm"] = "header"
    src.unlink()
    (root / "tmp_single").rmdir()

    flat = write_series(one, root / "flat")[0]
    ds = pydicom.dcmread(flat)
    ds.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]
    ds.save_as(flat)
    expected["flat"] = "parallel row and column directions"

    (bad / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    expected["random.dcm"] = "not a DICOM file"
    (bad / "empty.dcm").write_bytes(b"")
    expected["empty.dcm"] = "empty file"

    ds = pydicom.dcmread(root / "good_ct" / "IM0000.dcm")
    del ds.PixelData
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(bad / "header_only.dcm")
    expected["header_only.dcm"] = "no pixel data"

    for name in ("..%2F..%2Fetc%2Fpasswd.dcm", "..\\..\\evil.dcm", "new\nline.dcm"):
        (bad / name).write_bytes(b"\x00" * 200)
        expected[name.replace("\n", "\\x0a")] = "not a DICOM file"

    nii = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    nib.save(nii, bad / "cut.nii")
    data = (bad / "cut.nii").read_bytes()
    (bad / "cut.nii").write_bytes(data[:-500])
    expected["cut.nii"] = "truncated"
    nib.save(nii, bad / "cut.nii.gz")
    gz = (bad / "cut.nii.gz").read_bytes()
    (bad / "cut.nii.gz").write_bytes(gz[: len(gz) // 2])
    expected["cut.nii.gz"] = "truncated"
    nan = np.ones((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), bad / "nan.nii.gz")
    expected["nan.nii.gz"] = "NaN"
    return expected


def test_corrupt_corpus_lists_every_bad_file_and_scans_the_rest(tmp_path: Path, capsys) -> None:
    root = tmp_path / "incoming"
    expected = build_corpus(root)
    out = tmp_path / "qa"
    code = main(["scan", str(root), "--out", str(out), "-j", "1"])
    assert code == 1
    assert "could not be used" in capsys.readouterr().err

    manifest = pd.read_csv(out / "manifest.csv")
    assert sorted(Path(p).name for p in manifest["image"]) == ["good.nii.gz", "good_ct"]
    ct = manifest[manifest["image"].str.endswith("good_ct")].iloc[0]
    assert ct["dims"] == "16x12x8" and ct["spacing"] == "0.7x0.9x2.5" and ct["modality"] == "CT"

    excluded = pd.read_csv(out / "excluded.csv", keep_default_na=False)
    names = [os.path.basename(p) for p in excluded["path"]]
    assert sorted(names) == sorted(expected), excluded.to_string()
    for name, reason in zip(names, excluded["reason"], strict=True):
        assert expected[name].lower() in reason.lower(), (name, reason)
        assert "\n" not in reason
    lines = (out / "excluded.csv").read_text().splitlines()
    assert len(lines) == 1 + len(expected)  # one line per bad file (names escaped)


def test_scan_missing_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["scan", str(tmp_path / "nope")]) == EXIT_INPUT_ERROR
    assert "nope: folder not found" in capsys.readouterr().err
