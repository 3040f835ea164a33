"""Siemens mosaics: slices tiled in one image, placed with the CSA header; several time points make 4D."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_phantoms import csa_blob, phantom, write_mosaic, write_uih_mosaic

from medimg.io.dicom.assemble import load_series
from medimg.io.dicom.csa import read_csa
from medimg.io.dicom.discover import discover
from medimg.io.dicom.headers import read_header
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

TIMES = [0.0, 1000.0, 200.0, 1200.0, 400.0, 1400.0, 600.0, 1600.0, 800.0, 1800.0]  # interleaved, ms


def _reversed(vol: Volume) -> Volume:
    """The same voxels in space with the slice axis reversed (what sorting along +normal gives)."""
    aff = vol.affine.copy()
    aff[:3, 3] += (vol.shape[2] - 1) * aff[:3, 2]
    aff[:3, 2] *= -1
    return Volume(vol.data[:, :, ::-1].copy(), aff, "LPS")


def _epi(oblique: tuple[float, float, float] = (12.0, -7.0, 5.0)) -> Volume:
    """An oblique, anisotropic EPI-like phantom of 10 slices whose slice step points against row x column."""
    vol = phantom("axial", shape=(12, 9, 10), spacing=(3.0, 3.5, 4.0), oblique=oblique)
    vol.affine[:3, 2] *= -1  # slices run along -normal, as in Siemens head-first exports
    vol.data = (vol.data.astype(np.int32) + 1100).astype(np.uint16)
    return vol


def test_csa_blob_reads_back_through_nibabel(tmp_path: Path) -> None:
    vol = _epi()
    path = write_mosaic([vol.data], vol.affine, tmp_path, TIMES)[0]
    info = read_csa(pydicom.dcmread(path))
    assert info is not None and info.n_mosaic == 10 and info.phase_positive == 1
    assert info.slice_times_ms == tuple(TIMES)
    np.testing.assert_allclose(info.slice_normal, vol.affine[:3, 2] / 4.0, atol=1e-7)


def test_mosaic_is_cut_into_slices_with_true_positions(tmp_path: Path) -> None:
    vol = _epi()
    files = write_mosaic([vol.data], vol.affine, tmp_path, TIMES)
    h = read_header(files[0])
    assert (h.mosaic, h.tile_rows, h.tile_columns, h.rows, h.columns) == (10, 9, 12, 36, 48)
    np.testing.assert_allclose(h.position, vol.affine[:3, 3], atol=1e-6)  # not the mosaic's corner
    out = load_series(files)
    assert out.shape == vol.shape and out.space == "LPS"
    # slices are sorted along row x column, against the stored order: same voxels in space, k reversed
    expected = _reversed(vol)
    np.testing.assert_allclose(out.affine, expected.affine, atol=1e-5)
    np.testing.assert_array_equal(out.data, expected.data.astype(np.float32))
    assert out.data[1, 2, 6] == vol.data[1, 2, 3] == vol.data.max()  # the marker voxel, slice 3 of 10
    assert out.meta["RepetitionTime"] == 2.0 and out.meta["EchoTime"] == 0.03
    assert out.meta["FlipAngle"] == 90.0 and out.meta["MagneticFieldStrength"] == 3.0
    assert out.meta["PhaseEncodingDirection"] == "j" and out.meta["Manufacturer"] == "SIEMENS"
    assert out.meta["SliceTiming"] == pytest.approx([t / 1000 for t in TIMES[::-1]])


def test_mosaic_stored_along_the_normal_keeps_its_order(tmp_path: Path) -> None:
    flipped = _reversed(_epi())  # slices stored along +normal: stored order is ours
    out = load_series(write_mosaic([flipped.data], flipped.affine, tmp_path, TIMES))
    np.testing.assert_allclose(out.affine, flipped.affine, atol=1e-5)
    np.testing.assert_array_equal(out.data, flipped.data.astype(np.float32))
    assert out.meta["SliceTiming"] == pytest.approx([t / 1000 for t in TIMES])


def test_mosaic_time_series_is_one_4d_volume(tmp_path: Path) -> None:
    vol = _reversed(_epi(oblique=(0.0, 0.0, 0.0)))
    frames = [vol.data + np.uint16(50 * t) for t in range(4)]
    write_mosaic(frames, vol.affine, tmp_path / "bold", TIMES)
    (tmp_path / "bold" / "README.txt").write_text("fMRI run 1\n")
    series, excluded = discover(tmp_path)
    assert [s.kind for s in series] == ["volume"] and series[0].flags == ["4d:acquisition_number"]
    assert [e.kind for e in excluded] == ["not_dicom"] and not excluded[0].is_problem
    out = load_series(series[0].headers)
    assert out.shape == (*vol.shape, 4)
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-5)
    for t in range(4):
        np.testing.assert_array_equal(out.data[..., t], frames[t].astype(np.float32))
    path = save_nifti(out, tmp_path / "bold.nii.gz")
    img = nib.load(path)
    assert img.shape == (12, 9, 10, 4) and img.header.get_zooms()[3] == pytest.approx(2.0)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(img.affine, out.affine_in("RAS"), atol=1e-5)


def test_csa_header_that_is_corrupt_leaves_the_file_a_plain_image(tmp_path: Path) -> None:
    vol = _epi()
    path = write_mosaic([vol.data], vol.affine, tmp_path, TIMES)[0]
    ds = pydicom.dcmread(path)
    ds[0x0029, 0x1010].value = csa_blob({})[:12] + b"\xff" * 8
    ds.save_as(path)
    h = read_header(path)
    assert h.mosaic == 0 and h.csa is None and h.rows == 36


def test_united_imaging_mosaic_with_private_slice_positions(tmp_path: Path) -> None:
    vol = _reversed(_epi())  # 10 slices along +normal
    path = write_uih_mosaic(vol.data, vol.affine, tmp_path / "dti.dcm", across=4)  # 4 x 3 tiles, 2 empty
    h = read_header(path)
    assert (h.mosaic, h.tile_rows, h.tile_columns, h.rows, h.columns) == (10, 9, 12, 27, 48)
    out = load_series([path])
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(out.data, vol.data.astype(np.float32))
