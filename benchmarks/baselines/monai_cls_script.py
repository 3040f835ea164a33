"""Classification the MONAI tutorial way, cached: CacheDataset, DenseNet121, cross-entropy, Adam.

Usage::

    python -m benchmarks.baselines.monai_cls_script MANIFEST.csv --target aneurysm --budget-s 1200 --out r.json

MANIFEST has ``case_key,image,<target>,split`` (relative image paths are read from the
manifest's folder). Intensities are scaled to [0, 1]; training adds random flips and 90-degree
rotations. Training stops when its budget (training time, after caching) is spent; the model after the last full epoch scores the test
cases, and the JSON holds each test case's positive-class probability and label, and the
validation curve ``[(elapsed_s, val AUROC), ...]``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader
from monai.metrics import ROCAUCMetric
from monai.networks.nets import DenseNet121
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    RandFlipd,
    RandRotate90d,
    ScaleIntensityd,
)
from monai.utils import set_determinism

from benchmarks.baselines.budget import cache_splits, train_for_budget, write_result

RECIPE = "MONAI tutorial, cached: CacheDataset, DenseNet121, cross-entropy, Adam"


def read_manifest(path: str, target: str) -> dict[str, list[dict[str, object]]]:
    root = Path(path).parent
    splits: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            image = Path(row["image"]) if Path(row["image"]).is_absolute() else root / row["image"]
            splits[row["split"]].append(
                {"case": row["case_key"], "image": str(image), "label": int(row[target])}
            )
    return splits


def transforms() -> tuple[Compose, Compose]:
    """The training pipeline (scaled to [0, 1], random flips and 90-degree rotations) and the evaluation one."""
    deterministic = [
        LoadImaged(keys="image"),
        EnsureChannelFirstd(keys="image"),
        ScaleIntensityd(keys="image"),
        EnsureTyped(keys="image"),
    ]
    train_tf = Compose(
        deterministic
        + [
            RandFlipd(keys="image", prob=0.5, spatial_axis=0),
            RandRotate90d(keys="image", prob=0.5, spatial_axes=(0, 1)),
        ]
    )
    return train_tf, Compose(deterministic)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--target", required=True)
    p.add_argument("--budget-s", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    set_determinism(seed=a.seed)
    splits = read_manifest(a.manifest, a.target)
    train_tf, eval_tf = transforms()
    train_ds, val_ds, test_ds = cache_splits(splits, train_tf, eval_tf)
    cache_s = time.perf_counter() - t0
    t_fit = time.perf_counter()  # the budget is training time, as medimg's trainer.max_time
    loader = DataLoader(train_ds, batch_size=a.batch, shuffle=True, num_workers=0)
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(net.parameters(), a.lr)

    def probabilities(ds: CacheDataset) -> list[float]:
        net.eval()
        out: list[float] = []
        with torch.no_grad():
            for batch in DataLoader(ds, batch_size=16):
                out += torch.softmax(net(batch["image"]), 1)[:, 1].tolist()
        net.train()
        return out

    def auroc(ds: CacheDataset, probs: list[float]) -> float:
        metric = ROCAUCMetric()
        metric(torch.tensor(probs), torch.tensor([int(c["label"]) for c in ds.data]))
        return float(metric.aggregate())

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        opt.zero_grad()
        loss = loss_fn(net(batch["image"]), batch["label"].long())
        loss.backward()
        opt.step()

    curve: list[tuple[float, float]] = []

    def validate(epoch: int) -> None:
        if splits["val"]:
            curve.append(
                (round(time.perf_counter() - t_fit, 1), round(auroc(val_ds, probabilities(val_ds)), 4))
            )

    fit = train_for_budget(loader, train_step, t_fit, a.budget_s, validate)
    test = probabilities(test_ds)
    per_case = {
        str(c["case"]): {"p": round(p, 6), "label": int(c["label"])}
        for c, p in zip(splits["test"], test, strict=True)
    }
    write_result(a, RECIPE, cache_s, fit, curve, per_case)


if __name__ == "__main__":
    main()
