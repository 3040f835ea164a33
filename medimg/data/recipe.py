"""A study workflow planned from a dataset fingerprint, the machine and an optional time budget.

:func:`plan_workflow` turns a fingerprint (:mod:`medimg.data.fingerprint`) into a complete
workflow, every derived value with the one-line reason it was chosen; :meth:`Recipe.yaml`
writes it as YAML a person can read and edit, the reasons as comments. The plan is a pure
function of the fingerprint, the task, the :class:`~medimg.data.planner.Machine` and the
budget: the same inputs give the same text. The rules are in :mod:`medimg.data.recipe_rules`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np

from medimg.data.planner import GIB, Machine
from medimg.data.recipe_rules import (
    dynunet_filters,
    dynunet_patch_bytes,
    fit_patch,
    round_up,
    sliding_windows,
    target_spacing,
)
from medimg.errors import DataError

SHORT_BUDGET_S = 3600.0  # under an hour on a CPU: fewer voxels per step, no affine augmentation
CPU_PATCH_VOXELS = {"short": 48**3, "medium": 64**3, "long": 96**3}
GPU_PATCH_VOXELS = 128**3
# DynUNet width on a CPU (first level, cap): a short budget halves it (docs/plan.md "Segmentation width").
CPU_FILTERS = {"short": (8, 128), "medium": (16, 256), "long": (16, 256)}
WIDTH_EVIDENCE = (
    "on MSD Hippocampus at 10 CPU minutes, 8..64 made 2941 steps to 16..128's 917 and reached "
    "validation Dice 0.852 to 0.838"
)
# A short CPU budget rounds a patch axis down to its stride multiple where that keeps 85 % of it:
# the padding rounding up adds costs steps (docs/plan.md "Patch rounding on a short CPU budget").
CPU_SHORT_ROUND_DOWN = 0.15
PATCH_EVIDENCE = "on MSD Hippocampus at 10 CPU minutes, 32x48x32 made 4264 steps to 40x56x40's 2941 and reached validation Dice 0.857 to 0.852"
# Flip TTA where a median case's windows hold at most the voxels of this machine's largest patch:
# inference then costs no more than 4 windows of that patch (docs/plan.md "Flip TTA").
TTA_WINDOW_VOXELS = {"cpu": CPU_PATCH_VOXELS["long"], "gpu": GPU_PATCH_VOXELS}
TTA_EVIDENCE = (
    "on MSD Hippocampus validation Dice 0.857 with the flips, 0.853 without (one 40x56x40 window a "
    "case), 0.860 and 0.858 (eight 32x48x32 windows)"
)
CLS_INPUT_VOXELS = {"cpu": 64**3, "gpu": 128**3}
# Classification choices measured on VesselMNIST3D's validation split (benchmarks/sweep_cls_lr.py, the
# steps a 20-minute budget gives on 2 CPU cores; docs/plan.md "Classification").
CLS_LR = 1e-4
CLS_LR_EVIDENCE = (
    "the best of 3e-5..3e-3 by validation AUROC on VesselMNIST3D (3e-3, the segmentation rate, diverged)"
)
CLS_NET_EVIDENCE = (
    "in 20 CPU minutes on VesselMNIST3D the script's DenseNet121 reached test AUROC 0.89 where a small "
    "max-pooled CNN (patchnet) reached 0.72"
)
NO_CLS_AUGMENTATION = (
    "off: a CPU budget under an hour gives a few epochs of whole images, too few to overfit; "
    "on VesselMNIST3D validation AUROC was 0.906 without augmentation, 0.858 with it"
)
STEPS_WITHOUT_BUDGET = 10000
CLASS_WEIGHTS_EVIDENCE = (
    "on VesselMNIST3D (11% aneurysm) it kept the validation AUROC (within noise) while unweighted runs "
    "called every case negative at p 0.5 (docs/plan.md)"
)


@dataclass
class Recipe:
    """A planned workflow (plain data, schema order) and why each value was chosen (dotted keys)."""

    workflow: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, why: str = "") -> None:
        """Set ``a.b.c`` to ``value`` (creating sections), with its reason."""
        *sections, last = key.split(".")
        node = self.workflow
        for s in sections:
            node = node.setdefault(s, {})
        node[last] = value
        if why:
            self.reasons[key] = why

    def get(self, key: str) -> Any:
        """The value at a dotted key."""
        node: Any = self.workflow
        for s in key.split("."):
            node = node[s]
        return node

    def yaml(self) -> str:
        """The workflow as commented YAML: each derived value followed by ``# why``."""
        lines = [f"# {h}" for h in self.header]
        _render(self.workflow, self.reasons, "", 0, lines)
        return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    """A YAML flow value: JSON for strings, lists, booleans and null; floats PyYAML reads as floats."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return json.dumps(value)


def _render(node: dict[str, Any], reasons: dict[str, str], prefix: str, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for key, value in node.items():
        path = f"{prefix}{key}"
        why = f"  # {reasons[path]}" if path in reasons else ""
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:{why}")
            _render(value, reasons, f"{path}.", depth + 1, lines)
        else:
            lines.append(f"{pad}{key}: {_scalar(value) if value != {} else '{}'}{why}")


def _budget_kind(budget_s: float | None) -> str:
    if budget_s is None:
        return "long"
    return "short" if budget_s < SHORT_BUDGET_S else "medium" if budget_s < 4 * SHORT_BUDGET_S else "long"


def _case_arrays(fp: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    cases = fp.get("cases") or []
    if not cases:
        raise DataError(f"fingerprint of {fp.get('source', 'the data')!r}: no cases")
    spacings = np.asarray([c["spacing"] for c in cases], dtype=float)
    shapes = np.asarray([c["shape"] for c in cases], dtype=float)
    return spacings, shapes


def plan_workflow(
    fp: dict[str, Any],
    task: str,
    machine: Machine,
    budget_s: float | None = None,
    manifest: str = "manifest.csv",
    label_column: str = "label",
    image_column: str = "image",
    name: str = "planned",
    fingerprint_path: str | None = None,
) -> Recipe:
    """The workflow for the fingerprinted data on ``machine`` within ``budget_s`` seconds (None: no budget).

    Example:
        >>> recipe = plan_workflow(fp, "segmentation", Machine(16 * GIB, 100 * GIB, 2), 1200)  # doctest: +SKIP
        >>> recipe.get("model.name"), recipe.reasons["preprocessing.spacing"]  # doctest: +SKIP
        ('dynunet', 'median spacing of the cases ...')
    """
    from medimg.data.fingerprint import fingerprint_hash
    from medimg.tasks import get_task

    dense = get_task(task).dense
    spacings, shapes = _case_arrays(fp)
    r = Recipe({"name": name, "task": task, "seed": 0})
    r.header = [
        f"planned by `medimg plan` from {fp.get('source', '')} ({fp['n_cases']} cases, "
        f"fingerprint sha256 {fingerprint_hash(fp)[:12]})",
        f"for {_machine_text(machine)}"
        + (f", a training budget of {budget_s:g} s" if budget_s is not None else ", no time budget"),
        "every derived value says why after '#'; edit freely, `medimg run --check` validates",
    ]
    _data(r, fp, task, manifest, label_column, image_column)
    if fingerprint_path:
        r.set("data.fingerprint", fingerprint_path, "what this plan was derived from; logged with the run")
    spacing, why = target_spacing(spacings, shapes)
    median_shape = [float(v) for v in np.median(shapes * spacings / np.asarray(spacing), axis=0)]
    (_segmentation if dense else _classification)(r, fp, machine, budget_s, Grid(spacing, why, median_shape))
    _trainer(r, fp, machine, budget_s)
    r.set("outputs.dir", f"runs/{name}")
    return r


def _machine_text(m: Machine) -> str:
    where = f"{m.vram_free / GIB:.0f} GiB free VRAM" if m.vram_free is not None else "the CPU"
    return f"{m.device} ({where}, {m.ram_available / GIB:.0f} GiB free RAM, {m.cpu_count} cores)"


def _data(
    r: Recipe, fp: dict[str, Any], task: str, manifest: str, label_column: str, image_column: str
) -> None:
    r.set("data.manifest", manifest)
    if label_column != "label":
        r.set("data.label_column", label_column)
    if image_column != "image":
        r.set("data.image_column", image_column)
    if "labels" in fp:
        if not fp["labels"]:
            raise DataError(
                f"{fp.get('source', 'data')}: no labels in the sampled cases; segmentation needs label masks "
                "(a manifest with a label column; a DICOM root has none: `medimg scan` it and add them)"
            )
        found = {int(k): v["name"] for k, v in fp["labels"].items()}
        labels = {0: "background"} | {i: found.get(i, f"label_{i}") for i in range(1, max(found) + 1)}
        r.set("data.labels", labels, f"label values found in the sampled label maps ({len(found)} classes)")
    else:
        classes = fp.get("classes") or {}
        n = max(2, max((int(k) for k in classes), default=1) + 1)
        counts = ", ".join(f"{k}: {v}" for k, v in classes.items())
        r.set("data.num_classes", n, f"classes in the manifest ({counts})")


def _intensity(r: Recipe, fp: dict[str, Any]) -> None:
    ins = fp["intensity"]
    if fp["modality"] == "CT":
        lo, hi = ins["percentiles"]["p00_5"], ins["percentiles"]["p99_5"]
        r.set(
            "preprocessing.intensity",
            {"mode": "clip_zscore", "window": [lo, hi], "stats": [ins["mean"], ins["std"]]},
            f"CT ({fp['modality_from']}): clip to the {ins['region']} 0.5/99.5 percentiles, then z-score "
            "with its mean and std (nnU-Net's CT normalisation)",
        )
        return
    binary = ins.get("constant_nonzero_fraction", 0.0)
    if binary > 0.5:  # a z-score over the non-zero voxels would map every one of them to 0
        r.set(
            "preprocessing.intensity",
            {"mode": "zscore", "nonzero": False},
            f"per-case z-score over the whole image: in {binary:.0%} of the sampled cases every non-zero "
            "voxel holds one value (binary images), which a z-score over non-zero voxels maps to 0",
        )
        return
    nonzero = bool(ins.get("zero_fraction_median", 0.0) > 0.25)
    r.set(
        "preprocessing.intensity",
        {"mode": "zscore", "nonzero": nonzero},
        f"{fp['modality']} ({fp['modality_from']}): per-case z-score"
        + (
            f" over non-zero voxels ({ins['zero_fraction_median']:.0%} of the voxels are 0)"
            if nonzero
            else ""
        ),
    )


class Grid(NamedTuple):
    """The target grid a plan starts from: spacing (mm), why, and the median case on it (voxels)."""

    spacing: list[float]
    why: str
    median_shape: list[float]


def _segmentation(
    r: Recipe, fp: dict[str, Any], machine: Machine, budget_s: float | None, grid: Grid
) -> None:
    spacing, why_spacing, median_shape = grid
    gpu = machine.vram_free is not None
    r.set("preprocessing.orientation", "RAS")
    r.set("preprocessing.spacing", spacing, why_spacing)
    _intensity(r, fp)
    kind = _budget_kind(budget_s)
    cap = GPU_PATCH_VOXELS if gpu else CPU_PATCH_VOXELS[kind]
    memory = 0.5 * machine.model_memory
    filters_base, filters_cap = (32, 320) if gpu else CPU_FILTERS[kind]
    round_down = CPU_SHORT_ROUND_DOWN if not gpu and kind == "short" else 0.0
    for _ in range(20):  # shrink the voxel budget until one patch fits the memory
        patch, kernels, strides = fit_patch(median_shape, spacing, cap, round_down_within=round_down)
        filters = dynunet_filters(len(strides), filters_base, filters_cap)
        per_patch = dynunet_patch_bytes(patch, strides, filters)
        if per_patch <= memory or cap <= 16**3:
            break
        cap = int(cap * 0.7)
    voxels, median_voxels = math.prod(patch), math.prod(median_shape)
    why_cap = f"{'GPU' if gpu else 'CPU, ' + kind + ' budget'}: at most {round(cap ** (1 / 3))}^3 voxels"
    r.set("augmentation.patch_size", patch, _patch_reason(patch, median_shape, why_cap, round_down > 0))
    batch = _batch_size(fp, cap, voxels, median_voxels, memory, per_patch)
    r.set("augmentation.samples_per_volume", 1, "one patch per case per step: a batch mixes cases (nnU-Net)")
    r.set(
        "augmentation.pos_fraction",
        *_pos_fraction(fp, median_voxels * math.prod(spacing) / 1000.0),
    )
    _augmentation(r, gpu, kind)
    _dynunet(r, kernels, strides, filters, filters_base, filters_cap)
    r.set(
        "optim.batch_size",
        batch,
        f"{batch} patches of {voxels} voxels: ~{per_patch / 2**20:.0f} MiB each (estimate) in "
        f"{memory / GIB:.1f} GiB; at most 5% of the dataset's voxels per step (nnU-Net); "
        "the run's planner measures the network and lowers it if needed",
    )
    r.set(
        "optim.loss",
        "dice_ce",
        "Dice + cross-entropy (nnU-Net)"
        + (
            ", summed over the deep-supervision outputs (weights 1, 1/2, 1/4, ...)"
            if len(strides) > 3
            else ""
        ),
    )
    overlap = 0.5 if gpu else 0.25
    r.set("inference.overlap", overlap, "sliding-window overlap: 0.5 on a GPU (nnU-Net), 0.25 on a CPU")
    r.set("inference.sw_batch_size", "auto")
    windows = sliding_windows(median_shape, patch, overlap)
    _tta(r, windows, math.prod(patch), TTA_WINDOW_VOXELS["gpu" if gpu else "cpu"])
    _optimiser(r, gpu, budget_s)


def _patch_reason(patch: list[int], median_shape: Sequence[float], why_cap: str, rounds_down: bool) -> str:
    """Why the patch: the median case, the voxel cap, the strides, and rounding down where it did."""
    why = f"median resampled case {[round(v) for v in median_shape]} ({why_cap}), a multiple of the strides"
    if not rounds_down or all(p >= m for p, m in zip(patch, median_shape, strict=True)):
        return why
    return (
        f"{why}, rounded down where that keeps {1 - CPU_SHORT_ROUND_DOWN:.0%} of an axis ({PATCH_EVIDENCE})"
    )


def _tta(r: Recipe, windows: int, patch_voxels: int, largest: int) -> None:
    """Flip TTA (nnU-Net mirrors at inference) where a median case's ``windows`` of ``patch_voxels``
    hold at most ``largest`` voxels (the machine's largest patch): the flips then cost no more than
    four windows of that patch a case."""
    small = windows * patch_voxels <= largest
    what = f"a median case is {windows} window{'s' if windows > 1 else ''} ({windows * patch_voxels} voxels)"
    bound = f"one {round(largest ** (1 / 3))}^3 patch"
    r.set(
        "inference.tta_flips",
        small,
        f"mean over the image and its 3 axis flips (nnU-Net mirrors at inference): {what}, at most "
        f"{bound}, so {4 * windows} windows a case; {TTA_EVIDENCE}"
        if small
        else f"off: {what}, more than {bound}; flips would take 4x the inference time",
    )


def _batch_size(
    fp: dict[str, Any], cap: int, voxels: int, median_voxels: float, memory: float, per_patch: float
) -> int:
    """Patches per step: 2-8 by the voxel cap, at most 5% of the dataset's voxels, within the memory."""
    want = max(2, min(8, (2 * cap) // voxels))
    data_cap = max(2, int(0.05 * fp["n_cases"] * median_voxels // voxels))
    fits = max(1, int(memory // per_patch))
    return max(1, min(want, data_cap, fits))


def _dynunet(
    r: Recipe, kernels: Any, strides: Any, filters: Any, filters_base: int, filters_cap: int
) -> None:
    """The network: nnU-Net's DynUNet with the kernels, strides and filters planned for the patch."""
    r.set(
        "model.name", "dynunet", "DynUNet, nnU-Net's network: kernels and strides from the patch and spacing"
    )
    heads = len(strides) - 3  # nnU-Net: every decoder output but the full one and the lowest one
    params: dict[str, Any] = {"kernel_size": kernels, "strides": strides, "filters": filters}
    if heads >= 1:
        params |= {"deep_supervision": True, "deep_supr_num": heads}
        why_ds = f"deep supervision on the {heads} decoder output(s) above the lowest (nnU-Net)"
    else:
        params["deep_supervision"] = False
        why_ds = (
            f"no deep supervision ({len(strides)} levels: no decoder output between the full and the lowest)"
        )
    r.set(
        "model.params",
        params,
        f"{len(strides) - 1} poolings, axes pooled while within 2x the finest spacing and >= 4 voxels; "
        f"filters from {filters_base} doubling to {filters_cap}"
        + (f" (a short CPU budget: {WIDTH_EVIDENCE})" if filters_base == CPU_FILTERS["short"][0] else "")
        + f"; {why_ds}",
    )


def _pos_fraction(fp: dict[str, Any], case_ml: float) -> tuple[float, str]:
    labels = fp.get("labels") or {}
    fg_ml = sum(v["volume_ml"]["median"] for v in labels.values())
    share = fg_ml / case_ml if case_ml > 0 else 0.0
    if share < 0.05:
        return 0.67, f"foreground is {share:.1%} of a case: two of three patches centred on it"
    return 0.33, f"foreground is {share:.0%} of a case: one of three patches centred on it (nnU-Net)"


def _augmentation(r: Recipe, gpu: bool, kind: str, off: str | None = None) -> None:
    """nnU-Net's augmentation; ``off``: the reason every probability is 0 instead."""
    affine = off is None and (gpu or kind != "short")
    r.set("augmentation.flip_prob", 0.0 if off else 0.5, off or "mirroring along each axis (nnU-Net)")
    r.set(
        "augmentation.spatial",
        {"prob": 0.2 if affine else 0.0, "rotate_deg": 15.0, "scale": 0.15},
        "off (above)"
        if off
        else "rotation and scaling (nnU-Net: p 0.2)"
        if affine
        else "off: a random affine costs CPU time per patch, and a short budget gains more from steps",
    )
    r.set(
        "augmentation.intensity",
        {"prob": 0.0 if off else 0.15, "shift": 0.1, "scale": 0.1, "noise_std": 0.1},
        "off (above)" if off else "brightness, contrast and Gaussian noise at nnU-Net's rates",
    )


def _optimiser(r: Recipe, gpu: bool, budget_s: float | None, classification: bool = False) -> None:
    few_steps = not gpu or (budget_s is not None and budget_s < 2 * SHORT_BUDGET_S)
    if classification:
        r.set("optim.optimizer", "adamw", "AdamW: converges in few steps")
        r.set("optim.lr", CLS_LR, CLS_LR_EVIDENCE)
        r.set("optim.weight_decay", 3e-05)
    elif few_steps:
        r.set("optim.optimizer", "adamw", "AdamW converges in fewer steps than SGD: a CPU or a short budget")
        r.set("optim.lr", 0.003)
        r.set("optim.weight_decay", 3e-05)
    else:
        r.set("optim.optimizer", "sgd", "SGD, Nesterov momentum 0.99 (nnU-Net), for a long GPU budget")
        r.set("optim.lr", 0.01)
        r.set("optim.weight_decay", 3e-05)
    r.set("optim.scheduler", "cosine", "cosine decay to 1% of lr; with a budget it ends with the budget")
    r.set("optim.warmup_epochs", 1, "one epoch of linear warm-up")


def _classification(
    r: Recipe, fp: dict[str, Any], machine: Machine, budget_s: float | None, grid: Grid
) -> None:
    spacing, why_spacing, median_shape = grid
    gpu = machine.vram_free is not None
    cap = CLS_INPUT_VOXELS["gpu" if gpu else "cpu"]
    factor = max(1.0, (math.prod(median_shape) / cap) ** (1 / 3))
    if factor > 1.0:
        spacing = [round(s * factor, 4) for s in spacing]
        median_shape = [n / factor for n in median_shape]
        why_spacing += f"; coarsened {factor:.2f}x so a case fits {round(cap ** (1 / 3))}^3 voxels"
    size = [max(32, v) for v in round_up(median_shape, 8)]  # DenseNet121 halves an axis 5 times
    r.set("preprocessing.orientation", "RAS")
    r.set("preprocessing.spacing", spacing, why_spacing)
    _intensity(r, fp)
    r.set(
        "preprocessing.spatial_size",
        size,
        "median resampled case, rounded up to a multiple of 8 (at least 32)",
    )
    r.set("augmentation.patch_size", None, "classification reads whole images")
    kind = _budget_kind(budget_s)
    off = None if gpu or kind != "short" else NO_CLS_AUGMENTATION
    _augmentation(r, gpu, kind, off)
    n, voxels = fp["n_cases"], math.prod(size)
    r.set(
        "model.name",
        "densenet121",
        f"MONAI's 3D DenseNet121 for {n} cases of {size} voxels; {CLS_NET_EVIDENCE}",
    )
    _class_balance(r, fp)
    batch = max(2, min(32, int(0.5 * machine.model_memory // max(1, voxels * 4 * 2000))))
    r.set(
        "optim.batch_size", batch, f"whole images of {voxels} voxels; the run's planner lowers it if needed"
    )
    _optimiser(r, gpu, budget_s, classification=True)


IMBALANCE_RATIO = 1.5  # the largest class over the smallest above which the loss is class-weighted


def _class_balance(r: Recipe, fp: dict[str, Any]) -> None:
    """``optim.class_weights: auto`` when the classes are imbalanced (largest > 1.5x the smallest)."""
    counts = [int(v) for v in (fp.get("classes") or {}).values()]
    if len(counts) < 2 or max(counts) <= IMBALANCE_RATIO * min(counts):
        r.set("optim.class_weights", "none", f"classes balanced within {IMBALANCE_RATIO}x: unweighted loss")
        return
    n, k = sum(counts), min(counts)
    r.set(
        "optim.class_weights",
        "auto",
        f"the smallest class has {k} of {n} cases ({k / n:.1%}): cross-entropy weighted n / (classes x count) of "
        f"the training split; {CLASS_WEIGHTS_EVIDENCE}",
    )


def _trainer(r: Recipe, fp: dict[str, Any], machine: Machine, budget_s: float | None) -> None:
    from medimg.config.duration import format_duration

    gpu = machine.vram_free is not None
    if budget_s is not None:
        r.set(
            "trainer.max_time",
            format_duration(budget_s),
            "the budget: the schedule and validation cadence are fitted to it at run time",
        )
        r.set("trainer.val_every_n_epochs", 1, "the budget spaces validation to <= 10% of the time")
    else:
        train = max(1, round(fp["n_cases"] * 0.6))
        per_epoch = max(1, math.ceil(train / r.get("optim.batch_size")))
        epochs = min(1000, max(20, math.ceil(STEPS_WITHOUT_BUDGET / per_epoch)))
        r.set("trainer.max_epochs", epochs, f"about {STEPS_WITHOUT_BUDGET} steps ({per_epoch} per epoch)")
        r.set("trainer.val_every_n_epochs", max(1, epochs // 20), "about 20 validations")
    r.set("trainer.accelerator", "gpu" if gpu else "cpu", f"planned for {machine.device}")
    workers = min(4, max(0, machine.cpu_count - 2))
    r.set("trainer.num_workers", workers, f"{machine.cpu_count} cores: the main process keeps two")


@dataclass
class PlannedDataset:
    """What :func:`plan_dataset` wrote: the recipe, the fingerprint and where."""

    recipe: Recipe
    fingerprint: dict[str, Any]
    workflow_path: Path
    fingerprint_path: Path


def plan_dataset(
    data: str | Path,
    task: str,
    out: str | Path,
    budget: str | None = None,
    machine: Machine | None = None,
    fingerprint_path: str | Path | None = None,
    label_column: str = "label",
    image_column: str = "image",
    max_intensity_cases: int = 16,
) -> PlannedDataset:
    """Fingerprint ``data``, plan its workflow for ``machine`` (default: this one) and write both.

    The workflow's ``data.manifest`` is the manifest's absolute path; ``name`` comes from the
    workflow's file name. The fingerprint goes to ``fingerprint_path`` (default: beside the
    workflow, ``<name>.fingerprint.json``).

    Raises:
        ConfigError: ``budget`` is not a duration such as 20m.
        DataError: ``data`` is missing or unreadable (naming it).

    Example:
        >>> planned = plan_dataset("data/synth/manifest.csv", "segmentation", "seg.yaml", "20m")  # doctest: +SKIP
        >>> planned.recipe.get("trainer.max_time")  # doctest: +SKIP
        '20m'
    """
    import re

    from medimg.config.duration import parse_duration
    from medimg.config.load import load_workflow
    from medimg.data.fingerprint import fingerprint_dataset, write_fingerprint
    from medimg.errors import ConfigError
    from medimg.io.atomic import atomic_write_text

    try:
        budget_s = parse_duration(budget) if budget is not None else None
    except ValueError as exc:
        raise ConfigError(f"--budget: {exc}") from None
    out = Path(out)
    fp = fingerprint_dataset(data, task, label_column, image_column, max_intensity_cases)
    source = Path(data)
    if source.is_dir() and not (source / "dataset.json").is_file():  # a DICOM folder: images only
        _refuse_dicom_folder(fp, source, out, fingerprint_path)
    manifest = source / "dataset.json" if source.is_dir() else source
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", out.name.split(".")[0]) or "planned"
    fp_path = Path(fingerprint_path) if fingerprint_path else out.with_name(f"{name}.fingerprint.json")
    recipe = plan_workflow(
        fp, task, machine or Machine.detect(out.parent), budget_s, str(manifest.resolve()),
        label_column, image_column, name, str(fp_path.resolve()),
    )  # fmt: skip
    write_fingerprint(fp, fp_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, recipe.yaml())
    load_workflow(out)  # the plan must pass the strict schema it is written for
    return PlannedDataset(recipe, fp, out, fp_path)


def _refuse_dicom_folder(
    fp: dict[str, Any], source: Path, out: Path, fingerprint_path: str | Path | None
) -> NoReturn:
    """A DICOM folder has images only: write its fingerprint, then refuse to plan on it.

    Raises:
        DataError: Always, naming the fingerprint and the way to a manifest with labels.
    """
    from medimg.data.fingerprint import write_fingerprint

    fp_path = Path(fingerprint_path) if fingerprint_path else out.with_name(f"{out.stem}.fingerprint.json")
    write_fingerprint(fp, fp_path)
    raise DataError(
        f"{source}: a DICOM folder has no labels or classes to plan a study on (its fingerprint is in "
        f"{fp_path}); run `medimg scan {source}`, add a label column to its manifest, then plan the manifest"
    )
