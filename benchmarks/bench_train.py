"""Training throughput of the quickstart segmentation model: medimg's pipeline vs MONAI's tutorial baseline.

Same synthetic study, same network (``workflows/quickstart_seg.yaml``: UNet 16..128, 48^3
patches, 2 patches per case, batch 2 cases), same loss and optimiser, same plain training
loop; only the data pipeline and the memory layout differ:

* baseline "MONAI tutorial": ``monai.data.Dataset`` + ``torch.utils.data.DataLoader``
  (default ``num_workers=0``), the whole transform chain redone every epoch, fp32,
  default (contiguous) memory layout;
* medimg as a workflow trains it by default: ``medimg.data.datasets.make_dataset``
  (deterministic half cached once in RAM, with the label's foreground/background
  indices) + ``make_loader`` (ThreadDataLoader), and ``trainer.channels_last: auto``
  (``channels_last_3d`` on the CPU); the one-off cache fill is reported and counted in the
  "epochs incl. cache" row;
* variants of medimg, each measured here so the table says what each part is worth:
  the contiguous layout (caching alone), bf16 autocast where the CPU has native bf16, and
  ``torch.compile`` of the network (64x64x40 study; its compile time, on one batch before
  the timed epochs, is reported as ``compile_s``).

Two studies for the quickstart model: the quickstart's own cases (64x64x40, whose
preprocessing is trivial, so the network dominates) and CT-sized cases (256x256x96 at
0.8 x 0.8 x 2.5 mm, stored as ``.nii.gz`` as scanners' exports are; resampled to the
workflow's 2 mm: what a user's cohort costs to preprocess). The 3x goal is judged on the
CT-sized cases. The default run adds the issue's larger UNet (channels 32..512, 96^3
patches, 128x128x80 cases), tiny on CPU. On a CUDA device the same benchmark runs there
(batches moved to the GPU, contiguous layout, bf16 autocast as the variant). Epochs of
all pipelines are interleaved; each figure is the median epoch. Run alone:
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

    def __init__(
        self,
        wf: Any,
        loader: Any,
        channels_last: bool = False,
        bf16: bool = False,
        device: str = "cpu",
        compile: bool = False,
    ) -> None:
        import torch
        from monai.losses import DiceCELoss

        from medimg.models.networks import build_model

        torch.manual_seed(0)
        self.device = torch.device(device)
        self.fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.net = build_model(wf).to(self.device, memory_format=self.fmt)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=wf.optim.lr)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.loader, self.bf16, self.patches = loader, bf16, 0
        self.compile_s: float | None = None
        if compile:  # compile now, on one batch, so the epochs time the compiled step only
            import time

            self.model = torch.compile(self.net)
            t0 = time.perf_counter()
            self._step(next(iter(loader)))
            self.compile_s = time.perf_counter() - t0
        else:
            self.model = self.net

    def _step(self, batch: dict[str, Any]) -> Any:
        import torch

        x = batch["image"].as_tensor().to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=self.fmt)
        y = batch["label"].as_tensor().to(self.device, non_blocking=True)
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        loss = self.loss(out.float(), y)
        loss.backward()
        self.opt.step()
        self.patches += x.shape[0]
        return loss.detach()

    def epoch(self) -> float:
        import torch

        total, self.patches = torch.zeros((), device=self.device), 0
        self.net.train()
        for batch in self.loader:
            total += self._step(batch)
        return float(total)  # waits for the device: the epoch's time includes all its work


def _bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older builds
        return False


def _measure(
    wf: Any,
    root: Path,
    cases: int,
    epochs: int,
    variants: bool,
    device: str,
    model_name: str,
    goal: float | None = None,
    compile_variant: bool = False,
) -> list[dict[str, Any]]:
    """Interleaved epochs of the baseline and medimg pipelines (and variants); result rows."""
    import time

    from benchmarks.common import PeakMemory, interleaved, row
    from medimg.data.datasets import make_dataset, make_loader

    items = _items(root, cases)
    with PeakMemory() as fill_peak:
        t0 = time.perf_counter()
        cached = make_dataset(wf, copy.deepcopy(items), train=True)
        fill_s = time.perf_counter() - t0
    bs = wf.optim.batch_size

    def loader() -> Any:
        return make_loader(cached, bs, True, 0, wf.seed)

    cl = device == "cpu"  # trainer.channels_last: auto
    default = "medimg (RAM cache, ThreadDataLoader" + (", channels_last_3d)" if cl else ")")
    runs = {
        "baseline": _Trainer(wf, _baseline_loader(wf, items, wf.seed), device=device),
        default: _Trainer(wf, loader(), cl, device=device),
    }
    if variants and cl:
        runs["medimg, contiguous layout (caching alone)"] = _Trainer(wf, loader(), False, device=device)
    if variants and _bf16_supported(device):
        runs[default + " + bf16 autocast"] = _Trainer(wf, loader(), cl, bf16=True, device=device)
    if variants and compile_variant:
        runs[default + " + torch.compile"] = _Trainer(wf, loader(), cl, device=device, compile=True)
    res = interleaved({k: t.epoch for k, t in runs.items()}, repeat=epochs)

    base = res["baseline"]
    patches = runs["baseline"].patches
    p = "x".join(map(str, wf.augmentation.patch_size))
    task = f"{model_name}, {cases} cases x {wf.augmentation.samples_per_volume} patches {p}, {device}"
    base_name = "MONAI tutorial: Dataset + DataLoader, preprocessing every epoch, fp32"
    rows = []
    for name, r in res.items():
        if name == "baseline":
            continue
        rows.append(
            row(
                NAME,
                f"train throughput ({name}): {task}",
                "patches/s",
                patches / r["median_s"],
                base_name,
                patches / base["median_s"],
                higher_is_better=True,
                goal=goal if name == default else None,
                epoch_s_medimg=r["median_s"],
                epoch_s_baseline=base["median_s"],
                peak_rss_mib_medimg=max(r["peak_mib"], fill_peak.mib),
                peak_rss_mib_baseline=base["peak_mib"],
                repeats=epochs,
                cache_fill_s=fill_s,
                **({"compile_s": runs[name].compile_s} if runs[name].compile_s is not None else {}),
            )
        )
    total_m = fill_s + epochs * res[default]["median_s"]
    rows.append(
        row(
            NAME,
            f"{epochs} epochs incl. the one-off cache fill: {task}",
            "s",
            total_m,
            base_name,
            epochs * base["median_s"],
            peak_rss_mib_medimg=max(res[default]["peak_mib"], fill_peak.mib),
            peak_rss_mib_baseline=base["peak_mib"],
            repeats=1,
            cache_fill_s=fill_s,
        )
    )
    return rows


def _large_workflow(wf: Any) -> Any:
    """The issue's larger UNet: channels 32..512, 96^3 patches, on 128x128x80 synthetic cases."""
    big = wf.model_copy(deep=True)
    big.model.params = {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2], "num_res_units": 2}
    big.augmentation.patch_size = (96, 96, 96)
    return big


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; return result rows (see ``benchmarks.common.row``).

    Quickstart UNet always; the larger UNet (32..512, 96^3) in the default run: on CPU two
    cases, one patch each, two epochs (a step takes seconds there); on a GPU 32 cases.
    """
    import torch

    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cases, epochs = (2, 1) if quick else (12, 4)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp) / "quickstart"
        wf = _workflow(write_synthetic_study(root, cases=cases, seed=0))
        rows += _measure(
            wf,
            root,
            cases,
            epochs,
            not quick,
            device,
            "quickstart UNet 16..128 on 64x64x40",
            compile_variant=True,
        )
        root = Path(tmp) / "ct"
        shape = (96, 96, 48) if quick else (256, 256, 96)
        wf = _workflow(
            write_synthetic_study(root, cases, 0, grid=SyntheticGrid(shape=shape, spacing=(0.8, 0.8, 2.5)))
        )
        name = f"quickstart UNet 16..128 on CT-sized {'x'.join(map(str, shape))}"
        rows += _measure(wf, root, cases, epochs, not quick, device, name, goal=3.0)
        if not quick:
            n = 32 if device == "cuda" else 2
            root = Path(tmp) / "large"
            big = _large_workflow(
                _workflow(
                    write_synthetic_study(
                        root, n, 0, grid=SyntheticGrid(shape=(128, 128, 80), spacing=(1.6, 1.6, 2.5))
                    )
                )
            )
            if device == "cpu":  # one step of two 96^3 patches per epoch: about 9 s on 2 cores
                big.augmentation.samples_per_volume = 1
            rows += _measure(big, root, n, 2, device == "cuda", device, "UNet 32..512")
    return rows


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
