"""Training steps of medimg vs the hand-written *cached* MONAI script (issue 24), same network.

The baseline is the loop of ``benchmarks/baselines/monai_cls_script.py`` and
``monai_seg_script.py``: ``CacheDataset`` of the deterministic half, the random half after
it, ``monai.data.DataLoader`` (``num_workers=0``), the network as built, Adam, the default
(contiguous) memory layout, the collated MetaTensor straight into the network. medimg is
what ``medimg run`` trains with: ``make_dataset``/``make_loader`` with the planner's thread
plan (``medimg.data.planner.plan_threads``), the task's Lightning module under a Lightning
``Trainer`` (``channels_last: auto``); the step is timed by a callback from the end of one
batch to the end of the next (fetching the batch included, as in the script's step). Both sides build the same network from the same seed and use Adam at the same
rate; the random halves differ where the scripts do (medimg: flips on three axes; the
classification script: one flip and a 90-degree rotation).

Rows: DenseNet121 and ResNet-18 at 64^3 (batch 8), the residual UNet 16..256 at 96^3 patches
(2 cases x 2 patches per step), on synthetic NIfTI cases. Each row: steps/s of both, ratio,
peak RSS of both, and the equivalence check: the same network from the same initial weights
stepped N times by the script's loop and by medimg's module on the same fixed batches,
loss after N steps on both (contiguous vs channels_last_3d convolutions: equal to float
rounding). Rounds alternate; each figure is the median step. ``--quick``: one round, 2 steps.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "train_cached"


def write_cases(root: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> list[dict[str, Any]]:
    """``n`` NIfTI cases (1 mm, RAS): noise with a bright sphere in every other one, and its mask.

    Example:
        >>> items = write_cases(Path("/tmp/c"), 2, (32, 32, 32))  # doctest: +SKIP
        >>> sorted(items[0])
        ['case_key', 'class', 'image', 'label']
    """
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    items = []
    for i in range(n):
        centre = rng.uniform(0.3, 0.7, 3) * np.array(shape)
        mask = (((grid - centre) / (np.array(shape) / 6)) ** 2).sum(-1) <= 1.0
        img = rng.normal(0.0, 1.0, shape).astype(np.float32) + 2.0 * mask * (i % 2)
        img[mask & (i % 2 == 0)] += 0.5
        paths = root / f"case{i:04d}_image.nii.gz", root / f"case{i:04d}_label.nii.gz"
        nib.save(nib.Nifti1Image(img, np.eye(4)), paths[0])
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), paths[1])
        items.append({"image": str(paths[0]), "label": str(paths[1]), "class": i % 2, "case_key": f"c{i}"})
    return items


def cls_workflow(model: str, batch: int = 8) -> Any:
    """The classification recipe both sides share (whole 64^3 images, [0, 1] intensities, Adam 1e-4)."""
    from benchmarks.common import one_epoch_workflow

    return one_epoch_workflow(
        "bench_train_cached",
        "bench_cls",
        "classification",
        {"manifest": "unused.csv", "label_column": "class", "num_classes": 2},
        {
            "spacing": None,
            "intensity": {"mode": "minmax"},
            "spatial_size": [64, 64, 64],
            "cache": {"mode": "memory"},
        },
        augmentation={"patch_size": None, "flip_prob": 0.5, "intensity": {"prob": 0.0}},
        model={"name": model},
        optim={
            "optimizer": "adam",
            "lr": 1e-4,
            "weight_decay": 0.0,
            "batch_size": batch,
            "scheduler": "constant",
        },
    )


def seg_workflow(patch: int = 96) -> Any:
    """The segmentation recipe: 1 mm, z-score on the foreground, 2 cases x 2 patches, DiceCE, Adam 1e-3."""
    from benchmarks.common import one_epoch_workflow

    return one_epoch_workflow(
        "bench_train_cached",
        "bench_seg",
        "segmentation",
        {"manifest": "unused.csv", "labels": {"0": "background", "1": "sphere"}},
        {
            "spacing": [1.0, 1.0, 1.0],
            "intensity": {"mode": "zscore", "nonzero": True},
            "cache": {"mode": "memory"},
        },
        augmentation={
            "patch_size": [patch] * 3,
            "samples_per_volume": 2,
            "pos_fraction": 0.5,
            "flip_prob": 0.5,
            "intensity": {"prob": 0.0},
        },
        model={
            "name": "unet",
            "params": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
        },
        optim={
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 0.0,
            "batch_size": 2,
            "scheduler": "constant",
            "loss": "dice_ce",
        },
    )


def script_dataset(wf: Any, items: list[dict[str, Any]]) -> Any:
    """The baseline scripts' ``CacheDataset`` (their transforms, copied)."""
    from monai import transforms as T
    from monai.data import CacheDataset

    if wf.task == "classification":
        data = [{"image": it["image"], "label": it["class"]} for it in items]
        chain = [
            T.LoadImaged(keys="image"),
            T.EnsureChannelFirstd(keys="image"),
            T.ScaleIntensityd(keys="image"),
            T.EnsureTyped(keys="image"),
            T.RandFlipd(keys="image", prob=0.5, spatial_axis=0),
            T.RandRotate90d(keys="image", prob=0.5, spatial_axes=(0, 1)),
        ]
    else:
        keys, patch = ["image", "label"], wf.augmentation.patch_size
        data = [{"image": it["image"], "label": it["label"]} for it in items]
        chain = [
            T.LoadImaged(keys=keys),
            T.EnsureChannelFirstd(keys=keys),
            T.Orientationd(keys=keys, axcodes="RAS"),
            T.Spacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest")),
            T.NormalizeIntensityd(keys="image", nonzero=True),
            T.EnsureTyped(keys=keys),
            T.SpatialPadd(keys=keys, spatial_size=patch),
            T.RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=patch,
                pos=1,
                neg=1,
                num_samples=wf.augmentation.samples_per_volume,
                image_key="image",
            ),
        ] + [T.RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in range(3)]
    ds = CacheDataset(data, T.Compose(chain), cache_rate=1.0, num_workers=0, progress=False)
    ds.transform.set_random_state(seed=wf.seed)
    return ds


