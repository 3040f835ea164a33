"""Anomaly maps: the smoothed voxel-wise reconstruction error, a case score, and their checks.

All of it works on the model grid (the preprocessed image); :func:`map_on_source_grid` puts a
map back on the scan's own voxels with the two affines (``medimg.inference.resample``), so the
written NIfTI has exactly the input's shape and affine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medimg.inference.resample import resample_to_grid


def smooth(volume: np.ndarray, sigma_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Gaussian smoothing with a sigma in millimetres (converted per axis with ``spacing``).

    Example:
        >>> v = np.zeros((21, 21, 21), np.float32); v[10, 10, 10] = 1
        >>> s = smooth(v, 2.0, (1.0, 1.0, 2.0))
        >>> round(float(s.sum()), 3), s.argmax() == v.argmax()
        (1.0, np.True_)
    """
    from scipy.ndimage import gaussian_filter

    if sigma_mm <= 0:
        return volume.astype(np.float32, copy=False)
    sigma = [sigma_mm / float(s) for s in spacing]
    return gaussian_filter(volume.astype(np.float32), sigma=sigma, mode="nearest")


@torch.no_grad()
def residual(net: nn.Module, image: torch.Tensor) -> np.ndarray:
    """``image - net(image)`` (signed) averaged over channels, for one ``(C, X, Y, Z)`` image.

    Example:
        >>> residual(nn.Identity(), torch.ones(1, 4, 4, 4)).max()
        np.float32(0.0)
    """
    net.eval()
    recon = net(image[None].float())[0]
    return (image.float() - recon).mean(0).cpu().numpy().astype(np.float32)


def anomaly_map(net: nn.Module, image: torch.Tensor, spacing: Sequence[float], sigma_mm: float) -> np.ndarray:
    """``|smooth(image - reconstruction)|`` of one image on its model grid.

    The residual is smoothed *before* its magnitude is taken: noise and the blur of an edge
    (bright on one side, dark on the other) cancel out, while an anomaly the network did not
    reconstruct leaves a residual of one sign over its whole extent, which survives.
    """
    return np.abs(smooth(residual(net, image), sigma_mm, spacing))


def case_score(amap: np.ndarray, how: str = "max") -> float:
    """One number per case from its map: the maximum, the 99th percentile or the mean.

    Example:
        >>> case_score(np.arange(100.0), "p99")
        98.01
    """
    if how == "max":
        return float(amap.max())
    if how == "p99":
        return float(np.percentile(amap, 99))
    if how == "mean":
        return float(amap.mean())
    raise ValueError(f"anomaly.score {how!r}: expected max, p99 or mean")


def map_on_source_grid(
    amap: np.ndarray,
    grid_affine: np.ndarray,
    source_shape: tuple[int, int, int],
    source_affine: np.ndarray,
) -> np.ndarray:
    """Resample a model-grid map onto the source grid (trilinear, 0 outside the model grid).

    Example:
        >>> m = np.random.rand(6, 6, 6).astype(np.float32)
        >>> np.allclose(map_on_source_grid(m, np.eye(4), (6, 6, 6), np.eye(4)), m, atol=1e-5)
        True
    """
    values = torch.as_tensor(np.ascontiguousarray(amap), dtype=torch.float32)[None]
    out = resample_to_grid(values, grid_affine, source_shape, source_affine, fill_background=False)
    return out[0].numpy()


def peak_in_mask(amap: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's maximum lies inside ``mask`` (both on one grid).

    Example:
        >>> m = np.zeros((4, 4, 4)); m[1, 2, 3] = 5; k = np.zeros((4, 4, 4), bool); k[1, 2, 3] = True
        >>> peak_in_mask(m, k)
        True
    """
    if amap.shape != mask.shape:
        raise ValueError(f"map shape {amap.shape} differs from mask shape {mask.shape}")
    return bool(mask.reshape(-1)[int(np.argmax(amap))])
