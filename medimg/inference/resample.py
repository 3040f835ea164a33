"""Put a prediction back on the source image's voxel grid, using only the two affines.

The network sees a reoriented, resampled (and possibly cropped) grid; the user needs
the answer on the grid of the scan they gave. Both grids are described by affines into
the same patient space, so the mapping is ``inv(A_pred) @ A_src`` — nothing is guessed.

Preprocessing reorients and rescales but keeps the scan's own direction cosines, so that
mapping is almost always an axis permutation with a scale and an offset per axis. Then
trilinear interpolation is separable: three 1-D interpolations instead of one 3-D
``grid_sample`` over every target voxel (the same numbers, a few times faster on large
scans; ``benchmarks/bench_infer.py`` measures it). Any other mapping uses ``grid_sample``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

_Slab = tuple[int, int, torch.Tensor]


def axis_aligned_mapping(
    mapping: np.ndarray, tol: float = 1e-6
) -> tuple[list[int], np.ndarray, np.ndarray] | None:
    """``(perm, scale, offset)`` when target axis ``t`` reads source axis ``perm[t]`` at ``scale*i + offset``.

    Returns ``None`` for a mapping that mixes axes (an oblique resampling).

    Example:
        >>> m = np.array([[0, 2.0, 0, 1], [0.5, 0, 0, 0], [0, 0, 1, -3], [0, 0, 0, 1]])
        >>> perm, scale, offset = axis_aligned_mapping(m)
        >>> perm, scale.tolist(), offset.tolist()
        ([1, 0, 2], [0.5, 2.0, 1.0], [0.0, 1.0, -3.0])
    """
    m = np.asarray(mapping, np.float64)
    lin = m[:3, :3]
    big = tol * max(1.0, float(np.abs(lin).max()))
    perm = []
    for t in range(3):
        rows = np.flatnonzero(np.abs(lin[:, t]) > big)
        if len(rows) != 1:
            return None
        perm.append(int(rows[0]))
    if sorted(perm) != [0, 1, 2]:
        return None
    scale = np.array([lin[perm[t], t] for t in range(3)])
    offset = np.array([m[perm[t], 3] for t in range(3)])
    return perm, scale, offset


def _lerp_axis(v: torch.Tensor, dim: int, coords: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``v`` along ``dim`` at float ``coords``; zero outside (like grid_sample)."""
    n = v.shape[dim]
    c = torch.as_tensor(coords, dtype=torch.float64, device=v.device)
    i0 = torch.floor(c)
    w1 = (c - i0).float()
    i0 = i0.long()
    i1 = i0 + 1
    w0 = torch.where((i0 >= 0) & (i0 < n), 1 - w1, torch.zeros_like(w1))
    w1 = torch.where((i1 >= 0) & (i1 < n), w1, torch.zeros_like(w1))
    shape = [1] * v.ndim
    shape[dim] = -1
    a = v.index_select(dim, i0.clamp(0, n - 1)) * w0.view(shape)
    a.addcmul_(v.index_select(dim, i1.clamp(0, n - 1)), w1.view(shape))
    return a


def _inside(coords: np.ndarray, n: int) -> np.ndarray:
    return (coords >= -0.5) & (coords <= n - 0.5)


def _separable_slabs(
    vals: torch.Tensor,
    perm: list[int],
    scale: np.ndarray,
    offset: np.ndarray,
    target_shape: tuple[int, int, int],
    fill_background: bool,
    slab: int,
) -> Iterator[_Slab]:
    v = vals.permute(0, *[p + 1 for p in perm])  # axis t+1 now holds source axis perm[t]
    src = v.shape[1:]
    coords = [scale[t] * np.arange(target_shape[t], dtype=np.float64) + offset[t] for t in range(3)]
    v = _lerp_axis(_lerp_axis(v, 3, coords[2]), 2, coords[1])  # (C, Sx, Ty, Tz): Y and Z once
    yz_in = torch.as_tensor(
        _inside(coords[1], src[1])[:, None] & _inside(coords[2], src[2])[None, :], device=vals.device
    )
    for x0 in range(0, target_shape[0], slab):
        x1 = min(target_shape[0], x0 + slab)
        cx = coords[0][x0:x1]
        lo = max(0, int(np.floor(cx.min())))  # only the source X planes this slab reads
        hi = min(src[0], int(np.floor(cx.max())) + 2)
        if hi <= lo:
            res = torch.zeros((v.shape[0], x1 - x0, *target_shape[1:]), dtype=v.dtype, device=v.device)
        else:
            res = _lerp_axis(v[:, lo:hi], 1, cx - lo)  # bounds of the slice = bounds of the source here
        if fill_background and v.shape[0] > 1:
            inside = torch.as_tensor(_inside(cx, src[0]), device=v.device)[:, None, None] & yz_in
            res[0] = torch.where(inside, res[0], torch.ones_like(res[0]))
        yield x0, x1, res


