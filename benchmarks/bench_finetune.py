"""Does self-supervised pretraining pay with few labels? Pretrained vs scratch, same steps, several seeds.

1. Generate synthetic CT-like phantoms (3D, anisotropic blobs of two intensities on a
   textured background with a bias field). The task: segment the *bright* blobs only.
2. Write the unlabelled phantoms as NIfTI and pretrain a UNet on them with the real
   ``medimg pretrain`` command (restoration + rotation, :mod:`medimg.models.ssl`).
3. For each seed, fine-tune on ``--labelled`` cases (default 4) twice, with identical
   steps, batches and learning rate: from the ``medimg pretrain`` weights (loaded through
   :func:`medimg.models.loading.load_pretrained`, the workflow's path) and from scratch.
4. Print test Dice (held-out phantoms) as mean +/- sd for both, and the difference.

Run: ``python benchmarks/bench_finetune.py`` (about 5-10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medimg.cli import pretrain as pretrain_command
from medimg.config.weights import PretrainedSpec
from medimg.io.nifti import save_nifti
from medimg.models.loading import load_pretrained
from medimg.models.networks import build_network, encoder_prefixes

NETWORK = "unet"
PARAMS = {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1}


def phantom(generator: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``[1, D, H, W]`` image (HU-like, normalised) and its ``[D, H, W]`` label of bright blobs."""
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, size)] * 3, indexing="ij"))
    image = torch.zeros(size, size, size)
    label = torch.zeros(size, size, size)
    n_blobs = int(torch.randint(3, 7, (1,), generator=generator))
    for i in range(n_blobs):
        centre = torch.empty(3, 1, 1, 1).uniform_(-0.6, 0.6, generator=generator)
        radii = torch.empty(3, 1, 1, 1).uniform_(0.2, 0.4, generator=generator) * torch.tensor(
            [0.6, 1, 1]
        ).view(3, 1, 1, 1)
        inside = (((grid - centre) / radii) ** 2).sum(0) <= 1
        bright = i % 2 == 0
        image[inside] = 1.0 if bright else 0.45
        if bright:
            label[inside] = 1
    smooth = nn.functional.avg_pool3d(torch.randn(1, 1, size, size, size, generator=generator), 5, 1, 2)[0, 0]
    bias = 1 + 0.3 * grid[0] * float(torch.empty(1).uniform_(-1, 1, generator=generator))
    image = image * bias + 1.5 * smooth + 0.15 * torch.randn(size, size, size, generator=generator)
    return image[None], label


def zscore(image: torch.Tensor) -> torch.Tensor:
    """The default intensity normalisation of ``medimg pretrain`` (per-volume z-score)."""
    return (image - image.mean()) / image.std().clamp_min(1e-6)


def dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pairs = [phantom(generator) for _ in range(n)]
    return torch.stack([zscore(p[0]) for p in pairs]), torch.stack([p[1] for p in pairs]).long()


def dice(logits: torch.Tensor, label: torch.Tensor) -> float:
    pred = logits.argmax(1)
    scores = []
    for p, t in zip(pred, label, strict=True):
        inter = float(((p == 1) & (t == 1)).sum())
        denom = float((p == 1).sum() + (t == 1).sum())
        scores.append(1.0 if denom == 0 else 2 * inter / denom)
    return statistics.mean(scores)


def finetune(weights: Path | None, train: tuple, test: tuple, steps: int, seed: int, lr: float) -> float:
    torch.manual_seed(seed)
    net = build_network(NETWORK, in_channels=1, out_channels=2, **PARAMS)
    if weights is not None:
        load_pretrained(
            net, PretrainedSpec(source=str(weights)), encoder_prefixes=encoder_prefixes(NETWORK, net)
        )
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)  # identical batches for both arms of a seed
    images, labels = train
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (2,), generator=generator)
        x, y = images[idx], labels[idx]
        if bool(torch.rand(1, generator=generator) < 0.5):
            x, y = x.flip(-1), y.flip(-1)
        logits = net(x)
        probs = logits.softmax(1)[:, 1]
        soft_dice = 1 - (2 * (probs * y).sum() + 1) / (probs.sum() + y.sum() + 1)
        loss = nn.functional.cross_entropy(logits, y) + soft_dice
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        return dice(net(test[0]), test[1])


