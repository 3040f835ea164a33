"""Thick and thin grids: every super-resolved voxel lands at the world position of the thin slice it stands for."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.config.generative import SuperresConfig
from medimg.data.synthetic import oblique_affine
from medimg.generative.slices import (
    crop_to_multiple,
    interpolate_thin,
    simulate_thick,
    thick_affine,
    thin_affine,
    thin_coordinates,
)
from medimg.generative.superres_net import ResidualSR
from medimg.generative.superres_study import super_resolve, thick_volume
from medimg.io.load import load_image
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    return idx @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_thin_grid_of_a_thick_oblique_scan_is_the_original_thin_grid(axis, factor):
    """Thin -> simulated thick -> thin grid: the same affine, every voxel at the same world position."""
    shape = [10, 11, 12]
    shape[axis] = 4 * factor
    thin = oblique_affine(tuple(shape), (0.8, 0.9, 1.1), 23.0, axis=(0.3, -1.0, 0.6))
    thick = thick_affine(thin, axis, factor)
    back = thin_affine(thick, axis, factor)
    np.testing.assert_allclose(back, thin, atol=1e-12)
    np.testing.assert_allclose(_world(back, shape), _world(thin, shape), atol=1e-9)
    # the thick slice's column is factor times the thin one, in the same direction; the others unchanged
    np.testing.assert_allclose(thick[:3, axis], factor * thin[:3, axis], atol=1e-12)
    for other in {0, 1, 2} - {axis}:
        np.testing.assert_allclose(thick[:3, other], thin[:3, other], atol=1e-12)
    # each thick voxel centre is the mean world position of the thin voxels it averages
    thick_shape = list(shape)
    thick_shape[axis] //= factor
    w_thick = _world(thick, thick_shape).reshape(*thick_shape, 3)
    w_thin = _world(thin, shape).reshape(*shape, 3)
    grouped = np.moveaxis(w_thin, axis, 0).reshape(thick_shape[axis], factor, -1, 3).mean(1)
    np.testing.assert_allclose(
        grouped.reshape(-1, 3), np.moveaxis(w_thick, axis, 0).reshape(-1, 3), atol=1e-9
    )


def test_thin_slices_tile_each_thick_slice_symmetrically():
    coords = thin_coordinates(3, 4)
    assert coords.tolist() == pytest.approx(
        [-0.375, -0.125, 0.125, 0.375, 0.625, 0.875, 1.125, 1.375, 1.625, 1.875, 2.125, 2.375]
    )
    np.testing.assert_allclose(coords.reshape(3, 4).mean(1), [0, 1, 2])
    assert np.diff(coords) == pytest.approx(np.full(11, 0.25))


def test_box_profile_and_interpolation_are_exact_on_a_linear_ramp():
    """A ramp along the slice axis: thick values are the thin centres' values; linear recovers the inside."""
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32) * 2.0 + 5.0, (3, 4, 16)).copy()
    thick = simulate_thick(ramp, 2, 4, "box")
    np.testing.assert_allclose(thick[0, 0], [5 + 2 * 1.5, 5 + 2 * 5.5, 5 + 2 * 9.5, 5 + 2 * 13.5])
    lin = interpolate_thin(thick, 2, 4, order=1)
    np.testing.assert_allclose(lin[..., 2:14], ramp[..., 2:14], atol=1e-5)
    spline = interpolate_thin(thick, 2, 4, order=3)
    np.testing.assert_allclose(
        spline[..., 6:10], ramp[..., 6:10], atol=0.1
    )  # boundary conditions bend the ends
    gauss = simulate_thick(ramp, 2, 4, "gaussian")
    np.testing.assert_allclose(
        gauss[0, 0, 1:3], thick[0, 0, 1:3], atol=1e-3
    )  # symmetric profile, same centres


def test_written_super_resolution_maps_every_voxel_to_the_thin_scans_world_positions(tmp_path):
    """Through NIfTI: an oblique thin scan, its simulated thick scan on disk, the super-resolved output."""
    cfg = SuperresConfig(factor=4, axis=1, patch_size=(16, 16, 16))
    rng = np.random.default_rng(0)
    affine = oblique_affine((12, 18, 10), (1.0, 1.2, 0.9), 31.0, axis=(0.2, 0.9, -0.4))
    affine[:3, 3] += [12.5, -40.0, 7.25]
    thin = Volume(rng.random((12, 18, 10)).astype(np.float32), affine)
    thin = Volume(crop_to_multiple(thin.data, 1, 4), thin.affine)
    thick = load_image(save_nifti(thick_volume(thin, cfg), tmp_path / "thick.nii.gz"))
    assert thick.shape == (12, 4, 10)
    np.testing.assert_allclose(thick.spacing, (1.0, 4.8, 0.9), atol=1e-5)
    sr = load_image(save_nifti(super_resolve(ResidualSR(4, 2), thick, cfg), tmp_path / "sr.nii.gz"))
    assert sr.shape == thin.shape
    np.testing.assert_allclose(_world(sr.affine, sr.shape), _world(thin.affine, thin.shape), atol=1e-4)
    # an untrained residual network is exactly linear interpolation between the thick slices
    np.testing.assert_allclose(sr.data, interpolate_thin(thick.data, 1, 4), atol=1e-4)
