"""Which learning rate the classification plan should take: a validation sweep on VesselMNIST3D.

The plan's classification recipe (DenseNet121 at the median case size, per-case z-score, flips and
nnU-Net's intensity augmentation, class-weighted cross-entropy, AdamW with weight decay 3e-5, one
epoch of linear warm-up then cosine decay to 1 %, batch 5) is re-written here in plain torch +
MONAI, so that a machine with a GPU and no medimg install can run it: the steps are the ones a
20-minute CPU budget gives (``--steps``, measured: about 1.4 s per DenseNet121 step of 5 64^3
images on the 2-core development machine), and every learning rate of ``--lrs`` is trained for
that many steps, one run per seed. The learning rate is chosen on the **validation** split
(mean over seeds of the validation AUROC at the epoch of lowest validation cross-entropy, the
checkpoint medimg keeps); test AUROC is printed beside it for the record, never to choose.

A reference run follows the hand-written MONAI script's recipe (Adam 1e-4, no augmentation, no
class weights, constant rate). It also prints DenseNet121's step time in float32 and bf16.

Data: ``vesselmnist3d_64.npz`` (``KarenMazaDelgado/Aneurysm-3DCNN``, ``DATA SET/``) with its
published split. Run: ``python benchmarks/sweep_cls_lr.py NPZ --out sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121
from sklearn.metrics import roc_auc_score


def load(npz: str, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    data = np.load(npz)
    out = {}
    for split in ("train", "val", "test"):
        x = torch.as_tensor(data[f"{split}_images"], dtype=torch.float32)[:, None]
        mean, std = x.mean(dim=(1, 2, 3, 4), keepdim=True), x.std(dim=(1, 2, 3, 4), keepdim=True)
        x = (x - mean) / std.clamp_min(1e-8)  # per-case z-score over the whole image
        out[split] = (x.to(device), torch.as_tensor(data[f"{split}_labels"].reshape(-1)).long().to(device))
    return out


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    for dim in (2, 3, 4):  # flips, p 0.5 per axis per image
        m = torch.rand(x.shape[0], generator=g, device=x.device) < 0.5
        x = torch.where(m[:, None, None, None, None], x.flip(dim), x)
    n = x.shape[0]
    for kind in ("shift", "scale", "noise"):  # nnU-Net rates: p 0.15 each
        m = (torch.rand(n, generator=g, device=x.device) < 0.15)[:, None, None, None, None]
        if kind == "shift":
            x = torch.where(m, x + (torch.rand(n, 1, 1, 1, 1, generator=g, device=x.device) - 0.5) * 0.2, x)
        elif kind == "scale":
            x = torch.where(
                m, x * (1 + (torch.rand(n, 1, 1, 1, 1, generator=g, device=x.device) - 0.5) * 0.2), x
            )
        else:
            x = torch.where(m, x + 0.1 * torch.randn(x.shape, generator=g, device=x.device), x)
    return x


@torch.no_grad()
def scores(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
) -> tuple[float, float]:
    net.eval()
    logits = torch.cat([net(x[i : i + 64]) for i in range(0, len(x), 64)]).float()
    net.train()
    ce = F.cross_entropy(logits, y, weight=weight).item()
    return float(roc_auc_score(y.cpu().numpy(), torch.softmax(logits, 1)[:, 1].cpu().numpy())), ce


def train(d: dict, lr: float, seed: int, steps: int, batch: int, recipe: str) -> dict[str, Any]:
    torch.manual_seed(seed)
    dev = d["train"][0].device
    g = torch.Generator(device=dev).manual_seed(seed)
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).to(dev)
    x, y = d["train"]
    counts = torch.bincount(y, minlength=2).float()
    medimg = recipe.startswith("medimg")  # ablations: medimg-nowarmup, medimg-noaug, medimg-noweights
    weight = (counts.sum() / (2 * counts)) if medimg and "noweights" not in recipe else None
    aug, warmup = medimg and "noaug" not in recipe, medimg and "nowarmup" not in recipe
    if medimg:
        opt: torch.optim.Optimizer = torch.optim.AdamW(net.parameters(), lr, weight_decay=3e-5)
    else:
        opt = torch.optim.Adam(net.parameters(), lr)
    per_epoch = math.ceil(len(x) / batch)

    def factor(step: int) -> float:
        if not medimg:
            return 1.0
        warm = per_epoch if warmup else 0
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    epochs, step, t0 = [], 0, time.perf_counter()
    while step < steps:
        order = torch.randperm(len(x), generator=g, device=dev)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb = augment(x[idx], g) if aug else x[idx]
            loss = F.cross_entropy(net(xb), y[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step >= steps:
                break
        val_auc, val_ce = scores(net, *d["val"], weight)
        test_auc, _ = scores(net, *d["test"], weight)
        epochs.append(
            {
                "step": step,
                "val_auroc": round(val_auc, 4),
                "val_ce": round(val_ce, 4),
                "test_auroc": round(test_auc, 4),
            }
        )
    best = min(epochs, key=lambda e: e["val_ce"])
    return {"recipe": recipe, "lr": lr, "seed": seed, "steps": steps, "seconds": round(time.perf_counter() - t0, 1),
            "kept": best, "epochs": epochs}  # fmt: skip


def step_time(d: dict, batch: int, bf16: bool) -> float:
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).to(d["train"][0].device)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x, y = d["train"][0][:batch], d["train"][1][:batch]
    for i in range(25):
        if i == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("npz")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=850)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-5,3e-3")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument(
        "--recipes", default="", help="comma-separated: only these recipes at the first lr, one seed"
    )
    p.add_argument("--stop-s", type=float, default=400, help="start no run after this many seconds")
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    d = load(a.npz, dev)
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "steps": a.steps,
        "batch": a.batch,
        "runs": [],
    }
    if a.recipes:
        out["step_s"] = {}
    else:
        out["step_s"] = {
            f"{k}_b{b}": round(step_time(d, b, k == "bf16"), 4)
            for k in ("fp32", "bf16")
            for b in (a.batch, 32)
        }
    print(json.dumps(out["step_s"]), flush=True)
    plan = [("script", 1e-4, 0)] + [
        ("medimg", float(lr), s) for s in range(a.seeds) for lr in a.lrs.split(",")
    ]
    if a.recipes:
        plan = [(r, float(a.lrs.split(",")[0]), 0) for r in a.recipes.split(",")]
    for recipe, lr, seed in plan:
        if time.perf_counter() - t0 > a.stop_s:
            out["stopped_before"] = [recipe, lr, seed]
            break
        r = train(d, lr, seed, a.steps, a.batch, recipe)
        print(json.dumps({k: r[k] for k in ("recipe", "lr", "seed", "seconds", "kept")}), flush=True)
        out["runs"].append(r)
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