class ScriptLoop:
    """The scripts' training loop: MetaTensor in, contiguous layout, Adam."""

    def __init__(self, wf: Any, ds: Any, net: Any) -> None:
        import torch
        from monai.data import DataLoader
        from monai.losses import DiceCELoss

        self.seg = wf.task == "segmentation"
        self.net = net
        self.opt = torch.optim.Adam(net.parameters(), wf.optim.lr)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True) if self.seg else torch.nn.CrossEntropyLoss()
        self.loader = DataLoader(ds, batch_size=wf.optim.batch_size, shuffle=True, num_workers=0)
        self.it = iter(self.loader)

    def step(self, batch: dict[str, Any] | None = None) -> float:
        if batch is None:
            batch = next(self.it, None)
            if batch is None:
                self.it = iter(self.loader)
                batch = next(self.it)
        self.opt.zero_grad()
        y = batch["label"] if self.seg else batch["label"].long().view(-1)
        loss = self.loss_fn(self.net(batch["image"]), y)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def medimg_steps(module: Any, loader: Any, steps: int) -> list[float]:
    """``steps`` training steps of ``module`` under Lightning, each timed from the end of the one before.

    A step's time is the whole cycle: fetching the batch (waiting for the prefetch thread, or
    preparing it in the training thread), Lightning's hooks, the forward, backward and optimiser
    step, as the script's step is timed with its data.
    """
    import lightning.pytorch as pl

    from medimg.training.stages.fit import quiet_trainer

    times: list[float] = []

    class Clock(pl.Callback):
        last: float | None = None

        def on_train_batch_end(self, *args: Any) -> None:
            now = time.perf_counter()
            if self.last is not None:  # the first batch (iterator start) is not counted
                times.append(now - self.last)
            self.last = now

    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=steps + 1,  # the first batch (iterator start) is not counted
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        callbacks=[Clock()],
    )
    trainer.fit(module, loader)
    return times


def equivalence(wf: Any, script_ds: Any, steps: int) -> dict[str, float]:
    """Loss after ``steps`` steps on the same fixed batches, script loop vs medimg's module."""
    import torch
    from monai.data import DataLoader

    from medimg.training.tasks import task_class

    torch.manual_seed(1)
    module = task_class(wf.task)(wf.model_dump(mode="json"), steps_per_epoch=steps)
    import copy

    base = ScriptLoop(wf, script_ds, copy.deepcopy(module.net))
    batches = [
        b for _, b in zip(range(steps), DataLoader(script_ds, batch_size=wf.optim.batch_size), strict=False)
    ]
    base_loss = [base.step(b) for b in batches][-1]
    opt = torch.optim.Adam(module.net.parameters(), wf.optim.lr)
    module.on_fit_start()  # channels_last_3d as in a run
    med_loss = 0.0
    for b in batches:
        opt.zero_grad()
        x = b["image"]
        y = b["label"] if wf.task == "segmentation" else b["label"].long().view(-1)
        loss = module.loss(module(x), y)
        loss.backward()
        opt.step()
        med_loss = float(loss.detach())
    return {"loss_script": base_loss, "loss_medimg": med_loss, "abs_diff": abs(base_loss - med_loss)}


