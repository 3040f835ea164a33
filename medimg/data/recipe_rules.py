"""The rules a plan derives its numbers with (nnU-Net's, where nnU-Net has one), each a pure function.

Target spacing and its anisotropy rule, the patch that fits a voxel budget, the DynUNet
kernels and strides for a patch and spacing, and an estimate of a DynUNet's training
memory per patch. :mod:`medimg.data.recipe` combines them into a workflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ANISOTROPY = 3.0  # nnU-Net: an axis is "low resolution" when its spacing is > 3x the finest
MIN_FEATURE = 4  # nnU-Net: no axis is pooled below 4 voxels
MAX_POOLS = 5


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """Median spacing per axis; nnU-Net's rule for one coarse axis; and why.

    When the coarsest axis is more than 3x the finest (spacing) and, resampled to the median,
    has fewer than a third of the voxels of the other axes (voxels), the coarse axis takes the
    10th percentile of its spacings instead (never finer than the other axes), so that the
    network does not train on grossly interpolated slices of the thickest scans.

    Example:
        >>> sp = np.array([[0.7, 0.7, 5.0], [0.7, 0.7, 5.0], [0.8, 0.8, 3.0], [0.7, 0.7, 5.0]])
        >>> target_spacing(sp, np.array([[512, 512, 40]] * 4))[0]
        [0.7, 0.7, 3.6]
    """
    target = np.median(spacings, axis=0)
    sizes = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    aniso_spacing = target[worst] > ANISOTROPY * min(target[others])
    aniso_voxels = sizes[worst] * ANISOTROPY < min(sizes[others])
    median = [round(float(v), 4) for v in target]
    if not (aniso_spacing and aniso_voxels):
        why = f"median spacing of the cases (max/min {max(median) / min(median):.2f} <= 3 or not few slices)"
        return median, why
    p10 = float(np.percentile(spacings[:, worst], 10))
    low = max(p10, float(max(target[others])) + 1e-5)
    target[worst] = low
    out = [round(float(v), 4) for v in target]
    why = (
        f"median spacing, but axis {worst} is {median[worst] / min(median):.1f}x coarser with few voxels "
        f"(nnU-Net's anisotropy rule): its 10th percentile {out[worst]:g} mm instead of the median {median[worst]:g}"
    )
    return out, why


def dynunet_topology(
    patch: list[float], spacing: list[float], max_pools: int = MAX_POOLS
) -> tuple[list[list[int]], list[list[int]]]:
    """Kernels and strides (nnU-Net's rule) for a patch and its spacing.

    An axis is pooled (stride 2) while its current spacing is at most twice the finest and
    it keeps at least 4 voxels; its kernel is 3 once its spacing is within twice the finest,
    1 before (a coarse axis first convolves in-plane only). A patch too small for two poolings
    gets levels of stride 1 (MONAI's DynUNet has at least three).

    Example:
        >>> dynunet_topology([64, 64, 12], [0.7, 0.7, 5.0])
        ([[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 1]])
    """
    size, sp = [float(p) for p in patch], [float(s) for s in spacing]
    kernels = [[3 if s <= 2 * min(sp) else 1 for s in sp]]
    strides = [[1, 1, 1]]
    for _ in range(max_pools):
        finest = min(sp)
        stride = [2 if s <= 2 * finest and n / 2 >= MIN_FEATURE else 1 for s, n in zip(sp, size, strict=True)]
        if stride == [1, 1, 1]:
            break
        size = [n / st for n, st in zip(size, stride, strict=True)]
        sp = [s * st for s, st in zip(sp, stride, strict=True)]
        strides.append(stride)
        previous = kernels[-1]
        kernels.append([3 if k == 3 or s <= 2 * min(sp) else 1 for k, s in zip(previous, sp, strict=True)])
    while len(strides) < 3:  # DynUNet needs three levels: a small patch gets unpooled ones
        strides.append([1, 1, 1])
        kernels.append([3, 3, 3])
    return kernels, strides


def divisors(strides: list[list[int]]) -> list[int]:
    """Per axis, the product of the strides: a patch axis must be a multiple of it."""
    return [math.prod(s[i] for s in strides) for i in range(3)]


def fit_patch(
    median_shape: list[float],
    spacing: list[float],
    max_voxels: int,
    min_size: int = 8,
    round_down_within: float = 0.0,
) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """The patch (and its topology): the median shape, shrunk until it holds at most ``max_voxels``.

    The patch starts at the median resampled case (one patch sees a whole typical case, as
    nnU-Net), and while it is over budget the axis with the largest extent in mm shrinks by
    10 %, so the patch stays as close to a cube in mm as the budget allows. Each axis is then
    rounded up to a multiple of its total stride, or down where that keeps at least
    ``1 - round_down_within`` of it (a short CPU budget: no step spent on padding).

    Example:
        >>> fit_patch([36, 50, 35], [1.0, 1.0, 1.0], 48**3)[0]
        [40, 56, 40]
        >>> fit_patch([36, 50, 35], [1.0, 1.0, 1.0], 48**3, round_down_within=0.15)[0]
        [32, 48, 32]
    """
    patch = [max(float(min_size), float(n)) for n in median_shape]
    for _ in range(200):
        kernels, strides = dynunet_topology(patch, spacing)
        rounded = [_to_stride(p, d, round_down_within) for p, d in zip(patch, divisors(strides), strict=True)]
        if math.prod(rounded) <= max_voxels or all(p <= min_size for p in patch):
            return rounded, kernels, strides
        mm = [p * s if p > min_size else 0.0 for p, s in zip(patch, spacing, strict=True)]
        axis = int(np.argmax(mm))
        patch[axis] = max(float(min_size), patch[axis] * 0.9)
    return rounded, kernels, strides


def _to_stride(extent: float, stride: int, round_down_within: float) -> int:
    """``extent`` rounded to a multiple of ``stride``: down if that keeps ``1 - round_down_within`` of it."""
    down = int(extent // stride) * stride
    if down >= stride and down >= (1.0 - round_down_within) * extent:
        return down
    return round_up([extent], stride)[0]


def dynunet_filters(levels: int, base: int, cap: int) -> list[int]:
    """Feature maps per level: ``base`` doubling per level, at most ``cap`` (nnU-Net: 32, 320).

    Example:
        >>> dynunet_filters(5, 16, 256)
        [16, 32, 64, 128, 256]
    """
    return [min(base * 2**i, cap) for i in range(levels)]


def dynunet_patch_bytes(patch: list[int], strides: list[list[int]], filters: list[int]) -> float:
    """Estimated training memory of one patch: float32 activations of every level, x3 for backward.

    Per level the encoder keeps about 6 feature maps (two conv, norm, activation) and the
    decoder about 9 (upsampling, the concatenation at twice the width, two conv blocks), so
    15 maps of the level's width and size; ``TRAIN_FACTOR`` (3) covers their gradients and
    temporaries, as the run-time planner does. The run's planner measures the real network
    (``medimg.data.planner.plan_run``) and lowers the batch if this estimate was optimistic.

    Example:
        >>> round(dynunet_patch_bytes([32, 32, 32], [[1, 1, 1], [2, 2, 2]], [16, 32]) / 2**20, 1)
        112.5
    """
    from medimg.data.planner import TRAIN_FACTOR

    voxels, total = float(math.prod(patch)), 0.0
    for stride, width in zip(strides, filters, strict=True):
        voxels /= math.prod(stride)
        total += 15 * width * voxels * 4
    return total * TRAIN_FACTOR


def sliding_windows(shape: Sequence[float], patch: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding-window inference runs over a ``shape`` case with ``patch``.

    Per axis: one window where the case fits, else one every ``patch * (1 - overlap)`` voxels
    until the last reaches the end.

    Example:
        >>> sliding_windows([35.0, 50.0, 36.0], [32, 48, 32], 0.25)  # MSD Hippocampus, short CPU plan
        8
        >>> sliding_windows([35.0, 50.0, 36.0], [40, 56, 40], 0.25)
        1
    """
    count = 1
    for extent, side in zip(shape, patch, strict=True):
        step = max(1, int(side * (1 - overlap)))
        count *= 1 if math.ceil(extent) <= side else math.ceil((math.ceil(extent) - side) / step) + 1
    return count


def round_up(values: Any, multiple: int) -> list[int]:
    """Each value rounded up to a multiple of ``multiple``.

    Example:
        >>> round_up([28.0, 61.2, 64], 8)
        [32, 64, 64]
    """
    return [int(math.ceil(float(v) / multiple) * multiple) for v in values]


def balanced_class_weights(counts: list[int]) -> list[float]:
    """Cross-entropy weight per class: ``n / (classes x count)`` (scikit-learn's ``balanced``).

    Every class then carries the same total weight, and a case of the average class weighs 1, so
    the loss keeps the scale of the unweighted one. A class with no case gets weight 1 (it adds
    nothing to the loss either way), rounded to six significant digits so the resolved workflow
    reads the same on every machine.

    Example:
        >>> balanced_class_weights([1185, 150])
        [0.563291, 4.45]
    """
    from medimg.data.fingerprint import round_sig

    n, present = sum(counts), [c for c in counts if c > 0]
    return [round_sig(n / (len(present) * c)) if c > 0 else 1.0 for c in counts]
