"""MONAI LoadImaged with MedimgImageReader: DICOM folders usable directly, RAS affines like MONAI's readers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from dicom_phantoms import phantom
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

from medimg.io.dicom.write import write_series
from medimg.io.nifti import save_nifti
from medimg.io.reader import MedimgImageReader

torch.set_num_threads(1)


def test_dicom_folder_and_nifti_load_identically_through_monai(tmp_path: Path) -> None:
    vol = phantom("sagittal", shape=(20, 16, 12), oblique=(8.0, 0.0, -5.0))
    write_series(vol, tmp_path / "dicom", shuffle_names=True, rescale=(1.0, -1024.0))
    save_nifti(vol, tmp_path / "ref.nii.gz")
    pipeline = Compose(
        [
            LoadImaged(keys=["a", "b"], reader=MedimgImageReader()),
            EnsureChannelFirstd(keys=["a", "b"]),
            Orientationd(keys=["a", "b"], axcodes="RAS"),
        ]
    )
    out = pipeline({"a": str(tmp_path / "dicom"), "b": str(tmp_path / "ref.nii.gz")})
    assert out["a"].shape == (1, 12, 20, 16)  # sagittal slices reoriented to RAS
    torch.testing.assert_close(out["a"].as_tensor(), out["b"].as_tensor())
    torch.testing.assert_close(out["a"].affine, out["b"].affine, atol=1e-4, rtol=0)
    # and against MONAI's own NIfTI reader (nibabel)
    ref = LoadImaged(keys="b", reader="NibabelReader")({"b": str(tmp_path / "ref.nii.gz")})["b"]
    raw = LoadImaged(keys="a", reader=MedimgImageReader())({"a": str(tmp_path / "dicom")})["a"]
    np.testing.assert_allclose(raw.affine.numpy(), ref.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(raw.numpy(), ref.numpy())
    np.testing.assert_allclose(raw.affine.numpy(), nib.load(tmp_path / "ref.nii.gz").affine, atol=1e-4)


def test_monai_pydicom_reader_agrees_on_dicom_series(tmp_path: Path) -> None:
    vol = phantom("coronal", shape=(18, 14, 10))
    write_series(vol, tmp_path / "dicom", shuffle_names=True)
    ours = LoadImaged(keys="x", reader=MedimgImageReader())({"x": str(tmp_path / "dicom")})["x"]
    ref = LoadImaged(keys="x", reader="PydicomReader")({"x": str(tmp_path / "dicom")})["x"]
    np.testing.assert_allclose(ours.affine.numpy(), ref.affine.numpy(), atol=1e-3)
    np.testing.assert_array_equal(ours.numpy(), ref.numpy().astype(np.float32))


def test_verify_suffix() -> None:
    reader = MedimgImageReader()
    assert reader.verify_suffix("a/b.nii.gz") and reader.verify_suffix(".")
    assert not reader.verify_suffix("a/b.png")


def test_manifest_rows_load_directly_even_when_a_folder_holds_two_series(tmp_path: Path) -> None:
    import pandas as pd

    from medimg.cli.main import main
    from medimg.io.load import is_dicom_dir

    study = tmp_path / "study"
    first, second = phantom("axial", shape=(10, 8, 4)), phantom("axial", shape=(10, 8, 4), seed=3)
    write_series(first, study, shuffle_names=True)
    write_series(second, study, shuffle_names=True, series_number=2)
    assert is_dicom_dir(study) and not is_dicom_dir(tmp_path / "nothing")
    assert (
        main(
            ["scan", str(study), "--out", str(tmp_path), "--manifest", "m.parquet", "--excluded", "x.parquet"]
        )
        == 0
    )
    manifest = pd.read_parquet(tmp_path / "m.parquet")
    load = LoadImaged(keys="image", reader=MedimgImageReader())
    arrays = [load({"image": image})["image"].numpy() for image in manifest["image"]]
    assert sorted(a.sum() for a in arrays) == sorted(float(v.data.sum()) for v in (first, second))
