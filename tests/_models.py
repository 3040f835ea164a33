"""Untrained model folders built in a second: the tiny study's network with fixed random weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from _tiny import TINY

from medimg.config.load import parse_workflow
from medimg.inference.model_io import save_trained
from medimg.models.networks import build_model


def built_model(folder: Path, seed: int = 0, never: Sequence[int] = ()) -> Path:
    """Write the tiny segmentation study's network, untrained, as a model folder.

    Args:
        folder: the model folder to write (``workflow.yaml`` + ``model.safetensors``).
        seed: seed of the random weights (same seed, same masks).
        never: labels the model never predicts (their output bias is set to -1e4).
    """
    torch.manual_seed(seed)
    wf = parse_workflow(TINY)
    net = build_model(wf)
    last_bias = [p for name, p in net.named_parameters() if name.endswith("bias")][-1]
    assert last_bias.shape == (len(wf.data.labels),), "the last bias must be the output layer's"
    with torch.no_grad():
        for label in never:
            last_bias[label] = -1e4
    return save_trained(net, wf, folder)


def evaluate_argv(model: Path, manifest: Path, out: Path, *extra: str) -> list[str]:
    """``medimg evaluate MODEL --manifest MANIFEST --split all --out OUT [extra...]`` as CLI arguments."""
    return ["evaluate", str(model), "--manifest", str(manifest), "--split", "all", "--out", str(out), *extra]
