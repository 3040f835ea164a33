"""Resuming a killed generative study: an epoch checkpoint in ``outputs.dir`` and the same MLflow run.

The training loops (:func:`medimg.generative.autoencoder.train_autoencoder`,
:func:`medimg.generative.superres_net.train_superres`, :func:`medimg.models.cvae.train_vae`) write ``outputs.dir/checkpoint/train_state.pt``
after every epoch, atomically (a temporary file in the same folder, fsync'd, then ``os.replace``):
the network, the optimiser, the learning-rate schedule, the epoch, the loss history, every random
state the loop draws from (torch's, the loop's own generator) and what the study keeps across epochs
(super-resolution: the best validation epoch's weights). It holds tensors, numbers and strings only,
so it is read back with ``torch.load(weights_only=True)``.

``run_generative(wf, resume=True)`` (:func:`open_run`) continues the MLflow run the checkpoint names
(status back to RUNNING, tag ``medimg.resumed_from_epoch``) and the loop goes on from the epoch after
the saved one; without ``resume`` a checkpoint left in ``outputs.dir`` is removed first, so a new
study never picks up an old one. A checkpoint written by another workflow (its config hash) is
refused by name.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medimg.config.generative import GenerativeWorkflow
from medimg.config.load import config_hash
from medimg.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoint") / "train_state.pt"


@dataclass
class EpochCheckpoint:
    """The epoch checkpoint of one study: where it lives, which workflow wrote it, and the study's extras.

    ``extra`` is state the study keeps across epochs (saved with every checkpoint; :meth:`restore`
    updates it in place).

    Example:
        >>> ckpt = EpochCheckpoint(Path("runs/sr/checkpoint/train_state.pt"), "3f2a")  # doctest: +SKIP
    """

    path: Path
    key: str
    run_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_run(cls, run: Any, wf: GenerativeWorkflow) -> EpochCheckpoint:
        return cls(Path(run.out) / CHECKPOINT, config_hash(wf), str(run.run_id))

    def save(self, epoch: int, parts: dict[str, Any], rng: dict[str, Any], losses: list[float]) -> Path:
        """Write the state after ``epoch`` (``parts``: objects with a ``state_dict``) atomically."""
        state = {
            "epoch": epoch,
            "key": self.key,
            "run_id": self.run_id,
            "losses": [float(x) for x in losses],
            "parts": {name: obj.state_dict() for name, obj in parts.items()},
            "rng": {"torch": torch.get_rng_state(), **rng},
            "extra": self.extra,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return self.path

    def read(self) -> dict[str, Any] | None:
        """The saved state (``None`` when there is none); refuses one written by another workflow."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("key") != self.key:
            raise ConfigError(
                f"{self.path}: written by another workflow (config hash {state.get('key')}, this one "
                f"{self.key}); run without resume, or give another outputs.dir"
            )
        return state

    def restore(self, parts: dict[str, Any]) -> tuple[int, list[float], dict[str, Any]]:
        """Load the saved state into ``parts``; ``(first epoch to run, losses so far, the loop's rng states)``."""
        state = self.read()
        if state is None:
            return 0, [], {}
        for name, obj in parts.items():
            obj.load_state_dict(state["parts"][name])
        torch.set_rng_state(state["rng"]["torch"])
        self.extra.update(state["extra"])
        log.info("resuming from %s: epoch %d done", self.path, state["epoch"])
        return int(state["epoch"]) + 1, list(state["losses"]), state["rng"]


def numpy_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy generator's state as plain numbers and strings (JSON), for a ``weights_only`` checkpoint."""
    return {"numpy": json.dumps(rng.bit_generator.state)}


def set_numpy_rng_state(rng: np.random.Generator, saved: dict[str, Any]) -> None:
    if "numpy" in saved:
        rng.bit_generator.state = json.loads(saved["numpy"])


def open_run(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, resume: bool = False) -> Any:
    """The study's MLflow run: the checkpoint's run continued (``resume`` and a checkpoint), else a new one.

    Example:
        >>> run = open_run(wf, df, Path("runs/superres"), resume=True)  # doctest: +SKIP
    """
    from medimg.generative.tracking import GenerativeRun, start_run

    ckpt = EpochCheckpoint(out / CHECKPOINT, config_hash(wf))
    state = ckpt.read() if resume else None
    if state is None:
        if resume:
            log.info("%s: no checkpoint to resume from; the study starts from the beginning", ckpt.path)
        ckpt.path.unlink(missing_ok=True)
        return start_run(wf, df, out)
    import mlflow

    from medimg.training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(wf.tracking.uri)
    client = mlflow.MlflowClient(uri)
    run_id = str(state["run_id"])
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"{ckpt.path}: its MLflow run {run_id} is not in {uri} ({exc.message})") from None
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "medimg.resumed_from_epoch", str(state["epoch"]))
    from medimg.io.atomic import atomic_write_text

    atomic_write_text(
        out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "running"})
    )
    return GenerativeRun(uri, client, run_id, out)
