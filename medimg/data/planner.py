"""RAM/VRAM planner: choose cache mode, patch batch and sliding-window batch so a run fits the machine.

The planner measures instead of guessing where it can: the network's activation size
per input voxel comes from one forward pass on a small patch (forward hooks sum every
module's output), the machine's free RAM from ``/proc/meminfo``, free disk from
``shutil.disk_usage`` and free VRAM from ``torch.cuda.mem_get_info``. Every choice comes
with the reason, so a run can log what it chose and why (``Plan.explain``).
"""

from __future__ import annotations

import math
import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medimg.data.threads import ThreadPlan, plan_threads, usable_cores
from medimg.tasks import get_task

if TYPE_CHECKING:
    from medimg.config.schema import Workflow

GIB = 2**30
TRAIN_FACTOR = 3.0  # activations kept for backward + their gradients + optimiser/temporaries
INFER_FACTOR = 0.5  # no_grad: only part of the forward's outputs are alive at once (skips included)
CPU_MAX_SW_BATCH = 4  # 4 beat MONAI's default of 1 in benchmarks/bench_infer.py; more is unmeasured
GPU_MAX_SW_BATCH = 32


@dataclass
class Machine:
    """What the planner knows about the machine (bytes)."""

    ram_available: int
    disk_free: int
    cpu_count: int
    device: str = "cpu"
    vram_free: int | None = None

    @classmethod
    def detect(cls, cache_dir: str | Path = ".", device: str | None = None) -> Machine:
        """Read free RAM, disk and (on CUDA) VRAM now.

        Example:
            >>> m = Machine.detect()
            >>> m.ram_available > 0 and m.cpu_count >= 1
            True
        """
        import torch

        ram = _meminfo_available()
        d = Path(cache_dir)
        while not d.exists() and d != d.parent:
            d = d.parent
        disk = shutil.disk_usage(d).free
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        vram = None
        if device.startswith("cuda") and torch.cuda.is_available():
            vram = int(torch.cuda.mem_get_info(torch.device(device))[0])
        return cls(ram, disk, usable_cores(), device, vram)

    @property
    def model_memory(self) -> int:
        """Free memory where the network runs (VRAM on a GPU, RAM on CPU)."""
        return self.vram_free if self.vram_free is not None else self.ram_available


@dataclass
class Plan:
    """The planner's choices and why it made them."""

    cache_mode: str | None = None
    patch_batch: int | None = None
    sw_batch_size: int | None = None
    reasons: list[str] = field(default_factory=list)
    threads: ThreadPlan | None = None  # training's thread plan (its reason is among ``reasons``)

    def explain(self) -> str:
        """One line per choice, for logs and reports.

        Example:
            >>> Plan("memory", 2, 4, ["cache: fits"]).explain()
            'cache_mode=memory, patch_batch=2, sw_batch_size=4; cache: fits'
        """
        chosen = ", ".join(
            f"{k}={v}"
            for k, v in (
                ("cache_mode", self.cache_mode),
                ("patch_batch", self.patch_batch),
                ("sw_batch_size", self.sw_batch_size),
            )
            if v is not None
        )
        return f"{chosen}; " + "; ".join(self.reasons)


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * GIB  # unknown: assume a small machine


_MEASURED: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], float]] = weakref.WeakKeyDictionary()


