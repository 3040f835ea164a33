"""Maps go back onto the source image's exact grid (oblique, anisotropic, LPS or RAS)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from medimg.errors import GeometryError
from medimg.explain.geometry import map_to_source_grid, save_map_in_source_geometry
from medimg.io.volume import Volume


def _oblique_affine(spacing=(0.8, 1.1, 3.0), origin=(-40.0, 25.0, -12.0)) -> np.ndarray:
    rot = Rotation.from_euler("xyz", [17, -11, 29], degrees=True).as_matrix()
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


def _field(xyz: np.ndarray) -> np.ndarray:
    """A smooth, asymmetric function of world coordinates (linear: trilinear resampling is exact)."""
    return 3.0 + 0.05 * xyz[..., 0] - 0.02 * xyz[..., 1] + 0.11 * xyz[..., 2]


def _model_grid(source_affine: np.ndarray, source_shape: tuple[int, ...], spacing: float = 1.5):
    """An axis-aligned RAS grid covering the source field of view (what Spacing/Orientation give)."""
    corners = np.array(
        [
            [i, j, k]
            for i in (0, source_shape[0] - 1)
            for j in (0, source_shape[1] - 1)
            for k in (0, source_shape[2] - 1)
        ],
        dtype=float,
    )
    world = corners @ source_affine[:3, :3].T + source_affine[:3, 3]
    lo, hi = world.min(0) - spacing, world.max(0) + spacing
    shape = tuple(int(np.ceil(v)) + 1 for v in (hi - lo) / spacing)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = lo
    return aff, shape


def test_map_to_source_grid_matches_analytic_field_on_oblique_anisotropic_source():
    src_aff, src_shape = _oblique_affine(), (30, 26, 11)
    grid_aff, grid_shape = _model_grid(src_aff, src_shape)
    map_on_grid = _field(_world(grid_aff, grid_shape)).astype(np.float32)
    back = map_to_source_grid(map_on_grid, grid_aff, src_shape, src_aff)
    assert back.shape == src_shape and back.dtype == np.float32
    expected = _field(_world(src_aff, src_shape))
    np.testing.assert_allclose(back, expected, atol=1e-3)


def test_voxels_outside_the_map_are_zero_and_nearest_keeps_labels():
    src_aff, src_shape = _oblique_affine(), (12, 10, 6)
    small = np.ones((2, 2, 2), np.float32) * 7
    out = map_to_source_grid(small, np.eye(4) * 1.0, src_shape, src_aff, order=0)
    assert set(np.unique(out)) <= {0.0, 7.0}
    with pytest.raises(GeometryError, match="singular"):
        map_to_source_grid(small, np.zeros((4, 4)), src_shape, src_aff)


@pytest.mark.parametrize("space", ["RAS", "LPS"])
def test_saved_map_has_exactly_the_source_shape_and_affine(tmp_path, space):
    src_ras = _oblique_affine()
    src_shape = (30, 26, 11)
    source = Volume(np.zeros(src_shape, np.float32), src_ras, "RAS").to_space(space)
    grid_aff, grid_shape = _model_grid(src_ras, src_shape)
    map_on_grid = _field(_world(grid_aff, grid_shape)).astype(np.float32)
    path = save_map_in_source_geometry(map_on_grid, grid_aff, source, tmp_path / "gradcam.nii.gz")
    img = nib.load(str(path))
    assert img.shape == src_shape
    np.testing.assert_allclose(img.affine, src_ras, atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), src_ras, atol=1e-5)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(img.dataobj), _field(_world(src_ras, src_shape)), atol=1e-3)
    # the same map with the model grid expressed in LPS lands on the same voxels
    lps_grid = np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid_aff
    p2 = save_map_in_source_geometry(map_on_grid, lps_grid, source, tmp_path / "lps.nii.gz", map_space="LPS")
    np.testing.assert_allclose(np.asarray(nib.load(str(p2)).dataobj), np.asarray(img.dataobj), atol=1e-5)
