"""Where the classification training step goes (issue 24): one process, parts interleaved.

``python -m benchmarks.profile_cls_step [--cases 32] [--rounds 2] [--steps 2]`` on VesselMNIST3D
64^3 (``~/.cache/medimg-data/vesselmnist3d_64``), DenseNet121, batch 8. Each part is timed in
every round, parts alternating, and the median per step is printed as JSON lines:

* ``batch_script`` / ``batch_medimg``: one batch from the cached script's DataLoader / medimg's
  loader (augmentation + collation), alone;
* ``net_*``: forward + backward + optimiser step of the same network on a fixed batch, as a
  MetaTensor (``meta``) or a plain tensor (``plain``), contiguous or ``channels_last_3d``,
  torch with its default threads;
* ``step_script``: the script's loop (its loader, MetaTensor in, contiguous);
* ``step_medimg_loop``: medimg's loader (ThreadDataLoader) with a plain loop (channels_last);
* ``step_medimg_lightning``: medimg's loader and ``ClassificationTask`` under Lightning;
* ``step_medimg_sync``: medimg's loader made synchronous (no augmentation thread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

VESSEL = Path.home() / ".cache/medimg-data/vesselmnist3d_64"


def workflow(manifest: Path, batch: int) -> Any:
    from benchmarks.common import one_epoch_workflow

    return one_epoch_workflow(
        "profile",
        "profile_cls",
        "classification",
        {"manifest": str(manifest), "label_column": "aneurysm", "num_classes": 2},
        {
            "spacing": None,
            "intensity": {"mode": "zscore"},
            "spatial_size": [64, 64, 64],
            "cache": {"mode": "memory"},
        },
        augmentation={
            "patch_size": None,
            "flip_prob": 0.5,
            "spatial": {"prob": 0.0},
            "intensity": {"prob": 0.15, "shift": 0.1, "scale": 0.1, "noise_std": 0.1},
        },
        model={"name": "densenet121"},
        optim={"optimizer": "adam", "lr": 1e-4, "batch_size": batch, "scheduler": "constant"},
    )


def main(argv: list[str] | None = None) -> None:
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.networks.nets import DenseNet121

    from benchmarks.baselines.monai_cls_script import transforms
    from medimg.data.datasets import make_dataset, make_loader

    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args(argv)
    import pandas as pd

    df = pd.read_csv(VESSEL / "manifest.csv")
    df = df[df.split == "train"].head(a.cases)
    items = [
        {"image": str(VESSEL / r.image), "label": int(r.aneurysm), "case_key": r.case_key}
        for r in df.itertuples()
    ]
    t0 = time.perf_counter()
    script_ds = CacheDataset(
        [{"image": it["image"], "label": it["label"]} for it in items],
        transforms()[0],  # the cached script's training pipeline
        cache_rate=1.0,
        num_workers=0,
        progress=False,
    )
    script_cache_s = time.perf_counter() - t0
    wf = workflow(VESSEL / "manifest.csv", a.batch)
    t0 = time.perf_counter()
    med_ds = make_dataset(wf, items, train=True, mode="memory")
    med_cache_s = time.perf_counter() - t0
    print(json.dumps({"cache_s": {"script": round(script_cache_s, 2), "medimg": round(med_cache_s, 2)}}))

    script_dl = DataLoader(script_ds, batch_size=a.batch, shuffle=True, num_workers=0)
    med_dl = make_loader(med_ds, a.batch, True, 0, 0)

    def batches(dl: Any) -> Any:
        while True:
            yield from dl

    script_it, med_it = batches(script_dl), batches(med_dl)
    fixed = next(iter(script_dl))
    torch.manual_seed(0)
    nets = {
        "contig": DenseNet121(spatial_dims=3, in_channels=1, out_channels=2),
        "cl": DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).to(
            memory_format=torch.channels_last_3d
        ),
    }
    opts = {k: torch.optim.Adam(n.parameters(), 1e-4) for k, n in nets.items()}
    ce = torch.nn.CrossEntropyLoss()

    def step(layout: str, x: Any, y: Any) -> None:
        if layout == "cl":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        opts[layout].zero_grad()
        ce(nets[layout](x), y.long().view(-1)).backward()
        opts[layout].step()

    def net_part(layout: str, plain: bool) -> Any:
        def f() -> None:
            x = fixed["image"].as_tensor() if plain else fixed["image"]
            step(layout, x, torch.as_tensor(fixed["label"]))

        return f

    def loop(it: Any, layout: str, plain: bool) -> Any:
        def f() -> None:
            b = next(it)
            x = b["image"].as_tensor() if plain else b["image"]
            step(layout, x, torch.as_tensor(b["label"]))

        return f

    def lightning_steps(n: int) -> float:
        from benchmarks.bench_train_cached import medimg_steps
        from medimg.training.tasks import ClassificationTask

        if not hasattr(lightning_steps, "module"):
            lightning_steps.module = ClassificationTask(wf.model_dump(mode="json"), steps_per_epoch=4)  # type: ignore[attr-defined]
        return statistics.median(medimg_steps(lightning_steps.module, med_dl, n))  # type: ignore[attr-defined]

    batch_parts = {
        "batch_script": lambda: next(script_it),
        "batch_medimg": lambda: next(med_it),
    }
    net_parts = {
        "net_meta_contig": net_part("contig", False),
        "net_plain_contig": net_part("contig", True),
        "net_meta_cl": net_part("cl", False),
        "net_plain_cl": net_part("cl", True),
    }
    loop_parts = {
        "step_script": loop(script_it, "contig", False),
        "step_medimg_loop": loop(med_it, "cl", False),
        "step_medimg_plain_cl": loop(med_it, "cl", True),
    }
    res: dict[str, list[float]] = {}
    load: list[float] = []
    for _ in range(1):  # warm-up
        for f in list(net_parts.values()):
            f()
    for r in range(a.rounds):
        load.append(os.getloadavg()[0])
        for name, f in batch_parts.items():
            for _ in range(3):
                t = time.perf_counter()
                f()
                res.setdefault(name, []).append(time.perf_counter() - t)
        parts = {**net_parts, **loop_parts}
        order = list(parts) if r % 2 == 0 else list(parts)[::-1]
        for name in order:
            for _ in range(a.steps):
                t = time.perf_counter()
                parts[name]()
                res.setdefault(name, []).append(time.perf_counter() - t)
        res.setdefault("step_medimg_lightning", []).append(lightning_steps(a.steps))
        print(
            json.dumps(
                {"round": r, "load": load[-1], **{k: round(statistics.median(v), 3) for k, v in res.items()}}
            ),
            flush=True,
        )
    out = {k: round(statistics.median(v), 4) for k, v in res.items()}
    out["load_avg"] = load
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
