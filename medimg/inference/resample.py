"""Put a prediction back on the source image's voxel grid, using only the two affines.

The network sees a reoriented, resampled (and possibly cropped) grid; the user needs
the answer on the grid of the scan they gave. Both grids are described by affines into
the same patient space, so the mapping is ``inv(A_pred) @ A_src`` — nothing is guessed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resample_to_grid(values: torch.Tensor, values_affine: np.ndarray, target_shape: tuple[int, int, int],
                     target_affine: np.ndarray, mode: str = "bilinear", fill_background: bool = True,
                     slab: int = 32) -> torch.Tensor:
    """Resample channel-first ``values`` (C, X, Y, Z) from its grid onto a target grid.

    Args:
        values: Probabilities or maps on the grid ``values_affine`` (voxel → mm).
        values_affine: 4x4 affine of ``values``.
        target_shape: Shape (X, Y, Z) of the target grid.
        target_affine: 4x4 affine of the target grid, in the same patient space.
        mode: ``"bilinear"`` (trilinear) or ``"nearest"``.
        fill_background: Outside the source grid, channel 0 is 1 and the rest 0 (a
            probability map of "background"); otherwise everything outside is 0.
        slab: Target slices along X resampled at a time (bounds memory on large scans).

    Returns:
        A float tensor (C, *target_shape) on ``values``' device.

    Example:
        >>> p = torch.rand(2, 8, 8, 8)
        >>> out = resample_to_grid(p, np.eye(4), (8, 8, 8), np.eye(4))
        >>> bool(torch.allclose(out, p, atol=1e-5))
        True
    """
    device = values.device
    vals = values.float().unsqueeze(0)  # (1, C, X, Y, Z)
    src_shape = np.array(values.shape[1:], dtype=np.float64)
    mapping = np.linalg.inv(np.asarray(values_affine, np.float64)) @ np.asarray(target_affine, np.float64)
    m = torch.as_tensor(mapping[:3], dtype=torch.float64, device=device)
    ys, zs = torch.meshgrid(torch.arange(target_shape[1], device=device, dtype=torch.float64),
                            torch.arange(target_shape[2], device=device, dtype=torch.float64), indexing="ij")
    out = torch.empty((values.shape[0], *target_shape), dtype=torch.float32, device=device)
    denom = torch.as_tensor(np.maximum(src_shape - 1, 1), dtype=torch.float64, device=device)
    for x0 in range(0, target_shape[0], slab):
        xs = torch.arange(x0, min(target_shape[0], x0 + slab), device=device, dtype=torch.float64)
        gx = xs.view(-1, 1, 1).expand(-1, *ys.shape)
        idx = torch.stack([gx, ys.expand_as(gx), zs.expand_as(gx), torch.ones_like(gx)], -1) @ m.T
        norm = (idx / denom) * 2 - 1  # (n, Y, Z, 3) in source index order (X, Y, Z)
        grid = norm.flip(-1).unsqueeze(0).float()  # grid_sample wants (z, y, x) ↔ (W, H, D)
        res = F.grid_sample(vals, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
        if fill_background and values.shape[0] > 1:
            inside = ((idx >= -0.5) & (idx <= torch.as_tensor(src_shape - 0.5, device=device))).all(-1)
            res[0] = torch.where(inside.float() > 0, res[0], torch.ones_like(res[0]))
        out[:, x0:x0 + len(xs)] = res
    return out
