"""Training throughput of the quickstart segmentation model: medimg's pipeline vs MONAI's tutorial baseline.

Same synthetic study (the quickstart's 64x64x40 oblique, anisotropic cases), same
network (``workflows/quickstart_seg.yaml``: UNet 16..128, 48^3 patches, 2 patches per
case, batch 2 cases), same loss and optimiser, same plain training loop; only the data
pipeline (and, in the variants, the numeric format) differs:

* baseline "MONAI tutorial": ``monai.data.Dataset`` + ``torch.utils.data.DataLoader``
  (default ``num_workers=0``), the whole transform chain redone every epoch, fp32;
* medimg: ``medimg.data.datasets.make_dataset`` (deterministic half cached once in RAM,
  with the label's foreground/background indices) + ``make_loader`` (ThreadDataLoader);
  the one-off cache fill is reported and counted in the "epochs incl. cache" row;
* variants of medimg, each measured here so the table says whether they help:
  ``channels_last_3d`` memory format, and bf16 autocast on CPUs with native bf16.

Epochs of all pipelines are interleaved; each figure is the median epoch. Run alone:
``python -m benchmarks --only train``.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

NAME = "train"


def _workflow(manifest: Path) -> Any:
    from medimg.config.load import load_workflow

    wf = load_workflow(Path(__file__).resolve().parents[1] / "workflows" / "quickstart_seg.yaml")
    wf = wf.model_copy(deep=True)
    wf.data.manifest = str(manifest)
    return wf


def _items(root: Path, cases: int) -> list[dict[str, Any]]:
    return [
        {
            "image": str(root / f"cases/case_{i:04d}/image.nii.gz"),
            "label": str(root / f"cases/case_{i:04d}/label.nii.gz"),
        }
        for i in range(cases)
    ]


def _baseline_loader(wf: Any, items: list[dict[str, Any]], seed: int) -> Any:
    import torch
    from monai import transforms as T
    from monai.data import Dataset
    from monai.data.utils import list_data_collate

    from medimg.data.transforms import deterministic_transforms, random_transforms

    keys = ("image", "label")
    chain = T.Compose(deterministic_transforms(wf, keys, True) + random_transforms(wf, keys, True))
    gen = torch.Generator()
    gen.manual_seed(seed)
    return torch.utils.data.DataLoader(
        Dataset(items, chain),
        batch_size=wf.optim.batch_size,
        shuffle=True,
        collate_fn=list_data_collate,
        generator=gen,
    )


class _Trainer:
    """A model, optimiser and loss stepping over one loader: the loop is the same for every pipeline."""

    def __init__(self, wf: Any, loader: Any, channels_last: bool = False, bf16: bool = False) -> None:
        import torch
        from monai.losses import DiceCELoss

        from medimg.training.tasks import build_model

        torch.manual_seed(0)
        self.net = build_model(wf)
        self.fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=self.fmt)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=wf.optim.lr)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.loader, self.bf16, self.patches = loader, bf16, 0

    def epoch(self) -> float:
        import torch

        total, self.patches = 0.0, 0
        self.net.train()
        for batch in self.loader:
            x = batch["image"].as_tensor().contiguous(memory_format=self.fmt)
            y = batch["label"].as_tensor()
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                out = self.net(x)
            loss = self.loss(out.float(), y)
            loss.backward()
            self.opt.step()
            total += float(loss.detach())
            self.patches += x.shape[0]
        return total


def _cpu_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older builds
        return False


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; return result rows (see ``benchmarks.common.row``)."""
    import time

    from benchmarks.common import PeakMemory, interleaved, row
    from medimg.data.datasets import make_dataset, make_loader
    from medimg.data.synthetic import write_synthetic_study

    cases, epochs = (2, 1) if quick else (16, 5)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        wf = _workflow(write_synthetic_study(root, cases=cases, seed=0))
        items = _items(root, cases)
        with PeakMemory() as fill_peak:
            t0 = time.perf_counter()
            cached = make_dataset(wf, copy.deepcopy(items), train=True)
            fill_s = time.perf_counter() - t0
        bs = wf.optim.batch_size
        runs = {
            "baseline": _Trainer(wf, _baseline_loader(wf, items, wf.seed)),
            "medimg": _Trainer(wf, make_loader(cached, bs, True, 0, wf.seed)),
        }
        if not quick:
            runs["medimg+channels_last_3d"] = _Trainer(wf, make_loader(cached, bs, True, 0, wf.seed), True)
        if _cpu_bf16():
            runs["medimg+bf16"] = _Trainer(wf, make_loader(cached, bs, True, 0, wf.seed), bf16=True)
            if not quick:
                loader = make_loader(cached, bs, True, 0, wf.seed)
                runs["medimg+channels_last_3d+bf16"] = _Trainer(wf, loader, True, bf16=True)
        res = interleaved({k: t.epoch for k, t in runs.items()}, repeat=epochs)

    base = res["baseline"]
    patches = runs["baseline"].patches
    task = f"quickstart UNet 16..128, {cases} cases x {wf.augmentation.samples_per_volume} patches 48^3, CPU"
    base_name = "MONAI tutorial: Dataset + DataLoader, preprocessing every epoch, fp32"
    rows = []
    for name, r in res.items():
        if name == "baseline":
            continue
        label = "medimg" if name == "medimg" else name
        rows.append(
            row(
                NAME,
                f"train throughput ({label}): {task}",
                "patches/s",
                patches / r["median_s"],
                base_name,
                patches / base["median_s"],
                higher_is_better=True,
                goal=3.0 if name == "medimg" else None,
                epoch_s_medimg=r["median_s"],
                epoch_s_baseline=base["median_s"],
                peak_rss_mib_medimg=max(r["peak_mib"], fill_peak.mib),
                peak_rss_mib_baseline=base["peak_mib"],
                repeats=epochs,
                cache_fill_s=fill_s,
            )
        )
    total_m = fill_s + epochs * res["medimg"]["median_s"]
    rows.append(
        row(
            NAME,
            f"{epochs} epochs incl. the one-off cache fill: {task}",
            "s",
            total_m,
            base_name,
            epochs * base["median_s"],
            peak_rss_mib_medimg=max(res["medimg"]["peak_mib"], fill_peak.mib),
            peak_rss_mib_baseline=base["peak_mib"],
            repeats=1,
            cache_fill_s=fill_s,
        )
    )
    return rows


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
