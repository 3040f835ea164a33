"""Image fidelity against a reference: PSNR and SSIM, with one data range for every method compared."""

from __future__ import annotations

import numpy as np


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(range^2 / MSE)``.

    Example:
        >>> round(psnr(np.zeros(4), np.full(4, 0.1), 1.0), 3)
        20.0
    """
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Structural similarity (3D, MONAI's ``SSIMMetric``: 7-voxel Gaussian window).

    Example:
        >>> v = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
        >>> round(ssim(v, v, 1.0), 4)
        1.0
    """
    import torch
    from monai.metrics import SSIMMetric

    ref = torch.as_tensor(np.asarray(reference, np.float32))[None, None]
    out = torch.as_tensor(np.asarray(test, np.float32))[None, None]
    win = min(7, *ref.shape[2:])
    win -= 1 - win % 2  # odd
    metric = SSIMMetric(spatial_dims=3, data_range=float(data_range), win_size=win)
    return float(metric(out, ref).mean())
