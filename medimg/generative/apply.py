"""Applying a trained generative model folder to new scans: anomaly maps, or super-resolved thick series.

A model folder (``outputs.dir/model``) holds ``workflow.yaml`` (the study's resolved workflow: the
network and the preprocessing), ``model.safetensors`` and ``model.json``. Each input is read by
medimg's strict reader; one that fails is recorded with its reason and the rest go on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medimg.config.generative import GenerativeWorkflow, load_generative_workflow
from medimg.errors import ConfigError, MedimgError
from medimg.generative.anomaly import AnomalyModel, preprocess
from medimg.io.atomic import atomic_write_text
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

log = logging.getLogger(__name__)


def _read_folder(folder: Path, task: str) -> tuple[GenerativeWorkflow, dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    for name in ("workflow.yaml", "model.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder}: {name} not found (expected a medimg {task} model folder)")
    wf = load_generative_workflow(folder / "workflow.yaml")
    info = json.loads((folder / "model.json").read_text())
    if (wf.task, info.get("task")) != (task, task):  # the folder holds the model the caller asked for
        raise ConfigError(f"{folder}: a {info.get('task')!r} model folder, expected task {task!r}")
    return wf, info, load_file(str(folder / "model.safetensors"))


def load_anomaly_model(folder: str | os.PathLike[str]) -> tuple[GenerativeWorkflow, AnomalyModel]:
    """The workflow and the trained :class:`AnomalyModel` (network, normal level, threshold) of a folder.

    Example:
        >>> wf, model = load_anomaly_model("runs/quickstart_anomaly/model")  # doctest: +SKIP
    """
    from medimg.generative.autoencoder import build_autoencoder

    wf, info, tensors = _read_folder(Path(folder), "anomaly")
    assert wf.anomaly is not None
    net = build_autoencoder(wf.anomaly)
    net.load_state_dict({k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")})
    net.eval()
    model = AnomalyModel(
        net,
        tensors["normal_sd"].numpy(),
        float(info["floor"]),
        float(info["sigma_mm"]),
        wf.anomaly.score,
        float(info["threshold"]),
    )
    return wf, model


def load_superres_model(folder: str | os.PathLike[str]) -> tuple[GenerativeWorkflow, nn.Module]:
    """The workflow and the trained super-resolution network of a model folder."""
    from medimg.generative.superres_net import ResidualSR

    wf, info, tensors = _read_folder(Path(folder), "superres")
    net = ResidualSR(int(info["features"]), int(info["layers"]))
    net.load_state_dict(tensors)
    net.eval()
    return wf, net


def _key(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def anomaly_maps(
    model_dir: str | os.PathLike[str], images: Sequence[str], out_dir: str | os.PathLike[str]
) -> pd.DataFrame:
    """Write ``<name>_anomaly.nii.gz`` (the input's grid) per image; ``summary.csv`` with scores and flags.

    Example:
        >>> anomaly_maps("runs/quickstart_anomaly/model", ["new/ct.nii.gz"], "maps")  # doctest: +SKIP
    """
    wf, model = load_anomaly_model(model_dir)
    out = Path(out_dir)

    def apply(path: str, key: str) -> dict[str, Any]:
        case = preprocess(wf, path, key)
        amap = model.source_map(case)
        written = save_nifti(
            Volume(amap.astype(np.float32), case.source_affine), out / f"{key}_anomaly.nii.gz"
        )
        score = model.case_score(amap)
        return {"score": score, "flagged": bool(score > model.threshold), "map": str(written)}

    return _apply_each(images, out, apply, {"score": np.nan, "flagged": None, "map": None})


def super_resolve_files(
    model_dir: str | os.PathLike[str], images: Sequence[str], out_dir: str | os.PathLike[str]
) -> pd.DataFrame:
    """Write ``<name>_sr.nii.gz`` per thick-slice image, on its thin grid; ``summary.csv``.

    Example:
        >>> super_resolve_files("runs/quickstart_superres/model", ["thick/t2.nii.gz"], "sr")  # doctest: +SKIP
    """
    from medimg.generative.superres_study import super_resolve
    from medimg.io.load import load_image

    wf, net = load_superres_model(model_dir)
    cfg = wf.superres
    assert cfg is not None
    out = Path(out_dir)

    def apply(path: str, key: str) -> dict[str, Any]:
        thick = load_image(path, affine_policy=wf.data.nifti_affine)
        if thick.data.ndim != 3:
            raise ConfigError(f"{path}: expected a 3D thick-slice image, got shape {thick.shape}")
        sr = super_resolve(net, thick, cfg)
        written = save_nifti(sr, out / f"{key}_sr.nii.gz")
        return {"shape": "x".join(map(str, sr.shape)), "output": str(written)}

    return _apply_each(images, out, apply, {"shape": None, "output": None})


def _apply_each(
    images: Sequence[str],
    out: Path,
    apply: Callable[[str, str], dict[str, Any]],
    failed: dict[str, Any],
) -> pd.DataFrame:
    """``apply(path, key)`` to each image (its key from its file name), one summary row each: a
    :class:`MedimgError` is logged and recorded with ``failed``'s values and its reason, and the rest
    go on; the rows in ``out/summary.csv`` (written atomically)."""
    rows = []
    for path in images:
        key = _key(str(path))
        try:
            rows.append({"case": key, "image": str(path), **apply(str(path), key), "error": None})
        except MedimgError as exc:
            log.warning("%s: %s", path, exc)
            rows.append({"case": key, "image": str(path), **failed, "error": str(exc)})
    table = pd.DataFrame(rows)
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    return table