def activation_bytes_per_voxel(net: Any, in_channels: int = 1, probe: int = 32) -> float:
    """Bytes of module outputs per input voxel in one forward pass (measured on a ``probe``^3 patch).

    Example:
        >>> from monai.networks.nets import UNet
        >>> net = UNet(3, 1, 2, channels=(8, 16), strides=(2,))
        >>> 50 < activation_bytes_per_voxel(net) < 2000
        True
    """
    import torch

    known = _MEASURED.get(net, {}).get((in_channels, probe))
    if known is not None:  # measured once per network: a cohort asks for every case
        return known
    total = 0

    def hook(_module: Any, _inp: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = net.training
    net.eval()  # the probe must not touch normalisation statistics
    try:
        param = next(net.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            net(torch.zeros(1, in_channels, probe, probe, probe, device=device))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    _MEASURED.setdefault(net, {})[(in_channels, probe)] = total / probe**3
    return total / probe**3


def choose_cache_mode(
    n_cases: int,
    case_voxels: int,
    machine: Machine,
    channels: int = 1,
    with_label: bool = True,
    budget_fraction: float = 0.5,
) -> tuple[str, str]:
    """``memory`` when the cached cohort fits ``budget_fraction`` of free RAM, else ``disk``, else ``none``.

    A cached case holds float32 images, a float32 label and the label's int64 foreground/
    background indices (for patch sampling).

    Example:
        >>> m = Machine(ram_available=8 * GIB, disk_free=100 * GIB, cpu_count=2)
        >>> choose_cache_mode(50, 100**3, m)[0], choose_cache_mode(2000, 100**3, m)[0]
        ('memory', 'disk')
    """
    per_voxel = 4 * channels + (4 + 8 if with_label else 0)
    need = n_cases * case_voxels * per_voxel
    budget = budget_fraction * machine.ram_available
    if need <= budget:
        return (
            "memory",
            f"cache: {need / GIB:.2f} GiB fits {budget_fraction:.0%} of {machine.ram_available / GIB:.1f} "
            "GiB free RAM -> memory",
        )
    if need <= 0.8 * machine.disk_free:
        return (
            "disk",
            f"cache: {need / GIB:.2f} GiB exceeds {budget / GIB:.1f} GiB RAM budget, fits free disk -> disk",
        )
    return "none", f"cache: {need / GIB:.2f} GiB fits neither RAM nor disk -> none (recomputed every epoch)"


def plan_training(
    n_cases: int,
    case_shape: tuple[int, ...],
    patch_size: tuple[int, ...],
    net: Any,
    machine: Machine | None = None,
    in_channels: int = 1,
    wanted_batch: int = 2,
    budget_fraction: float = 0.5,
) -> Plan:
    """Cache mode and the largest patch batch (up to ``wanted_batch``) that fits the model's memory.

    Example:
        >>> plan = plan_training(24, (52, 52, 50), (48, 48, 48), net)  # doctest: +SKIP
        >>> print(plan.explain())  # doctest: +SKIP
        cache_mode=memory, patch_batch=2; cache: 0.01 GiB fits ...; batch: ...
    """
    machine = machine or Machine.detect()
    mode, why = choose_cache_mode(n_cases, math.prod(case_shape), machine, in_channels, True, budget_fraction)
    per_patch = activation_bytes_per_voxel(net, in_channels) * math.prod(patch_size) * TRAIN_FACTOR
    budget = budget_fraction * machine.model_memory
    if mode == "memory" and machine.vram_free is None:  # the cache and the model share the RAM
        budget -= n_cases * math.prod(case_shape) * (4 * in_channels + 12)
    fit = max(1, int(budget // per_patch)) if per_patch > 0 else wanted_batch
    batch = min(wanted_batch, fit)
    why_b = (
        f"batch: {per_patch / GIB:.2f} GiB per patch (measured activations x{TRAIN_FACTOR:g}), "
        f"{budget / GIB:.1f} GiB budget on {machine.device} -> {batch}"
    )
    if batch < wanted_batch:
        why_b += f" (asked {wanted_batch}: lowered to fit)"
    return Plan(cache_mode=mode, patch_batch=batch, reasons=[why, why_b])


def plan_inference(
    volume_shape: tuple[int, ...],
    roi_size: tuple[int, ...],
    net: Any,
    out_channels: int,
    device: str | None = None,
    source_shape: tuple[int, ...] | None = None,
    machine: Machine | None = None,
    in_channels: int = 1,
    budget_fraction: float = 0.5,
) -> Plan:
    """Sliding-window batch from the memory left after the stitched output (and its resampling) is held.

    Args:
        volume_shape: preprocessed volume (the network's grid).
        roi_size: window size.
        net: the network (its activations are measured once on a small patch).
        out_channels: output classes (the stitched output holds them in float32, twice).
        device: where the network runs (default: what ``Machine.detect`` finds).
        source_shape: the input's own grid (resampling back works on slabs of it).
        machine: a known machine (default: detect now).
        in_channels: input channels.
        budget_fraction: share of free memory the plan may use.

    Example:
        >>> plan = plan_inference((179, 179, 150), (48, 48, 48), net, 3, device="cpu")  # doctest: +SKIP
        >>> plan.sw_batch_size  # doctest: +SKIP
        4
    """
    machine = machine or Machine.detect(device=device)
    vol = math.prod(volume_shape)
    stitched = vol * out_channels * 4 * 2 + vol * in_channels * 4  # output + weight map + input
    if source_shape is not None:
        stitched += math.prod(source_shape) * 1 + 32 * math.prod(source_shape[1:]) * out_channels * 4 * 3
    per_window = activation_bytes_per_voxel(net, in_channels) * math.prod(roi_size) * INFER_FACTOR
    budget = budget_fraction * machine.model_memory - (stitched if machine.vram_free is None else 0)
    cap = CPU_MAX_SW_BATCH if machine.vram_free is None else GPU_MAX_SW_BATCH
    fit = int(budget // per_window) if per_window > 0 else cap
    sw = max(1, min(cap, fit))
    why = (
        f"sliding window: {per_window / 2**20:.1f} MiB per window, {budget / GIB:.1f} GiB left on {machine.device} "
        f"after {stitched / GIB:.2f} GiB of stitched output -> sw_batch_size {sw} (cap {cap} on "
        f"{'CPU' if machine.vram_free is None else 'GPU'})"
    )
    if fit < 1:
        why += "; not even one window fits the budget: expect swapping or use a smaller roi_size"
    return Plan(sw_batch_size=sw, reasons=[why])


def preprocessed_voxels(path: str | Path, spacing: tuple[float, ...] | None, spatial_size: Any = None) -> int:
    """Voxels of one case after resampling to ``spacing`` (and resizing to ``spatial_size``).

    NIfTI files are measured from their header alone; a DICOM series is read once.

    Example:
        >>> preprocessed_voxels("ct.nii.gz", (2.0, 2.0, 2.0))  # doctest: +SKIP
        1045200
    """
    if spatial_size is not None:
        return int(math.prod(int(s) for s in spatial_size))
    p = Path(str(path).split("#")[0])
    if p.is_file() and p.name.endswith((".nii", ".nii.gz")):
        import numpy as np

        from medimg.io.load import read_nifti_geometry

        full_shape, affine = read_nifti_geometry(p)  # the header only, checked like the full read
        shape = tuple(full_shape[:3])
        zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    else:
        from medimg.io.load import load_image

        vol = load_image(p)
        shape, zooms = tuple(vol.shape[:3]), tuple(float(z) for z in vol.spacing[:3])
    if spacing is None:
        return int(math.prod(shape))
    return int(math.prod(max(1, round(n * z / s)) for n, z, s in zip(shape, zooms, spacing, strict=False)))


def plan_run(
    wf: Any,
    items: list[dict[str, Any]],
    net: Any,
    machine: Machine | None = None,
    budget_fraction: float = 0.5,
) -> Plan:
    """What a training run should use on this machine: cache mode, patch batch and threads.

    ``items`` are the cases the run caches (training and validation). The case size is the
    largest of three of them after preprocessing (header-only for NIfTI).
    ``preprocessing.cache.mode: auto`` becomes ``memory``, ``disk`` or ``none``; any other
    mode is kept. The patch batch (``optim.batch_size`` cases x
    ``augmentation.samples_per_volume`` patches for segmentation) is lowered, in whole
    cases, only when the measured activations would not fit, and the reason says so.

    Example:
        >>> plan = plan_run(wf, items, build_model(wf))  # doctest: +SKIP
        >>> plan.cache_mode, plan.patch_batch  # doctest: +SKIP
        ('memory', 4)
    """
    machine = machine or Machine.detect(wf.preprocessing.cache.dir or wf.outputs.dir)
    pp, aug = wf.preprocessing, wf.augmentation
    seg = get_task(wf.task).dense
    case_voxels = _largest_case_voxels(wf, items)
    per_case = aug.samples_per_volume if seg and aug.patch_size else 1
    # what one batch item holds: a patch, or the whole (resized) volume
    patch = tuple(aug.patch_size) if seg and aug.patch_size else (case_voxels,)
    plan = plan_training(
        len(items),
        (case_voxels,),
        patch,
        net,
        machine,
        wanted_batch=wf.optim.batch_size * per_case,
        budget_fraction=budget_fraction,
        in_channels=wf.data.channels,
    )
    if pp.cache.mode != "auto":
        plan.cache_mode = pp.cache.mode
        plan.reasons[0] = f"cache: {pp.cache.mode} (set in the workflow)"
    assert plan.patch_batch is not None
    cases = max(1, plan.patch_batch // per_case)
    if cases < wf.optim.batch_size:
        plan.reasons[1] += f"; optim.batch_size {wf.optim.batch_size} -> {cases}"
    plan.patch_batch = cases * per_case
    device = "cpu" if wf.trainer.accelerator == "cpu" else machine.device
    plan.threads = plan_threads(wf, device, machine.cpu_count)
    plan.reasons.append(plan.threads.explain())
    return plan


def window_roi(workflow: Workflow, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The sliding-window size: ``inference.roi_size``, else ``augmentation.patch_size``, else ``shape``.

    ``shape`` is the volume's spatial shape (one window covers it when neither size is set).
    Training validation, prediction and explanation all window through this one choice.

    Example:
        >>> window_roi(wf, (179, 179, 150))  # doctest: +SKIP
        (48, 48, 32)
    """
    roi = workflow.inference.roi_size or workflow.augmentation.patch_size or shape
    return tuple(int(s) for s in roi)


def sliding_window_plan(
    workflow: Workflow,
    net: Any,
    shape: tuple[int, ...],
    in_channels: int,
    out_channels: int,
    device: str,
    source_shape: tuple[int, ...] | None = None,
) -> tuple[tuple[int, ...], int, str]:
    """``(roi, sw_batch_size, why)`` for windowing a volume of spatial ``shape`` with ``net``.

    One plan for training validation, prediction and explanation: the window of :func:`window_roi`
    and the batch of :func:`plan_sw_batch` under ``inference.sw_batch_size``.
    """
    shape = tuple(int(s) for s in shape)
    roi = window_roi(workflow, shape)
    sw, why = plan_sw_batch(
        workflow.inference.sw_batch_size, net, shape, roi, out_channels, device, source_shape, in_channels
    )
    return roi, sw, why


def plan_sw_batch(
    setting: int | str,
    net: Any,
    volume_shape: tuple[int, ...],
    roi_size: tuple[int, ...],
    out_channels: int,
    device: str,
    source_shape: tuple[int, ...] | None = None,
    in_channels: int = 1,
) -> tuple[int, str]:
    """The sliding-window batch to use: ``setting`` if it is a number, else the planner's choice.

    Example:
        >>> plan_sw_batch(2, net, (96, 96, 96), (48, 48, 48), 3, "cpu")  # doctest: +SKIP
        (2, 'sw_batch_size=2 (set in the workflow)')
    """
    if setting != "auto":
        return int(setting), f"sw_batch_size={setting} (set in the workflow)"
    plan = plan_inference(
        volume_shape,
        roi_size,
        net,
        out_channels,
        device=device,
        source_shape=source_shape,
        in_channels=in_channels,
    )
    assert plan.sw_batch_size is not None
    return plan.sw_batch_size, plan.explain()


def _sample(images: list[str], k: int = 3) -> list[str]:
    """Up to ``k`` images spread over the list (first, middle, last...)."""
    if len(images) <= k:
        return list(images)
    return [images[round(i * (len(images) - 1) / (k - 1))] for i in range(k)]


def resolve_cache_mode(
    wf: Any, items: list[dict[str, Any]], machine: Machine | None = None
) -> tuple[str, str]:
    """``preprocessing.cache.mode: auto`` for these dataset items: the mode and why.

    Example:
        >>> resolve_cache_mode(wf, [{"image": "ct.nii.gz", "label": "seg.nii.gz"}])  # doctest: +SKIP
        ('memory', 'cache: 0.01 GiB fits 50% of 20.1 GiB free RAM -> memory')
    """
    if not items:
        return "memory", "cache: no cases -> memory"
    machine = machine or Machine.detect(wf.preprocessing.cache.dir or wf.outputs.dir)
    seg = get_task(wf.task).dense
    return choose_cache_mode(len(items), _largest_case_voxels(wf, items), machine, 1, seg)


def _largest_case_voxels(wf: Any, items: list[dict[str, Any]]) -> int:
    """Voxels of the largest of three sampled cases after the workflow's preprocessing."""
    pp = wf.preprocessing
    size = None if get_task(wf.task).dense else pp.spatial_size
    images = _sample([str(it["image"]) for it in items])
    return max((preprocessed_voxels(p, pp.spacing, size) for p in images), default=1)
