"""The synthesis study: a class-conditional VAE trained on the training split, saved as a model folder.

Every case of the training split (all classes, ``data.label_column``) is preprocessed to
``preprocessing.spatial_size`` and trains the network (:mod:`medimg.models.cvae`); validation
and test cases are only encoded and decoded (their reconstruction error and KL are the held-out
checks: ``val_mse``, ``val_kl``, ``test_mse``, ``test_kl``; the test ones are what ``medimg
reproduce`` compares). Training writes an epoch checkpoint (``medimg run --resume``,
:mod:`medimg.generative.checkpoint`). Outputs in ``outputs.dir``: ``model/`` (``model.safetensors``,
``model.json``: grid, affine, classes, intensity, the MLflow run id; ``workflow.yaml``),
``samples/class<c>_<i>.nii.gz`` (a few sampled cases per class), ``val_per_case.csv`` and
``test_per_case.csv``. :mod:`medimg.training.stages.prepare_synthetic` samples from
the folder for a classification study.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medimg.config.generative import GenerativeWorkflow
from medimg.errors import ConfigError, DataError
from medimg.generative.checkpoint import EpochCheckpoint
from medimg.io.atomic import atomic_write_text
from medimg.models.cvae import ConditionalVAE, train_vae, vae_loss

log = logging.getLogger(__name__)


def check_grid(wf: GenerativeWorkflow) -> tuple[int, int, int]:
    """``preprocessing.spatial_size``, required and divisible by 4 (the network halves it twice)."""
    size = wf.preprocessing.spatial_size
    if size is None:
        raise ConfigError(
            "preprocessing.spatial_size is required for task synthesis (every case is padded or cropped "
            "to one grid, e.g. [32, 32, 32])"
        )
    if any(s % 4 for s in size):
        raise ConfigError(
            f"preprocessing.spatial_size {list(size)}: each size must be divisible by 4 (task synthesis)"
        )
    return size


def _stack(wf: GenerativeWorkflow, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The preprocessed images ``(N, C, X, Y, Z)``, their classes and the first case's grid affine."""
    from medimg.generative.anomaly import preprocess

    cases = [preprocess(wf, r.image, r.case_key) for r in rows.itertuples()]
    images = torch.stack([c.image for c in cases])
    labels = torch.as_tensor(rows["target"].to_numpy().copy(), dtype=torch.long)
    return images, labels, cases[0].grid_affine if cases else np.eye(4)


def save_generator(net: ConditionalVAE, wf: GenerativeWorkflow, folder: Path, info: dict[str, Any]) -> str:
    """Write ``model.safetensors``, ``model.json`` (with ``info``) and ``workflow.yaml``; the weights' sha256."""
    from safetensors.torch import save_file

    from medimg.config.load import workflow_to_yaml
    from medimg.models.download import sha256_of

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(folder / "model.safetensors")
    sha = sha256_of(folder / "model.safetensors")
    atomic_write_text(folder / "model.json", json.dumps({**info, "weights_sha256": sha}, indent=2))
    atomic_write_text(folder / "workflow.yaml", workflow_to_yaml(wf))
    return sha


def model_info(
    wf: GenerativeWorkflow, grid_affine: np.ndarray, run_id: str, n_train: list[int]
) -> dict[str, Any]:
    """What :func:`medimg.training.stages.prepare_synthetic.load_generator` needs to rebuild and sample."""
    cfg, pp = wf.synthesis, wf.preprocessing
    assert cfg is not None and pp.spatial_size is not None
    return {
        "task": "synthesis",
        "run_id": run_id,
        "grid": list(pp.spatial_size),
        "grid_affine": np.asarray(grid_affine, dtype=float).tolist(),
        "num_classes": wf.data.num_classes,
        "in_channels": wf.data.channels,
        "channels": list(cfg.channels),
        "latent_dim": cfg.latent_dim,
        "intensity": {"mode": pp.intensity.mode, "window": list(pp.intensity.window)},
        "train_cases_per_class": n_train,
    }


