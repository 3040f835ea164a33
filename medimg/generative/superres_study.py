"""The super-resolution study: learn thick → thin from the training split's thin scans, test on held-out ones.

Each thin scan (read by medimg's strict reader, on its own grid) is cropped to a multiple of
``superres.factor`` slices along ``superres.axis``; its thick version is simulated with the slice
profile. The network learns the thin scan from the thick one's linear interpolation. On each test
scan the super-resolved output, trilinear and cubic B-spline interpolation are compared with the
real thin scan (PSNR, SSIM, one data range per case: the thin scan's max - min). Outputs in
``outputs.dir``: ``model/`` (weights, safetensors), ``superres/<case>_thick.nii.gz`` and
``superres/<case>_sr.nii.gz`` (the thin grid's affine derived from the thick one,
:func:`medimg.generative.slices.thin_affine`), ``test_per_case.csv``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medimg.config.generative import GenerativeWorkflow, SuperresConfig
from medimg.errors import DataError
from medimg.generative.checkpoint import EpochCheckpoint
from medimg.generative.image_metrics import psnr, ssim
from medimg.generative.slices import (
    crop_to_multiple,
    interpolate_thin,
    simulate_thick,
    thick_affine,
    thin_affine,
)
from medimg.generative.superres_net import ResidualSR, super_resolve_array, train_superres, training_pair
from medimg.io.atomic import atomic_write_text
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

log = logging.getLogger(__name__)

VAL_CASES = 8


def read_thin(wf: GenerativeWorkflow, path: str) -> Volume:
    """A thin-slice scan, 3D, cropped to a multiple of ``superres.factor`` slices (affine unchanged)."""
    from medimg.io.load import load_image

    cfg = wf.superres
    assert cfg is not None
    vol = load_image(path, affine_policy=wf.data.nifti_affine)
    if vol.data.ndim != 3:
        raise DataError(f"{path}: expected a 3D image for task superres, got shape {vol.shape}")
    if vol.shape[cfg.axis] < cfg.factor * 2:
        raise DataError(
            f"{path}: {vol.shape[cfg.axis]} slices along superres.axis {cfg.axis}; at least "
            f"{cfg.factor * 2} (two thick slices of superres.factor {cfg.factor}) are needed"
        )
    data = crop_to_multiple(np.asarray(vol.data, np.float32), cfg.axis, cfg.factor)
    return Volume(data, vol.affine, vol.space, dict(vol.meta))


def super_resolve(net: nn.Module, thick: Volume, cfg: SuperresConfig) -> Volume:
    """A thick-slice scan on its thin grid: ``factor`` times the slices along ``axis``, derived affine.

    Example:
        >>> thin = super_resolve(net, load_image("thick.nii.gz"), wf.superres)  # doctest: +SKIP
    """
    data = super_resolve_array(net, np.asarray(thick.data, np.float32), cfg.axis, cfg.factor, cfg.patch_size)
    return Volume(data, thin_affine(thick.affine, cfg.axis, cfg.factor), thick.space)


def thick_volume(thin: Volume, cfg: SuperresConfig) -> Volume:
    """The thick-slice scan simulated from a thin one, on its own (thick) grid."""
    data = simulate_thick(thin.data, cfg.axis, cfg.factor, cfg.profile)
    return Volume(data, thick_affine(thin.affine, cfg.axis, cfg.factor), thin.space)


def compare(thin: Volume, thick: Volume, sr: Volume, cfg: SuperresConfig) -> dict[str, float]:
    """PSNR and SSIM of the network, trilinear and B-spline against the real thin scan."""
    ref = np.asarray(thin.data, np.float32)
    rng = float(ref.max() - ref.min()) or 1.0
    candidates = {
        "sr": sr.data,
        "trilinear": interpolate_thin(thick.data, cfg.axis, cfg.factor, order=1),
        "bspline": interpolate_thin(thick.data, cfg.axis, cfg.factor, order=3),
    }
    out = {}
    for name, values in candidates.items():
        out[f"psnr_{name}"] = psnr(ref, values, rng)
        out[f"ssim_{name}"] = ssim(ref, values, rng)
    return out


def fit(wf: GenerativeWorkflow, df: pd.DataFrame, run: Any) -> nn.Module:
    """Train on the training split; keep the weights of the epoch with the best validation PSNR.

    Validation after each epoch super-resolves the first ``VAL_CASES`` validation scans (sorted by
    case key), so that a large validation split does not multiply the training time.
    """
    cfg = wf.superres
    assert cfg is not None
    pairs = [
        training_pair(read_thin(wf, p).data, cfg.axis, cfg.factor, cfg.profile)
        for p in df.loc[df["split"] == "train", "image"]
    ]
    val_rows = df[df["split"] == "val"].sort_values("case_key").head(VAL_CASES)
    val = [read_thin(wf, p) for p in val_rows["image"]]
    torch.manual_seed(wf.seed)
    net = ResidualSR(cfg.features, cfg.layers)
    best: dict[str, Any] = {"psnr": -np.inf, "state": None}

    val_pairs = [(np.asarray(v.data), thick_volume(v, cfg)) for v in val]  # simulated once
    checkpoint = EpochCheckpoint.for_run(run, wf)
    checkpoint.extra = best  # the best epoch so far is saved and resumed with the weights

    def on_epoch(epoch: int, loss: float) -> None:
        metrics = {"train_l1": loss}
        if val_pairs:
            scores = []
            for ref, thick in val_pairs:
                rng = float(ref.max() - ref.min()) or 1.0
                scores.append(psnr(ref, super_resolve(net, thick, cfg).data, rng))
            metrics["val_psnr_sr"] = float(np.mean(scores))
            if metrics["val_psnr_sr"] > best["psnr"]:
                best.update(
                    psnr=metrics["val_psnr_sr"], state={k: v.clone() for k, v in net.state_dict().items()}
                )
            net.train()
        log.info("superres epoch %d: %s", epoch, metrics)
        run.log_metrics(metrics, step=epoch)

    train_superres(
        net,
        pairs,
        cfg.patch_size,
        wf.trainer.max_epochs,
        cfg.patches_per_epoch,
        wf.optim.batch_size,
        wf.optim.lr,
        wf.seed,
        on_epoch,
        checkpoint,
    )
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    return net


def save_model(net: nn.Module, wf: GenerativeWorkflow, folder: Path) -> Path:
    """``model.safetensors``, ``model.json`` (axis, factor, network size) and ``workflow.yaml``."""
    from safetensors.torch import save_file

    from medimg.config.load import workflow_to_yaml

    cfg = wf.superres
    assert cfg is not None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(folder / "model.safetensors")
    info = {
        "task": "superres",
        "axis": cfg.axis,
        "factor": cfg.factor,
        "features": cfg.features,
        "layers": cfg.layers,
    }
    atomic_write_text(folder / "model.json", json.dumps(info, indent=2))
    atomic_write_text(folder / "workflow.yaml", workflow_to_yaml(wf))
    return folder


def run_superres(
    wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any
) -> tuple[dict[str, float], pd.DataFrame]:
    """The whole super-resolution study into ``out``; returns the test metrics and the per-case table."""
    cfg = wf.superres
    assert cfg is not None
    net = fit(wf, df, run)
    save_model(net, wf, out / "model")
    rows = []
    for row in df[df["split"] == "test"].itertuples():
        thin = read_thin(wf, row.image)
        thick = thick_volume(thin, cfg)
        sr = super_resolve(net, thick, cfg)
        thick_path = save_nifti(thick, out / "superres" / f"{row.case_key}_thick.nii.gz")
        sr_path = save_nifti(sr, out / "superres" / f"{row.case_key}_sr.nii.gz")
        rows.append({"case_key": row.case_key, **compare(thin, thick, sr, cfg),
                     "thick": str(thick_path.relative_to(out)), "sr": str(sr_path.relative_to(out))})  # fmt: skip
    per_case = pd.DataFrame(rows)
    metrics: dict[str, float] = {"test_n_cases": float(len(per_case))}
    if len(per_case):
        for col in [c for c in per_case if c.startswith(("psnr_", "ssim_"))]:
            metrics[f"test_{col}"] = float(per_case[col].mean())
        metrics["test_psnr_gain_vs_trilinear"] = metrics["test_psnr_sr"] - metrics["test_psnr_trilinear"]
        metrics["test_psnr_gain_vs_bspline"] = metrics["test_psnr_sr"] - metrics["test_psnr_bspline"]
    atomic_write_text(out / "test_per_case.csv", per_case.to_csv(index=False))
    run.log_metrics(metrics)
    run.log_artifact(out / "test_per_case.csv")
    run.log_artifact(out / "model", "model")
    return metrics, per_case
