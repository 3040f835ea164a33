"""A tiny segmentation study that trains in seconds, shared by end-to-end tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

TINY = {
    "name": "tiny_seg",
    "task": "segmentation",
    "seed": 1,
    "data": {
        "manifest": "data/synth/manifest.csv",
        "synthetic": {"cases": 8, "seed": 2, "shape": [32, 30, 20], "spacing": [1.6, 1.7, 2.5]},
        "labels": {0: "background", 1: "organ", 2: "kidney"},
        "split": {"val_fraction": 0.2, "test_fraction": 0.25, "seed": 0},
    },
    "preprocessing": {"spacing": [2.5, 2.5, 2.5], "intensity": {"mode": "ct_window", "window": [-200, 300]}},
    "augmentation": {"patch_size": [16, 16, 16], "samples_per_volume": 1},
    "model": {"name": "unet", "params": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}},
    "optim": {"batch_size": 2},
    "trainer": {"max_epochs": 2},
    "tracking": {"uri": "sqlite:///runs/mlflow.db", "experiment": "e2e"},
    "outputs": {"dir": "runs/tiny_seg"},
}


def tiny_workflow(**changes: object) -> dict:
    """A deep copy of :data:`TINY` with top-level sections replaced."""
    wf = json.loads(json.dumps(TINY))
    wf.update(changes)
    return wf


def write_wf(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def train_tiny(root: Path) -> Path:
    """Run the tiny study through the real CLI in ``root``; return the model folder."""
    from medimg.cli.main import main

    old = os.getcwd()
    os.chdir(root)
    try:
        assert main(["run", str(write_wf(root / "tiny.yaml", TINY))]) == 0
    finally:
        os.chdir(old)
    return root / "runs/tiny_seg/model"