def _grid_sample_slabs(
    vals: torch.Tensor,
    mapping: np.ndarray,
    target_shape: tuple[int, int, int],
    mode: str,
    fill_background: bool,
    slab: int,
) -> Iterator[_Slab]:
    device = vals.device
    src_shape = np.array(vals.shape[1:], dtype=np.float64)
    m = torch.as_tensor(mapping[:3], dtype=torch.float64, device=device)
    ys, zs = torch.meshgrid(
        torch.arange(target_shape[1], device=device, dtype=torch.float64),
        torch.arange(target_shape[2], device=device, dtype=torch.float64),
        indexing="ij",
    )
    denom = torch.as_tensor(np.maximum(src_shape - 1, 1), dtype=torch.float64, device=device)
    for x0 in range(0, target_shape[0], slab):
        xs = torch.arange(x0, min(target_shape[0], x0 + slab), device=device, dtype=torch.float64)
        gx = xs.view(-1, 1, 1).expand(-1, *ys.shape)
        idx = torch.stack([gx, ys.expand_as(gx), zs.expand_as(gx), torch.ones_like(gx)], -1) @ m.T
        norm = (idx / denom) * 2 - 1  # (n, Y, Z, 3) in source index order (X, Y, Z)
        grid = norm.flip(-1).unsqueeze(0).float()  # grid_sample wants (z, y, x) ↔ (W, H, D)
        res = F.grid_sample(vals.unsqueeze(0), grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
        if fill_background and vals.shape[0] > 1:
            inside = ((idx >= -0.5) & (idx <= torch.as_tensor(src_shape - 0.5, device=device))).all(-1)
            res[0] = torch.where(inside, res[0], torch.ones_like(res[0]))
        yield x0, x0 + len(xs), res


def resampled_slabs(
    values: torch.Tensor,
    values_affine: np.ndarray,
    target: tuple[tuple[int, int, int], np.ndarray],
    mode: str,
    fill_background: bool,
    slab: int,
) -> Iterator[_Slab]:
    """Yield ``(x0, x1, slab_values)``: the ``target`` grid (shape, affine), ``slab`` X-planes at a time.

    The arguments are those of :func:`resample_to_grid`.

    Example:
        >>> p = torch.rand(2, 8, 8, 8)
        >>> [(x0, x1, tuple(s.shape)) for x0, x1, s in resampled_slabs(p, np.eye(4), ((8, 8, 8), np.eye(4)), "bilinear", True, 5)]
        [(0, 5, (2, 5, 8, 8)), (5, 8, (2, 3, 8, 8))]
    """
    target_shape, target_affine = target
    vals = values.float()
    mapping = np.linalg.inv(np.asarray(values_affine, np.float64)) @ np.asarray(target_affine, np.float64)
    aligned = axis_aligned_mapping(mapping) if mode == "bilinear" and min(vals.shape[1:]) > 1 else None
    if aligned is not None:
        yield from _separable_slabs(vals, *aligned, target_shape, fill_background, slab)
    else:
        yield from _grid_sample_slabs(vals, mapping, target_shape, mode, fill_background, slab)


def resample_to_grid(
    values: torch.Tensor,
    values_affine: np.ndarray,
    target_shape: tuple[int, int, int],
    target_affine: np.ndarray,
    mode: str = "bilinear",
    fill_background: bool = True,
    slab: int = 32,
) -> torch.Tensor:
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
    out = torch.empty((values.shape[0], *target_shape), dtype=torch.float32, device=values.device)
    for x0, x1, res in resampled_slabs(
        values, values_affine, (target_shape, target_affine), mode, fill_background, slab
    ):
        out[:, x0:x1] = res
    return out


def resample_labels(
    probs: torch.Tensor,
    probs_affine: np.ndarray,
    target_shape: tuple[int, int, int],
    target_affine: np.ndarray,
    slab: int = 32,
) -> np.ndarray:
    """Argmax label map (uint8) on the target grid of trilinearly resampled class probabilities.

    The same mask as ``resample_to_grid(...).argmax(0)``, computed slab by slab, so the
    full-resolution probabilities (C x 4 bytes per voxel) are never held at once.

    Example:
        >>> p = torch.softmax(torch.rand(3, 8, 8, 8), 0)
        >>> bool((resample_labels(p, np.eye(4), (8, 8, 8), np.eye(4)) == p.argmax(0).numpy()).all())
        True
    """
    out = np.empty(target_shape, dtype=np.uint8)
    for x0, x1, res in resampled_slabs(
        probs, probs_affine, (target_shape, target_affine), "bilinear", True, slab
    ):
        out[x0:x1] = argmax_channels(res).cpu().numpy()
    return out


def argmax_channels(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax(0)`` as uint8, by one elementwise pass per channel (first maximum wins, as argmax).

    ``torch.argmax`` over the leading, strided channel axis is several times slower on CPU
    than these contiguous passes when there are a few classes.

    Example:
        >>> v = torch.tensor([[0.2, 0.5, 0.1], [0.7, 0.5, 0.1], [0.1, 0.0, 0.8]])
        >>> argmax_channels(v).tolist()
        [1, 0, 2]
    """
    best = values[0].clone()
    idx = torch.zeros(values.shape[1:], dtype=torch.uint8, device=values.device)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        idx.masked_fill_(better, c)
        torch.maximum(best, values[c], out=best)
    return idx
