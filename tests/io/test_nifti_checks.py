"""Strict NIfTI loading: truncation, empty axes, NaN/inf, label grids; fast path equals nibabel."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medimg.errors import DataError, GeometryError
from medimg.io.load import check_label_grid, load_image
from medimg.io.volume import Volume


def _oblique_affine() -> np.ndarray:
    aff = np.array([[0.0, -0.9, 0.2, 10.0], [0.8, 0.0, 0.1, -20.0], [0.05, 0.1, 2.5, 5.0], [0, 0, 0, 1]])
    return aff


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_fast_reader_equals_nibabel(tmp_path: Path, suffix: str, dtype: type) -> None:
    data = (np.random.default_rng(1).random((9, 7, 5)) * 100).astype(dtype)
    img = nib.Nifti1Image(data, _oblique_affine())
    if dtype is np.int16:
        img.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / f"x{suffix}"
    nib.save(img, path)
    ref = nib.load(path)
    vol = load_image(path)
    assert vol.space == "RAS" and vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.data, ref.get_fdata(), rtol=1e-6)
    np.testing.assert_array_equal(vol.affine, ref.affine)


def test_nifti2_and_4d(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    nib.save(nib.Nifti2Image(data, _oblique_affine()), tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(load_image(tmp_path / "x.nii.gz").data, data)


def test_truncated_nifti_is_an_error_where_simpleitk_zero_fills(tmp_path: Path) -> None:
    import SimpleITK as sitk

    data = np.full((10, 10, 10), 7, np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "x.nii")
    raw = (tmp_path / "x.nii").read_bytes()
    (tmp_path / "x.nii").write_bytes(raw[:-600])
    with pytest.raises(DataError, match=r"x\.nii: truncated: 1400 of 2000 voxel bytes"):
        load_image(tmp_path / "x.nii")
    try:  # the failure mode this check exists for
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "x.nii")))
        assert (arr == 0).sum() > 0
    except RuntimeError:
        pass


def test_nan_and_empty_axis_are_named(tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "inf.nii.gz")
    with pytest.raises(DataError, match="inf.nii.gz: 1 NaN/inf voxel"):
        load_image(tmp_path / "inf.nii.gz")
    assert load_image(tmp_path / "inf.nii.gz", allow_nonfinite=True).data[0, 0, 0] == np.inf
    nib.save(nib.Nifti1Image(np.ones((4, 0, 4), np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    with pytest.raises(DataError, match="empty.nii.gz: zero-sized axis"):
        load_image(tmp_path / "empty.nii.gz")
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "missing.nii.gz")


def test_label_grid_must_match_image() -> None:
    image = Volume(np.zeros((4, 5, 6)), _oblique_affine())
    check_label_grid(image, Volume(np.zeros((4, 5, 6)), _oblique_affine()))
    with pytest.raises(GeometryError, match="mask.nii.gz has shape"):
        check_label_grid(image, Volume(np.zeros((4, 5, 7)), _oblique_affine()), "ct.nii.gz", "mask.nii.gz")
    shifted = _oblique_affine()
    shifted[0, 3] += 0.5
    with pytest.raises(
        GeometryError, match="mask.nii.gz affine differs from image ct.nii.gz by up to 0.5 mm"
    ):
        check_label_grid(image, Volume(np.zeros((4, 5, 6)), shifted), "ct.nii.gz", "mask.nii.gz")
