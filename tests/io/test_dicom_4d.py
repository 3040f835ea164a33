"""4D series: slice positions repeated over time or b-values become one (x, y, z, t) volume."""

from __future__ import annotations

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
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

N_T = 4


def _ge_run(tmp_path: Path, tags: dict | None = None) -> tuple[Volume, list[np.ndarray], list[list[Path]]]:
    """A GE-style fMRI run: one file per slice and time point, random names, one series UID."""
    vol = phantom("sagittal", shape=(10, 8, 6), spacing=(2.0, 2.5, 3.0), oblique=(8.0, 0.0, -4.0))
    uid, frames, files = "1.2.826.0.1.3680043.8.498.1", [], []
    for t in range(N_T):
        data = vol.data.astype(np.int32) + 1100 + 37 * t
        frames.append(data)
        extra = {"Manufacturer": "GE MEDICAL SYSTEMS", "TemporalPositionIdentifier": t + 1,
                 "NumberOfTemporalPositions": N_T, **(tags or {})}  # fmt: skip
        files.append(
            write_series(
                Volume(data, vol.affine, "LPS"),
                tmp_path / "run",
                modality="MR",
                series_uid=uid,
                study_uid=uid + ".9",
                shuffle_names=True,
                extra_tags=extra,
            )  # fmt: skip
        )
    return vol, frames, files


def test_ge_fmri_run_is_4d_ordered_by_temporal_position(tmp_path: Path) -> None:
    vol, frames, _files = _ge_run(tmp_path)
    series, excluded = discover(tmp_path)
    assert not excluded and len(series) == 1
    assert series[0].kind == "volume" and "4d:temporal_position" in series[0].flags
    out = load_series(series[0].headers)
    assert out.shape == (*vol.shape, N_T) and out.meta["n_volumes"] == N_T
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-6)
    for t in range(N_T):
        np.testing.assert_array_equal(out.data[..., t], frames[t])


def test_without_temporal_tags_instance_order_decides(tmp_path: Path) -> None:
    vol, frames, files = _ge_run(tmp_path)
    n_z = vol.shape[2]
    for t, paths in enumerate(files):
        for k, path in enumerate(paths):  # write_series returns paths in slice order
            ds = pydicom.dcmread(path)
            del ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions
            ds.InstanceNumber = t * n_z + k + 1
            ds.save_as(path)
    series, _ = discover(tmp_path)
    assert series[0].flags == ["4d:instance_order"]
    out = load_series(series[0].headers)
    for t in range(N_T):
        np.testing.assert_array_equal(out.data[..., t], frames[t])


def test_ge_diffusion_b_values_are_kept_per_volume(tmp_path: Path) -> None:
    _vol, _frames, files = _ge_run(tmp_path)
    b_values = [0, 1000, 1000, 2000]
    for t, paths in enumerate(files):
        for path in paths:
            ds = pydicom.dcmread(path)
            del ds.TemporalPositionIdentifier
            ds.InstanceNumber = 100 * t + ds.InstanceNumber
            ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
            ds.add_new((0x0043, 0x1039), "IS", [1_000_000_000 + b_values[t], 8, 0, 0])
            ds.save_as(path)
    out = load_series(discover(tmp_path)[0][0].headers)
    assert out.meta["DiffusionBValues"] == b_values and "4d:instance_order" in out.meta["qa_flags"]


def test_positions_that_differ_between_time_points_are_refused(tmp_path: Path) -> None:
    _vol, _frames, files = _ge_run(tmp_path)
    ds = pydicom.dcmread(files[2][3])
    ds.ImagePositionPatient = [float(v) + 0.7 for v in ds.ImagePositionPatient]
    ds.save_as(files[2][3])
    series, _ = discover(tmp_path)
    assert series[0].kind == "unsupported" and "repeated unevenly" in series[0].reason
    with pytest.raises(DataError, match="repeated unevenly"):
        load_series(series[0].headers)


def test_one_uid_with_two_series_numbers_is_two_series(tmp_path: Path) -> None:
    vol = phantom("axial", shape=(8, 8, 5))
    uid = "1.2.826.0.1.3680043.8.498.2"
    a = write_series(
        vol, tmp_path / "x", series_uid=uid, study_uid=uid + ".9", series_number=3, shuffle_names=True
    )
    b = write_series(Volume(vol.data + 5, vol.affine, "LPS"), tmp_path / "x", series_uid=uid, study_uid=uid + ".9", series_number=4,
                     shuffle_names=True)  # fmt: skip
    series, _ = discover(tmp_path)
    assert sorted((s.first.series_number, len(s.headers), s.kind) for s in series) == [
        (3, 5, "volume"), (4, 5, "volume")
    ]  # fmt: skip
    by_number = {s.first.series_number: load_series(s.headers) for s in series}
    assert {h.name for h in a} == {
        Path(h.path).name for s in series if s.first.series_number == 3 for h in s.headers
    }
    assert len(b) == 5 and by_number[4].shape == vol.shape
    np.testing.assert_array_equal(by_number[4].data - by_number[3].data, 5.0)
    assert len({s.keys()["series_key"] for s in series}) == 2


def test_ge_trigger_times_give_slice_timing_in_slice_order(tmp_path: Path) -> None:
    vol, _frames, files = _ge_run(tmp_path, tags={"RepetitionTime": 1200.0})
    n_z = vol.shape[2]
    interleaved = [0.0, 600.0, 200.0, 800.0, 400.0, 1000.0]  # ms, slice k in stored order
    for paths in files:
        for k, path in enumerate(paths):
            ds = pydicom.dcmread(path)
            ds.TriggerTime = interleaved[k]
            ds.AcquisitionTime = "101500.000000"
            ds.save_as(path)
    out = load_series(discover(tmp_path)[0][0].headers)
    assert len(interleaved) == n_z and out.meta["RepetitionTime"] == 1.2
    assert out.meta["SliceTiming"] == pytest.approx([t / 1000 for t in interleaved])
    img = nib.load(save_nifti(out, tmp_path / "run.nii"))
    assert img.shape == (*vol.shape, N_T) and img.header.get_zooms()[3] == pytest.approx(1.2)


def test_volume_reports_its_time_points() -> None:
    vol = Volume(np.zeros((4, 3, 2, 5), np.float32), np.diag([2.0, 1.0, 3.0, 1.0]), "LPS")
    assert vol.n_volumes == 5 and vol.spacing == (2.0, 1.0, 3.0)
    assert Volume(np.zeros((4, 3, 2)), np.eye(4)).n_volumes == 1


def test_philips_isotropic_trace_volume_is_left_out(tmp_path: Path) -> None:
    _vol, frames, files = _ge_run(tmp_path)
    diffusion = [
        (0.0, [0.0, 0.0, 0.0]),
        (1000.0, [1.0, 0.0, 0.0]),
        (1000.0, [0.0, 0.0, 0.0]),
        (1000.0, [0.0, 1.0, 0.0]),
    ]
    for t, paths in enumerate(files):
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.Manufacturer = "Philips Medical Systems"
            ds.DiffusionBValue, ds.DiffusionGradientOrientation = diffusion[t]
            ds.save_as(path)
    series, _ = discover(tmp_path)
    assert "isotropic_trace_dropped" in series[0].flags
    out = load_series(series[0].headers)
    assert out.shape[3] == 3 and out.meta["DiffusionBValues"] == [0.0, 1000.0, 1000.0]
    for t, source in enumerate((0, 1, 3)):
        np.testing.assert_array_equal(out.data[..., t], frames[source])
