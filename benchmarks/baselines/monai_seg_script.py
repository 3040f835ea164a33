"""Segmentation the MONAI tutorial way, cached: CacheDataset, residual UNet, DiceCE, Adam.

Usage::

    python -m benchmarks.baselines.monai_seg_script MANIFEST.csv --budget-s 1200 --out result.json

MANIFEST has ``case_key,image,label,split`` (split: train/val/test). Images are resampled to
``--spacing`` mm in RAS, z-scored over non-zero voxels; training draws ``--samples`` patches of
``--patch`` per case (positive:negative 1:1) with random flips. Training stops when its budget (training time, after caching) is spent;
the model after the last full epoch predicts the test cases by sliding window (Gaussian
blending), and the JSON holds the per-case Dice per label (in the resampled space) and the
validation curve ``[(elapsed_s, mean val Dice), ...]``.
"""

from __future__ import annotations

import argparse
import csv
import time

import torch
from monai.data import CacheDataset, DataLoader, decollate_batch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.transforms import (
    AsDiscrete,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    Spacingd,
    SpatialPadd,
)
from monai.utils import set_determinism

from benchmarks.baselines.budget import cache_splits, train_for_budget, write_result

RECIPE = "MONAI tutorial, cached: CacheDataset, UNet 16..256 res2, DiceCE, Adam"


def read_manifest(path: str) -> dict[str, list[dict[str, str]]]:
    splits: dict[str, list[dict[str, str]]] = {"train": [], "val": [], "test": []}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            splits[row["split"]].append(
                {"case": row["case_key"], "image": row["image"], "label": row["label"]}
            )
    return splits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--budget-s", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    p.add_argument("--patch", type=int, nargs=3, default=(32, 32, 32))
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-every", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    set_determinism(seed=a.seed)
    splits = read_manifest(a.manifest)
    keys = ["image", "label"]
    deterministic = [
        LoadImaged(keys=keys),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=a.spacing, mode=("bilinear", "nearest")),
        NormalizeIntensityd(keys="image", nonzero=True),
        EnsureTyped(keys=keys),
    ]
    train_tf = Compose(
        deterministic
        + [
            SpatialPadd(keys=keys, spatial_size=a.patch),  # cases smaller than a patch
            RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=a.patch,
                pos=1,
                neg=1,
                num_samples=a.samples,
                image_key="image",
            ),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
        ]
    )
    eval_tf = Compose(deterministic)
    train_ds, val_ds, test_ds = cache_splits(splits, train_tf, eval_tf)
    cache_s = time.perf_counter() - t0
    t_fit = time.perf_counter()  # the budget is training time, as medimg's trainer.max_time
    loader = DataLoader(train_ds, batch_size=a.batch, shuffle=True, num_workers=0)
    net = UNet(3, 1, a.classes, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), a.lr)
    post_pred, post_label = AsDiscrete(argmax=True, to_onehot=a.classes), AsDiscrete(to_onehot=a.classes)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(x, a.patch, 4, net, overlap=0.5, mode="gaussian")

    def dice_per_case(ds: CacheDataset) -> list[list[float]]:
        net.eval()
        metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
        with torch.no_grad():
            for item in DataLoader(ds, batch_size=1):
                out = predict(item["image"])
                metric(
                    [post_pred(o) for o in decollate_batch(out)],
                    [post_label(y) for y in decollate_batch(item["label"])],
                )
        net.train()
        return metric.aggregate().tolist()

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        opt.zero_grad()
        loss = loss_fn(net(batch["image"]), batch["label"])
        loss.backward()
        opt.step()

    curve: list[tuple[float, float]] = []

    def validate(epoch: int) -> None:
        if epoch % a.val_every == 0 and splits["val"]:
            per_case = dice_per_case(val_ds)
            mean = sum(sum(r) / len(r) for r in per_case) / len(per_case)
            curve.append((round(time.perf_counter() - t_fit, 1), round(mean, 4)))

    fit = train_for_budget(loader, train_step, t_fit, a.budget_s, validate)
    test = dice_per_case(test_ds)
    per_case = {c["case"]: [round(v, 6) for v in d] for c, d in zip(splits["test"], test, strict=True)}
    write_result(a, RECIPE, cache_s, fit, curve, per_case)


if __name__ == "__main__":
    main()