def measure(
    wf: Any, items: list[dict[str, Any]], label: str, rounds: int, steps: int, variant: bool = False
) -> dict[str, Any]:
    """Interleaved rounds of ``steps`` script steps and ``steps`` medimg steps; the row.

    ``variant``: medimg with the other prefetch choice than its thread plan's is timed too
    (``step_s_medimg_other_prefetch``), so a run says what the plan's choice is worth.
    """
    import os

    import torch

    from benchmarks.common import PeakMemory, row
    from medimg.data.datasets import make_dataset, make_loader
    from medimg.data.threads import plan_threads
    from medimg.training.tasks import task_class

    t0 = time.perf_counter()
    sds = script_dataset(wf, items)
    script_cache_s = time.perf_counter() - t0
    threads = plan_threads(wf, "cpu")
    threads.apply()
    t0 = time.perf_counter()
    mds = make_dataset(
        wf,
        [
            {
                "image": it["image"],
                "label": it["label"] if wf.task == "segmentation" else it["class"],
                "case_key": it["case_key"],
            }
            for it in items
        ],
        train=True,
    )
    medimg_cache_s = time.perf_counter() - t0
    mds.transform.set_random_state(seed=wf.seed)
    loader = make_loader(mds, wf.optim.batch_size, True, wf.trainer.num_workers, wf.seed, threads.prefetch)
    other = make_loader(mds, wf.optim.batch_size, True, wf.trainer.num_workers, wf.seed, not threads.prefetch)
    torch.manual_seed(0)
    module = task_class(wf.task)(wf.model_dump(mode="json"), steps_per_epoch=10**6)
    import copy

    base = ScriptLoop(wf, sds, copy.deepcopy(module.net))
    base.step()  # warm-up (allocator, first-call costs) on both sides
    medimg_steps(module, loader, 1)
    sides = ("script", "medimg", "other") if variant else ("script", "medimg")
    res: dict[str, list[float]] = {k: [] for k in sides}
    peaks = dict.fromkeys(sides, 0.0)
    loads = []
    for r in range(rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for side in sides if r % 2 == 0 else sides[::-1]:
            with PeakMemory() as peak:
                if side == "script":
                    for _ in range(steps):
                        t = time.perf_counter()
                        base.step()
                        res[side].append(time.perf_counter() - t)
                else:
                    res[side] += medimg_steps(module, loader if side == "medimg" else other, steps)
            peaks[side] = max(peaks[side], peak.mib)
    eq = equivalence(wf, sds, 2 if steps <= 2 else 3)
    med, scr = statistics.median(res["medimg"]), statistics.median(res["script"])
    return row(
        NAME,
        f"training step, {label}",
        "steps/s",
        1 / med,
        "hand-written cached MONAI script (CacheDataset, DataLoader, MetaTensor in, contiguous, Adam)",
        1 / scr,
        higher_is_better=True,
        goal={"classification": 1.2, "segmentation": 1.5}[wf.task],
        step_s_medimg=med,
        step_s_baseline=scr,
        peak_rss_mib_medimg=peaks["medimg"],
        peak_rss_mib_baseline=peaks["script"],
        cache_s_medimg=medimg_cache_s,
        cache_s_baseline=script_cache_s,
        steps=len(res["medimg"]),
        load_avg=loads,
        threads=threads.explain(),
        **({"step_s_medimg_other_prefetch": statistics.median(res["other"])} if variant else {}),
        check=f"loss after {2 if steps <= 2 else 3} steps on the same batches: script {eq['loss_script']:.5f}, "
        f"medimg {eq['loss_medimg']:.5f} (|diff| {eq['abs_diff']:.1e})",
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    """DenseNet121 and ResNet-18 at 64^3 (batch 8), residual UNet 16..256 at 96^3 patches (2x2)."""
    rounds, steps = (1, 2) if quick else (2, 3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_cached_") as tmp:
        cls_items = write_cases(Path(tmp) / "cls", 16 if quick else 32, (64, 64, 64))
        models = ("densenet121",) if quick else ("densenet121", "resnet18")
        for model in models:
            label = f"{model}, 64^3, batch 8, cpu"
            rows.append(
                measure(
                    cls_workflow(model), cls_items, label, rounds, steps, not quick and model == "densenet121"
                )
            )
        patch = 48 if quick else 96
        seg_items = write_cases(Path(tmp) / "seg", 4 if quick else 8, (patch + 16,) * 3, seed=1)
        rows.append(
            measure(
                seg_workflow(patch),
                seg_items,
                f"residual UNet 16..256, {patch}^3 patches, 2 cases x 2 patches, cpu",
                rounds,
                steps,
                not quick,
            )
        )
    return rows


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
