"""Loading a trained generative model folder: an anomaly model, or a super-resolution network.

A model folder (``outputs.dir/model``) holds ``workflow.yaml`` (the study's resolved workflow: the
network and the preprocessing), ``model.safetensors`` and ``model.json``. Applying one to new scans
is ``medimg predict`` (:func:`medimg.generative.cohort.predict_generative`): resumable, one case's
failure recorded with its reason while the rest go on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from medimg.config.generative import GenerativeWorkflow, load_generative_workflow
from medimg.errors import ConfigError
from medimg.generative.anomaly import AnomalyModel

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
