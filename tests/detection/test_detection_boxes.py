"""Boxes: world mm <-> voxel indices through oblique, anisotropic affines; box files; mask components."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medimg.data.synthetic import oblique_affine
from medimg.detection.boxes import (
    VoxelBox,
    WorldBox,
    boxes_from_mask,
    read_box_file,
    voxel_to_world,
    world_to_voxel,
)
from medimg.detection.grid import move_boxes, to_grid
from medimg.detection.synthetic import make_detection_case
from medimg.errors import DataError
from medimg.io.nifti import load_nifti, save_nifti
from medimg.io.volume import Volume

AFFINE = oblique_affine((30, 26, 12), (0.8, 1.3, 3.1), 23.0)


def test_world_voxel_round_trip_is_exact_on_an_oblique_anisotropic_grid() -> None:
    vol = Volume(np.zeros((30, 26, 12), np.float32), AFFINE)
    box = VoxelBox((7.25, 13.0, 4.5), (4.0, 3.0, 2.0), 0.7)
    world = voxel_to_world(box, vol)
    # the centre is the affine applied to the continuous index; sizes are voxels times spacing
    expected = AFFINE[:3, :3] @ np.array([7.25, 13.0, 4.5]) + AFFINE[:3, 3]
    np.testing.assert_allclose(world.centre_mm, expected, atol=1e-12)
    np.testing.assert_allclose(world.size_mm, (3.2, 3.9, 6.2), atol=1e-12)
    back = world_to_voxel(world, vol)
    np.testing.assert_allclose(back.centre, box.centre, atol=1e-10)
    np.testing.assert_allclose(back.extent, box.extent, atol=1e-10)
    assert back.score == 0.7


def test_lps_box_lands_on_the_same_voxels_as_its_ras_twin() -> None:
    ras = Volume(np.zeros((30, 26, 12), np.float32), AFFINE)
    lps = ras.to_space("LPS")
    box = VoxelBox((3.0, 20.0, 9.0), (2.0, 2.0, 1.0))
    w_ras, w_lps = voxel_to_world(box, ras), voxel_to_world(box, lps)
    assert w_lps.space == "LPS"
    np.testing.assert_allclose(w_lps.centre_mm, np.array(w_ras.centre_mm) * [-1, -1, 1], atol=1e-12)
    np.testing.assert_allclose(world_to_voxel(w_lps, ras).centre, box.centre, atol=1e-10)


def test_mask_components_give_one_box_each_with_exact_world_centres(tmp_path: Path) -> None:
    mask = np.zeros((30, 26, 12), np.uint8)
    mask[2:6, 3:10, 1:3] = 1
    mask[20:23, 15:16, 8:12] = 4
    save_nifti(Volume(mask, AFFINE), tmp_path / "m.nii.gz")
    vol = load_nifti(tmp_path / "m.nii.gz")
    boxes = sorted(boxes_from_mask(vol), key=lambda b: b.centre[0])
    assert [b.corners() for b in boxes] == [
        (1.5, 2.5, 0.5, 5.5, 9.5, 2.5),
        (19.5, 14.5, 7.5, 22.5, 15.5, 11.5),
    ]
    centre = voxel_to_world(boxes[1], vol).centre_mm
    np.testing.assert_allclose(centre, AFFINE[:3, :3] @ [21.0, 15.0, 9.5] + AFFINE[:3, 3], atol=1e-4)


def test_box_files_csv_and_json_agree_and_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("case_key,x,y,z,diameter\nc1,1.5,-2,3,6\nc1,0,0,0,4\nc2,5,5,5,8\n")
    rows = [
        {"case_key": "c1", "x": 1.5, "y": -2, "z": 3, "size_x": 6, "size_y": 6, "size_z": 6},
        {"case_key": "c1", "x": 0, "y": 0, "z": 0, "size_x": 4, "size_y": 4, "size_z": 4},
        {"case_key": "c2", "x": 5, "y": 5, "z": 5, "size_x": 8, "size_y": 8, "size_z": 8},
    ]
    (tmp_path / "b.json").write_text(json.dumps({"boxes": rows}))
    assert read_box_file(tmp_path / "b.csv") == read_box_file(tmp_path / "b.json")
    assert read_box_file(tmp_path / "b.csv")["c1"][0] == WorldBox((1.5, -2.0, 3.0), (6.0, 6.0, 6.0))
    (tmp_path / "bad.csv").write_text("case_key,x,y,z\nc1,1,2,3\n")
    with pytest.raises(DataError, match=r"bad\.csv.*size_x, size_y, size_z or diameter"):
        read_box_file(tmp_path / "bad.csv")
    (tmp_path / "neg.csv").write_text("case_key,x,y,z,diameter\nc1,1,2,3,-1\n")
    with pytest.raises(DataError, match=r"neg\.csv: row 0"):
        read_box_file(tmp_path / "neg.csv")
    with pytest.raises(DataError, match=r"\.txt"):
        (tmp_path / "b.txt").write_text("")
        read_box_file(tmp_path / "b.txt")


def test_resampling_to_the_plan_grid_keeps_world_boxes_exact() -> None:
    data = np.random.default_rng(0).normal(size=(30, 26, 12)).astype(np.float32)
    vol = Volume(data, AFFINE)
    grid = to_grid(vol, (1.6, 1.6, 3.1))
    assert grid.shape == (15, 21, 12)
    np.testing.assert_allclose(grid.spacing, (1.6, 1.6, 3.1), atol=1e-12)
    box = VoxelBox((11.3, 6.2, 5.0), (3.0, 4.0, 2.0))
    on_grid = move_boxes([box], vol, grid)[0]
    np.testing.assert_allclose(
        voxel_to_world(on_grid, grid).centre_mm, voxel_to_world(box, vol).centre_mm, atol=1e-9
    )
    np.testing.assert_allclose(
        voxel_to_world(on_grid, grid).size_mm, voxel_to_world(box, vol).size_mm, atol=1e-9
    )
    # a voxel centre of the new grid samples the old volume at the same world point
    world_point = grid.affine @ [4, 7, 3, 1]
    old_index = np.linalg.solve(AFFINE, world_point)[:3]
    ratio_y = 1.6 / 1.3
    expected = (4 * 2.0 + (29 - 14 * 2.0) / 2, 7 * ratio_y + (25 - 20 * ratio_y) / 2, 3.0)
    np.testing.assert_allclose(old_index, expected, atol=1e-9)


def test_synthetic_lesion_boxes_from_masks_sit_on_the_true_centres() -> None:
    case = make_detection_case(3, seed=0)
    boxes = boxes_from_mask(case.mask)
    assert len(boxes) == len(case.centres_mm) >= 1
    inv = np.linalg.inv(case.mask.affine)
    for centre, diameter in zip(case.centres_mm, case.diameters_mm, strict=True):
        true_index = inv[:3, :3] @ centre + inv[:3, 3]
        nearest = min(boxes, key=lambda b: np.linalg.norm(np.array(b.centre) - true_index))
        assert np.all(np.abs(np.array(nearest.centre) - true_index) <= 0.5 + 1e-9)
        size = voxel_to_world(nearest, case.mask).size_mm
        assert np.all(np.array(size) <= diameter + 2 * np.array(case.mask.spacing))
