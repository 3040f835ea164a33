"""DICOM SEG: valid per dciodvfy, right slices referenced, re-read into the same mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from phantom_outputs import ALGO, LABELS

from medimg.errors import DataError, GeometryError
from medimg.inference.dicom_seg import (
    read_seg,
    sort_source_datasets,
    source_affine_lps,
    write_seg,
)
from medimg.io.volume import Volume


def test_seg_is_valid_references_the_right_slices_and_reads_back(
    source_series: Any, dciodvfy: Any, tmp_path: Path
) -> None:
    mask = Volume(source_series.mask, source_series.volume.affine, "LPS")
    path = write_seg(mask, source_series.datasets, LABELS, tmp_path / "seg.dcm", ALGO)

    assert dciodvfy(path) == []
    np.testing.assert_array_equal(read_seg(path, source_series.datasets, LABELS), source_series.mask)

    seg = pydicom.dcmread(path)
    source = source_series.datasets[0]
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumor"]
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("phantom-unet", "2.1.0")
    assert "5e" * 32 in algo.AlgorithmParameters
    # Every frame sits on the slice it references, and holds that slice's mask.
    by_uid = {ds.SOPInstanceUID: ds for ds in source_series.datasets}
    ordered = sort_source_datasets(source_series.datasets)
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(ordered)}
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(position, np.asarray(by_uid[uid].ImagePositionPatient, float), atol=1e-3)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        value = sorted(LABELS)[number - 1]
        expected = value == source_series.mask[:, :, slice_of[uid]].T
        np.testing.assert_array_equal(pixels[frame].astype(bool), expected)
    assert len(seg.PerFrameFunctionalGroupsSequence) == 3 + 1  # empty frames omitted


def test_mask_volume_in_another_axis_order_and_space_maps_by_affine(
    source_series: Any, tmp_path: Path
) -> None:
    mask = source_series.mask
    n0, _, n2 = mask.shape
    reordered = np.flip(mask, (0, 2)).transpose(2, 0, 1)  # new (u, v, w) = old (n2-1-k, n0-1-i, j)
    new_to_old = np.array([[0, -1, 0, n0 - 1], [0, 0, 1, 0], [-1, 0, 0, n2 - 1], [0, 0, 0, 1]], float)
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ source_series.volume.affine @ new_to_old
    path = write_seg(
        Volume(reordered, affine_ras, "RAS"), source_series.datasets, LABELS, tmp_path / "s.dcm", ALGO
    )
    np.testing.assert_array_equal(read_seg(path, source_series.datasets, LABELS), mask)
    # A bare array in (columns, rows, slices) order works too.
    path = write_seg(mask, source_series.datasets, LABELS, tmp_path / "bare.dcm", ALGO)
    np.testing.assert_array_equal(read_seg(path, source_series.datasets, LABELS), mask)


def test_source_affine_matches_the_written_volume(source_series: Any) -> None:
    affine = source_affine_lps(sort_source_datasets(source_series.datasets))
    np.testing.assert_allclose(affine, source_series.volume.affine, atol=1e-5)


def test_off_grid_and_unlabelled_masks_are_refused(source_series: Any, tmp_path: Path) -> None:
    shifted = source_series.volume.affine.copy()
    shifted[:3, 3] += 0.5 * shifted[:3, 0]
    with pytest.raises(GeometryError, match="source grid"):
        write_seg(
            Volume(source_series.mask, shifted, "LPS"),
            source_series.datasets,
            LABELS,
            tmp_path / "a.dcm",
            ALGO,
        )
    with pytest.raises(GeometryError, match="columns, rows, slices"):
        write_seg(
            source_series.mask.transpose(2, 1, 0), source_series.datasets, LABELS, tmp_path / "b.dcm", ALGO
        )
    with pytest.raises(DataError, match=r"mask values \[3\]"):
        write_seg(source_series.mask, source_series.datasets, {1: "liver"}, tmp_path / "c.dcm", ALGO)
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".*"))


def test_empty_mask_gives_a_valid_seg(source_series: Any, dciodvfy: Any, tmp_path: Path) -> None:
    empty = np.zeros_like(source_series.mask)
    path = write_seg(empty, source_series.datasets, LABELS, tmp_path / "empty.dcm", ALGO)
    assert dciodvfy(path) == []
    assert not read_seg(path, source_series.datasets, LABELS).any()


def test_series_written_against_the_normal_maps_slices_by_position(tmp_path: Path, dciodvfy: Any) -> None:
    from medimg.io.dicom.write import write_series

    mask = np.zeros((10, 8, 5), np.uint8)
    # Row direction +y, column direction +x: the normal is -z, the slice step +z, so the first
    # *written* slice is the last one along the normal.
    mask[2:4, 1:3, 0] = 1
    affine = np.array([[0.0, 0.9, 0.0, 5.0], [0.7, 0.0, 0.0, -3.0], [0.0, 0.0, 3.0, 40.0], [0, 0, 0, 1.0]])
    files = write_series(Volume(mask * 100, affine, "LPS"), tmp_path / "src", shuffle_names=True)
    datasets = [pydicom.dcmread(f) for f in files]
    path = write_seg(Volume(mask, affine, "LPS"), datasets, {1: "lesion"}, tmp_path / "seg.dcm", ALGO)
    assert dciodvfy(path) == []
    back = read_seg(path, datasets, {1: "lesion"})  # in slice order along the normal
    np.testing.assert_array_equal(back, mask[:, :, ::-1])
    seg = pydicom.dcmread(path)
    (frame,) = seg.PerFrameFunctionalGroupsSequence
    uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    assert uid == pydicom.dcmread(files[0]).SOPInstanceUID
