"""Volume assembly edge cases: tilt, missing/duplicate slices, split series, multi-frame, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_phantoms import phantom
from pydicom.uid import JPEGLSLossless, RLELossless

from medimg.errors import DataError
from medimg.io.dicom.assemble import load_series
from medimg.io.dicom.discover import discover
from medimg.io.dicom.write import write_series
from medimg.io.load import load_image
from medimg.io.volume import Volume


def test_gantry_tilt_kept_exact_or_resampled(tmp_path: Path) -> None:
    vol = phantom("axial", shape=(24, 20, 10), spacing=(1.0, 1.0, 2.0))
    vol.data = np.broadcast_to(vol.data[:, :, :1], vol.shape).copy()  # same slice everywhere
    tilted = Volume(vol.data, vol.affine.copy(), "LPS")
    tilted.affine[:3, 2] = [0.0, 0.5, 2.0]  # each slice shifted 0.5 mm in y: ~14 degrees
    files = write_series(tilted, tmp_path / "tilt", shuffle_names=True)
    kept = load_series(files)
    assert "gantry_tilt" in kept.meta["qa_flags"] and kept.meta["tilt_deg"] == pytest.approx(14.036, abs=1e-3)
    np.testing.assert_allclose(kept.affine, tilted.affine, atol=1e-6)
    fixed = load_series(files, tilt_policy="resample")
    np.testing.assert_allclose(fixed.affine[:3, 2], [0.0, 0.0, 2.0], atol=1e-9)
    # slice k moved by k*0.5 rows back onto the orthogonal grid: row j of slice k is source row j - k/2
    k = 4
    np.testing.assert_allclose(fixed.data[:, 5:15, k], vol.data[:, 3:13, 0], atol=1e-4)
    with pytest.raises(DataError, match="gantry tilt"):
        load_series(files, tilt_policy="refuse")


def test_missing_slice_refused_or_resampled(tmp_path: Path) -> None:
    vol = phantom("coronal", shape=(12, 10, 9))
    files = write_series(vol, tmp_path / "s")
    files[4].unlink()
    rest = files[:4] + files[5:]
    with pytest.raises(DataError, match="1 missing slice"):
        load_series(rest)
    filled = load_series(rest, spacing_policy="resample")
    assert filled.shape == vol.shape and "missing_slices" in filled.meta["qa_flags"]
    np.testing.assert_allclose(filled.affine, vol.affine, atol=1e-6)
    np.testing.assert_allclose(filled.data[..., 4], (vol.data[..., 3] + vol.data[..., 5]) / 2.0, atol=1e-4)
    np.testing.assert_array_equal(filled.data[..., 8], vol.data[..., 8])


def test_duplicate_positions_refused(tmp_path: Path) -> None:
    vol = phantom("axial", shape=(8, 8, 4))
    files = write_series(vol, tmp_path / "a", series_uid="1.2.3.4")
    dup = write_series(vol, tmp_path / "b", series_uid="1.2.3.4")
    with pytest.raises(DataError, match="duplicate slice position"):
        load_series(files + dup[:1])


def test_multi_echo_series_is_split_and_localizer_classified(tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.8.498.5"
    for echo in (1, 2):
        vol = phantom("axial", shape=(10, 8, 5), seed=echo)
        write_series(
            vol, tmp_path, modality="MR", series_uid=uid, shuffle_names=True, extra_tags={"EchoNumbers": echo}
        )
    three_plane = [phantom(p, shape=(10, 8, 1)) for p in ("axial", "coronal", "sagittal")]
    for i, loc in enumerate(three_plane):
        write_series(loc, tmp_path, series_uid="1.2.9", file_prefix=f"L{i}",
                     extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})  # fmt: skip
    series, excluded = discover(tmp_path)
    kinds = sorted((s.kind, len(s.headers)) for s in series)
    assert kinds == [("localizer", 1)] * 3 + [("volume", 5)] * 2 and not excluded
    echoes = [load_series(s.headers) for s in series if s.kind == "volume"]
    assert not np.array_equal(echoes[0].data, echoes[1].data)
    with pytest.raises(DataError, match="2 usable series"):
        load_image(tmp_path)


def test_compressed_series_decode_exactly(tmp_path: Path) -> None:
    vol = phantom("axial", shape=(16, 12, 4))
    for ts in (RLELossless, JPEGLSLossless):
        files = write_series(
            vol, tmp_path / ts.name.replace(" ", "_"), transfer_syntax=ts, rescale=(2.0, -1024.0)
        )
        assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == ts
        out = load_series(files)
        np.testing.assert_array_equal(out.data, 2.0 * np.rint((vol.data + 1024.0) / 2.0) - 1024.0)


def test_enhanced_multiframe_matches_single_frames(tmp_path: Path) -> None:
    import highdicom as hd

    vol = phantom("axial", shape=(12, 10, 6), oblique=(0.0, 10.0, 0.0))
    files = write_series(vol, tmp_path / "single", rescale=(1.0, -1024.0))
    legacy = [pydicom.dcmread(f) for f in files]
    for i, ds in enumerate(legacy[::2]):  # per-frame rescale that varies
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1000 - i
        ds.save_as(files[2 * i])
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy, series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(), instance_number=1
    )
    mf.save_as(tmp_path / "enhanced.dcm")
    single = load_series(files)
    multi = load_series([tmp_path / "enhanced.dcm"])
    np.testing.assert_allclose(multi.affine, single.affine, atol=1e-5)
    np.testing.assert_array_equal(multi.data, single.data)
    assert not np.array_equal(single.data, vol.data)  # the varying rescale was applied


def test_rgb_is_refused_with_reason(tmp_path: Path) -> None:
    files = write_series(phantom("axial", shape=(8, 8, 2)), tmp_path)
    ds = pydicom.dcmread(files[0])
    rgb = np.zeros((8, 8, 3), np.uint8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(files[0])
    with pytest.raises(DataError, match="colour image .*RGB"):
        load_series(files[:1])


def test_several_multiframe_files_are_not_mixed(tmp_path: Path) -> None:
    import highdicom as hd

    files = write_series(phantom("axial", shape=(8, 8, 3)), tmp_path / "s")
    legacy = [pydicom.dcmread(f) for f in files]
    for i in range(2):
        mf = hd.legacy.LegacyConvertedEnhancedCTImage(
            legacy,
            series_instance_uid=hd.UID(),
            series_number=9,
            sop_instance_uid=hd.UID(),
            instance_number=i + 1,
        )
        mf.save_as(tmp_path / f"mf{i}.dcm")
    with pytest.raises(DataError, match="load each multi-frame file on its own"):
        load_series([tmp_path / "mf0.dcm", tmp_path / "mf1.dcm"])
