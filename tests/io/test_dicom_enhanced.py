"""Enhanced (multi-frame) MR: per-frame positions, rescale and dimension indices make 3D or 4D stacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dicom_phantoms import phantom, write_enhanced_mr

from medimg.io.dicom.assemble import load_series
from medimg.io.dicom.discover import discover
from medimg.io.dicom.headers import read_header


def _volumes(n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    vol = phantom("coronal", shape=(9, 7, 5), spacing=(1.2, 0.9, 2.2), oblique=(5.0, 10.0, 0.0))
    base = (vol.data.astype(np.int64) + 1100) // 2 + 3  # >= 3: 4 * base - 10 is exact for slopes 1, 2, 4
    return vol.affine, [4 * (base + 11 * t) - 10 for t in range(n)]


def test_enhanced_mr_with_time_points_is_one_4d_stack(tmp_path: Path) -> None:
    affine, volumes = _volumes(3)
    path = write_enhanced_mr(volumes, affine, tmp_path / "e" / "fmri.dcm")
    h = read_header(path)
    assert h.number_of_frames == 15 and h.frame_tags is not None and h.frame_rescale is not None
    series, excluded = discover(tmp_path)
    assert not excluded and [s.kind for s in series] == ["volume"]
    assert series[0].flags == ["4d:temporal_position"]
    out = load_series([path])
    assert out.shape == (9, 7, 5, 3)
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    for t in range(3):  # frames were stored shuffled, each with its own slope
        np.testing.assert_array_equal(out.data[..., t], volumes[t].astype(np.float32))


def test_enhanced_mr_single_volume_is_3d(tmp_path: Path) -> None:
    affine, volumes = _volumes(1)
    out = load_series([write_enhanced_mr(volumes, affine, tmp_path / "t1.dcm", seed=3)])
    assert out.shape == (9, 7, 5) and out.meta["qa_flags"] == []
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(out.data, volumes[0].astype(np.float32))


def test_enhanced_mr_echoes_are_separate_series(tmp_path: Path) -> None:
    affine, volumes = _volumes(2)
    write_enhanced_mr(volumes, affine, tmp_path / "fmap.dcm", echo_times=[4.92, 7.38])
    series, _ = discover(tmp_path)
    assert [(s.kind, s.first.frame_select) for s in series] == [
        ("volume", (4.92, "")),
        ("volume", (7.38, "")),
    ]
    assert len({s.keys()["series_key"] for s in series}) == 2
    for s, expected in zip(series, volumes, strict=True):
        out = load_series(s.headers)
        assert out.shape == (9, 7, 5)
        np.testing.assert_array_equal(out.data, expected.astype(np.float32))
        np.testing.assert_allclose(out.affine, affine, atol=1e-5)
