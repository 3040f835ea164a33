"""DICOM SR of detected boxes: valid per dciodvfy, read back by highdicom with the same boxes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from medimg.detection.boxes import VoxelBox, voxel_to_world
from medimg.detection.dicom_sr import read_detection_sr, write_detection_sr
from medimg.inference.dicom_seg import AlgorithmInfo
from medimg.io.dicom.write import write_series
from medimg.io.load import load_image
from medimg.io.volume import Volume


def _dciodvfy_errors(path: Path) -> list[str]:
    binary = shutil.which("dciodvfy")
    if binary is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_sr_boxes_round_trip_in_world_mm_and_pass_dciodvfy(tmp_path: Path) -> None:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [15, -10, 25], degrees=True).as_matrix() @ np.diag(
        [0.8, 1.1, 2.5]
    )
    affine[:3, 3] = [-20.0, 10.0, 30.0]
    data = np.full((24, 20, 9), -800, np.int16)
    data[4:10, 5:9, 2:5] = 80
    files = write_series(Volume(data, affine, "LPS"), tmp_path / "series", rescale=(1.0, -1024.0))
    volume = load_image(tmp_path / "series")  # medimg's reader: the grid predictions are made on
    datasets = [pydicom.dcmread(f) for f in files]
    boxes = [
        VoxelBox((6.5, 6.5, 3.0), (6.0, 4.0, 3.0), 0.93),
        VoxelBox((18.25, 3.5, 7.0), (2.5, 3.0, 1.5), 0.41),
    ]
    algo = AlgorithmInfo(name="det-retinanet", version="1", weights_sha256="ab" * 32)
    path = write_detection_sr(boxes, volume, datasets, tmp_path / "boxes_sr.dcm", algo)
    assert _dciodvfy_errors(path) == []
    back = read_detection_sr(path)
    assert len(back) == 2
    for box, read in zip(boxes, back, strict=True):
        expected = voxel_to_world(box, volume, "LPS")
        np.testing.assert_allclose(read.centre_mm, expected.centre_mm, atol=1e-3)
        np.testing.assert_allclose(read.size_mm, expected.size_mm, atol=1e-3)
        assert read.score == pytest.approx(box.score)
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SR" and ds.StudyInstanceUID == datasets[0].StudyInstanceUID


def test_sr_without_boxes_is_still_valid(tmp_path: Path) -> None:
    files = write_series(
        Volume(np.zeros((8, 8, 4), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]), "LPS"), tmp_path / "s"
    )
    volume = load_image(tmp_path / "s")
    algo = AlgorithmInfo(name="det", version="1", weights_sha256="cd" * 32)
    path = write_detection_sr([], volume, [pydicom.dcmread(f) for f in files], tmp_path / "sr.dcm", algo)
    assert _dciodvfy_errors(path) == []
    assert read_detection_sr(path) == []