def run_medimg_pretrain(argv: list[str]) -> int:
    """Run the ``medimg pretrain`` command (its own parser and code, as ``medimg pretrain ...`` does)."""
    parser = argparse.ArgumentParser(prog="medimg")
    pretrain_command.register(parser.add_subparsers(dest="command"))
    return pretrain_command.execute(parser.parse_args(argv))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unlabelled", type=int, default=48, help="phantoms for self-supervised pretraining")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--labelled", type=int, default=4, help="labelled training cases")
    parser.add_argument("--test", type=int, default=12, help="held-out test cases")
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, test = dataset(args.labelled, seed=2000), dataset(args.test, seed=3000)
    with tempfile.TemporaryDirectory() as tmp:
        scans = Path(tmp) / "unlabelled"
        generator = torch.Generator().manual_seed(1000)
        for i in range(args.unlabelled):
            image, _ = phantom(generator)
            save_nifti(
                image[0].numpy().astype(np.float32),
                scans / f"case_{i:03d}.nii.gz",
                np.diag([1.0, 1.0, 2.0, 1.0]),
            )
        weights = Path(tmp) / "ssl_unet.safetensors"
        params = [f"--param={k}={json.dumps(v)}" for k, v in PARAMS.items()]
        started = time.perf_counter()
        code = run_medimg_pretrain(
            [
                "pretrain",
                str(scans),
                "--out",
                str(weights),
                "--network",
                NETWORK,
                *params,
                "--patch",
                "32",
                "--batch",
                "4",
                "--steps",
                str(args.pretrain_steps),
                "--no-mlflow",
            ]
        )
        if code != 0:
            raise SystemExit(f"medimg pretrain failed with exit code {code}")
        pretrain_s = time.perf_counter() - started
        results: dict[str, list[float]] = {"scratch": [], "pretrained": []}
        started = time.perf_counter()
        for seed in range(args.seeds):
            results["scratch"].append(finetune(None, train, test, args.finetune_steps, seed, args.lr))
            results["pretrained"].append(finetune(weights, train, test, args.finetune_steps, seed, args.lr))
            print(
                f"seed {seed}: scratch {results['scratch'][-1]:.3f}  pretrained {results['pretrained'][-1]:.3f}"
            )
        finetune_s = time.perf_counter() - started

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    (m_s, sd_s), (m_p, sd_p) = stats(results["scratch"]), stats(results["pretrained"])
    wins = sum(p > s for p, s in zip(results["pretrained"], results["scratch"], strict=True))
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads"
    )
    print(
        f"pretraining: {args.unlabelled} unlabelled phantoms, {args.pretrain_steps} steps, {pretrain_s:.0f} s; "
        f"fine-tuning: {args.labelled} labelled cases, {args.finetune_steps} steps, {args.seeds} seeds, "
        f"{finetune_s:.0f} s; test: {args.test} cases"
    )
    print("| start | test Dice (mean +/- sd) |")
    print("|---|---|")
    print(f"| scratch | {m_s:.3f} +/- {sd_s:.3f} |")
    print(f"| medimg SSL pretrained | {m_p:.3f} +/- {sd_p:.3f} |")
    gain = m_p - m_s
    print(
        f"pretrained - scratch: {gain:+.3f} Dice (pretrained better in {wins}/{args.seeds} seeds); "
        f"ratio pretrained/scratch: {m_p / max(m_s, 1e-9):.2f}"
    )
    if not math.isfinite(gain) or gain <= 0:
        print("RESULT: pretraining did NOT beat scratch in this run")


if __name__ == "__main__":
    main()
