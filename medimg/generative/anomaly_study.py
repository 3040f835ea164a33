"""The anomaly study: preprocess, train on normal cases, set the threshold, map and score the test split.

Outputs in ``outputs.dir``: ``model/`` (the autoencoder's weights and the normal residual level,
safetensors, with ``model.json``), ``maps/<case_key>_anomaly.nii.gz`` (each test case's map on its
own grid: the input's shape and affine), ``test_per_case.csv`` and ``report.html``.
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
from medimg.generative.anomaly import (
    AnomalyModel,
    GridCase,
    case_metrics,
    choose_threshold,
    normal_level,
    preprocess,
    summary,
    voxel_auprc,
)
from medimg.generative.anomaly_maps import peak_in_mask
from medimg.generative.autoencoder import build_autoencoder, train_autoencoder
from medimg.generative.checkpoint import EpochCheckpoint
from medimg.io.atomic import atomic_write_text
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

log = logging.getLogger(__name__)


def check_grid(wf: GenerativeWorkflow) -> None:
    """``preprocessing.spatial_size`` is set and each size is divisible by the autoencoder's strides."""
    size, cfg = wf.preprocessing.spatial_size, wf.anomaly
    assert cfg is not None
    if size is None:
        raise ConfigError(
            "preprocessing.spatial_size is required for task anomaly (every case is padded or cropped "
            "to one grid, e.g. [32, 32, 32])"
        )
    step = int(np.prod(cfg.strides))
    if any(s % step for s in size):
        raise ConfigError(
            f"preprocessing.spatial_size {list(size)}: each size must be divisible by {step} "
            f"(the product of anomaly.strides {list(cfg.strides)})"
        )


def lesion_paths(wf: GenerativeWorkflow, df: pd.DataFrame) -> list[str | None]:
    """Each case's lesion mask path (resolved like the image's), or ``None`` (no column, empty cell)."""
    col = wf.anomaly.lesion_column if wf.anomaly else None
    if not col or col not in df:
        return [None] * len(df)
    root = Path(wf.data.root) if wf.data.root else Path(wf.data.manifest).parent
    out: list[str | None] = []
    for value in df[col]:
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        out.append(str(Path(text) if Path(text).is_absolute() else (root / text).resolve()) if text else None)
    return out


def fit(wf: GenerativeWorkflow, cases: dict[str, GridCase], df: pd.DataFrame, run: Any) -> AnomalyModel:
    """Train the autoencoder on the training split's normal cases; the normal level and threshold."""
    cfg = wf.anomaly
    assert cfg is not None
    normal = df["target"] == 0
    train = [cases[k] for k in df.loc[normal & (df["split"] == "train"), "case_key"]]
    val = [cases[k] for k in df.loc[normal & (df["split"] == "val"), "case_key"]]
    if not train:
        raise DataError(
            f"{wf.data.manifest}: no normal case ({wf.data.label_column} = 0) in the training split; "
            "task anomaly trains on normal cases only"
        )
    torch.manual_seed(wf.seed)
    net = build_autoencoder(cfg, in_channels=int(train[0].image.shape[0]))
    trained = train_autoencoder(
        net,
        [c.image for c in train],
        epochs=wf.trainer.max_epochs,
        lr=wf.optim.lr,
        batch_size=wf.optim.batch_size,
        seed=wf.seed,
        on_epoch=lambda epoch, loss: run.log_metrics({"train_l1": loss}, step=epoch),
        checkpoint=EpochCheckpoint.for_run(run, wf),
    )
    sd, floor = normal_level(trained.net, train + val, cfg.smoothing_mm)
    model = AnomalyModel(trained.net, sd, floor, cfg.smoothing_mm, cfg.score)
    val_scores = [model.case_score(model.source_map(c)) for c in val]
    model.threshold = choose_threshold(val_scores, cfg.threshold_quantile)
    run.log_metrics(
        {"train_seconds": trained.seconds, "threshold": model.threshold, "n_train_normal": len(train)}
    )
    return model


def save_model(model: AnomalyModel, wf: GenerativeWorkflow, folder: Path) -> Path:
    """``model.safetensors`` (network + ``normal_sd``), ``model.json`` (threshold, floor), ``workflow.yaml``."""
    from safetensors.torch import save_file

    from medimg.config.load import workflow_to_yaml

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    tensors["normal_sd"] = torch.as_tensor(model.normal_sd)
    tmp = folder / "model.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(folder / "model.safetensors")
    info = {"task": "anomaly", "threshold": model.threshold, "floor": model.floor, "sigma_mm": model.sigma_mm}
    atomic_write_text(folder / "model.json", json.dumps(info, indent=2))
    atomic_write_text(folder / "workflow.yaml", workflow_to_yaml(wf))
    return folder


def score_split(
    wf: GenerativeWorkflow, model: AnomalyModel, cases: dict[str, GridCase], df: pd.DataFrame, out: Path
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Map, score and write each test case; the per-case table and the metrics."""
    from medimg.io.load import check_label_grid, load_image

    rows, maps, masks = [], [], []
    lesions = dict(zip(df["case_key"], lesion_paths(wf, df), strict=True))
    for row in df[df["split"] == "test"].itertuples():
        case = cases[row.case_key]
        amap = model.source_map(case)
        path = save_nifti(
            Volume(amap.astype(np.float32), case.source_affine),
            out / "maps" / f"{row.case_key}_anomaly.nii.gz",
        )
        score = model.case_score(amap)
        record: dict[str, Any] = {"case_key": row.case_key, "target": int(row.target), "score": score,
                                  "flagged": bool(score > model.threshold), "map": str(path.relative_to(out))}  # fmt: skip
        lesion = lesions.get(row.case_key)
        if lesion:
            mask_vol = load_image(lesion)
            check_label_grid((case.source_shape, case.source_affine), mask_vol, row.image, lesion)
            mask = np.asarray(mask_vol.data) > 0
            maps.append(amap)
            masks.append(mask)
            record["peak_in_lesion"] = peak_in_mask(amap, mask) if mask.any() else None
        rows.append(record)
    per_case = pd.DataFrame(rows)
    metrics = {f"test_{k}": v for k, v in case_metrics(per_case, model.threshold).items()}
    if masks:
        metrics["test_voxel_auprc"] = voxel_auprc(maps, masks)
    metrics.update({f"test_{k}": v for k, v in summary(per_case).items()})
    return per_case, metrics


def run_anomaly(
    wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any
) -> tuple[dict[str, float], pd.DataFrame]:
    """The whole anomaly study into ``out``; returns the test metrics and the per-case table."""
    from medimg.generative.report import write_anomaly_report

    check_grid(wf)
    t0 = time.perf_counter()
    cases = {r.case_key: preprocess(wf, r.image, r.case_key) for r in df.itertuples()}
    log.info("anomaly: %d cases preprocessed in %.1f s", len(cases), time.perf_counter() - t0)
    model = fit(wf, cases, df, run)
    save_model(model, wf, out / "model")
    per_case, metrics = score_split(wf, model, cases, df, out)
    atomic_write_text(out / "test_per_case.csv", per_case.to_csv(index=False))
    report = write_anomaly_report(out / "report.html", wf.name, metrics, per_case, model.threshold)
    run.log_metrics(metrics)
    for path in (out / "test_per_case.csv", report):
        run.log_artifact(path)
    run.log_artifact(out / "model", "model")
    return metrics, per_case