def run_synthesis(
    wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any
) -> tuple[dict[str, float], pd.DataFrame]:
    """The whole synthesis study into ``out``; returns its metrics and the test per-case table."""
    from medimg.training.stages.prepare_synthetic import write_samples

    cfg = wf.synthesis
    assert cfg is not None
    grid = check_grid(wf)
    train_rows = df[df["split"] == "train"]
    t0 = time.perf_counter()
    images, labels, affine = _stack(wf, train_rows)
    log.info("synthesis: %d training cases preprocessed in %.1f s", len(images), time.perf_counter() - t0)
    n_train = torch.bincount(labels, minlength=wf.data.num_classes).tolist()
    if min(n_train) == 0:
        raise DataError(
            f"{wf.data.manifest}: the training split has no case of class(es) "
            f"{[c for c, n in enumerate(n_train) if n == 0]} ({wf.data.label_column}); task synthesis "
            "learns every class from the training split"
        )
    torch.manual_seed(wf.seed)  # the initial weights: the same in every process (resume, reproduce)
    net = ConditionalVAE(grid, wf.data.num_classes, cfg.channels, cfg.latent_dim, wf.data.channels)
    trained = train_vae(net, images, labels, epochs=wf.trainer.max_epochs, lr=wf.optim.lr,
                        batch_size=wf.optim.batch_size, beta=cfg.beta, balance=cfg.balance_classes,
                        flip=cfg.flip, seed=wf.seed, checkpoint=EpochCheckpoint.for_run(run, wf),
                        on_epoch=lambda e, loss: run.log_metrics({"train_loss": loss}, step=e))  # fmt: skip
    metrics: dict[str, float] = {"train_seconds": trained.seconds, "train_loss": trained.losses[-1]}
    metrics.update({f"n_train_class{c}": float(n) for c, n in enumerate(n_train)})
    held_out = {split: _held_out(wf, trained.net, df[df["split"] == split], metrics, split)
                for split in ("val", "test")}  # fmt: skip
    sha = save_generator(trained.net, wf, out / "model", model_info(wf, affine, run.run_id, n_train))
    run.client.set_tag(run.run_id, "medimg.generator_sha256", sha)
    if cfg.samples_per_class:
        for c in range(wf.data.num_classes):
            write_samples(
                out / "model", out / "samples", c, cfg.samples_per_class, wf.seed, prefix=f"class{c}"
            )
    for split, per_case in held_out.items():
        atomic_write_text(out / f"{split}_per_case.csv", per_case.to_csv(index=False))
        run.log_artifact(out / f"{split}_per_case.csv")
    run.log_metrics(metrics)
    run.log_artifact(out / "model", "model")
    return metrics, held_out["test"]


@torch.no_grad()
def _held_out(
    wf: GenerativeWorkflow, net: ConditionalVAE, rows: pd.DataFrame, metrics: dict[str, float], split: str
) -> pd.DataFrame:
    """Reconstruction error (mean squared, decoded from the mean latent) and KL of each case of ``split``;
    their means go to ``metrics`` as ``<split>_mse`` and ``<split>_kl``."""
    if rows.empty:
        return pd.DataFrame(columns=["case_key", "target", "mse", "kl"])
    images, labels, _ = _stack(wf, rows)
    mu, logvar = net.encode(images, labels)
    rec = net.decode(mu, labels)
    mse = ((rec - images) ** 2).flatten(1).mean(1)
    kl = torch.stack([vae_loss(rec[i : i + 1], images[i : i + 1], mu[i : i + 1], logvar[i : i + 1], 1.0)[2]
                      for i in range(len(rows))])  # fmt: skip
    per_case = pd.DataFrame({"case_key": rows["case_key"].to_numpy(), "target": labels.numpy(),
                             "mse": mse.numpy(), "kl": kl.numpy()})  # fmt: skip
    metrics[f"{split}_mse"] = float(mse.mean())
    metrics[f"{split}_kl"] = float(kl.mean())
    return per_case
