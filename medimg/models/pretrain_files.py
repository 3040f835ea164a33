"""Self-supervised pretraining from files: what ``medimg pretrain`` does, callable from Python.

Finds the NIfTI volumes among the inputs, normalises them (a CT window or a per-volume z-score),
samples random cubic crops, runs :func:`medimg.models.ssl.pretrain_network` and writes the
network's tensors to ``.safetensors`` (atomically). A tracker (an MLflow run, see
:class:`MlflowPretrainRun`) receives the settings, the losses and the weights file; no file name or
path of an input goes to it (only counts and a digest of the list).

Example::

    from medimg.models.pretrain_files import pretrain_files
    document, lines, code = pretrain_files(["scans/"], "ssl_unet.safetensors", steps=200, window=(-1000, 1000))
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from medimg.models.weights_tools import parse_params

log = logging.getLogger("medimg.pretrain")


class PretrainTracker(Protocol):
    """Where a pretraining run's settings, losses and weights go (an MLflow run)."""

    run_id: str

    def log_metrics(self, values: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...

    def end(self) -> None: ...


class MlflowPretrainRun:
    """An MLflow run (tag ``medimg.command: pretrain``) in ``experiment`` of the store ``uri`` (resolved).

    ``artifact_location`` is where a new experiment keeps its artifacts (None: the server's choice).
    """

    def __init__(self, uri: str, experiment: str, settings: dict[str, Any], artifact_location: str | None):
        import mlflow

        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_location)
        mlflow.set_experiment(experiment)
        self._mlflow = mlflow
        self.run_id = mlflow.start_run(tags={"medimg.command": "pretrain"}).info.run_id
        mlflow.log_params(settings)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self._mlflow.log_metrics(values, step=step)

    def log_artifact(self, path: str | Path) -> None:
        self._mlflow.log_artifact(str(path), artifact_path="weights")

    def end(self) -> None:
        self._mlflow.end_run()


def find_volumes(inputs: Sequence[str]) -> list[Path]:
    """The files among ``inputs``; a folder gives its .nii/.nii.gz files, searched recursively."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
        else:
            files.append(path)
    return files


def read_volumes(
    files: Sequence[Path], window: Sequence[float] | None = None
) -> tuple[list[torch.Tensor], list[tuple[str, str]]]:
    """The readable volumes, normalised, and (file name, reason) of each unreadable input."""
    import numpy as np

    from medimg.errors import DataError
    from medimg.io.load import load_image

    volumes, failures = [], []
    for path in files:
        try:
            data = np.asarray(load_image(path).data, dtype=np.float32)
            if data.ndim != 3:
                raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
            if window:
                low, high = window
                data = (np.clip(data, low, high) - low) / (high - low)
            else:
                data = (data - data.mean()) / max(float(data.std()), 1e-6)
            volumes.append(torch.from_numpy(data)[None])
        except (DataError, ValueError, OSError) as exc:
            failures.append((path.name, str(exc)))
    return volumes, failures


def crop_sampler(
    volumes: Sequence[torch.Tensor], patch: int, batch: int
) -> Callable[[torch.Generator], torch.Tensor]:
    """A sampler of ``batch`` random cubic crops (side ``patch``; small volumes padded with their minimum)."""

    def sampler(generator: torch.Generator) -> torch.Tensor:
        crops = []
        for _ in range(batch):
            vol = volumes[int(torch.randint(0, len(volumes), (1,), generator=generator))]
            pad = [max(0, patch - s) for s in vol.shape[1:]]
            if any(pad):
                vol = torch.nn.functional.pad(
                    vol, [x for p in reversed(pad) for x in (0, p)], value=float(vol.min())
                )
            start = [int(torch.randint(0, s - patch + 1, (1,), generator=generator)) for s in vol.shape[1:]]
            crops.append(
                vol[:, start[0] : start[0] + patch, start[1] : start[1] + patch, start[2] : start[2] + patch]
            )
        return torch.stack(crops)

    return sampler


def pretrain_files(
    inputs: Sequence[str],
    out: str | Path,
    *,
    network: str = "unet",
    params: Sequence[str] = (),
    patch: int = 64,
    batch: int = 2,
    steps: int = 1000,
    lr: float = 1e-3,
    window: Sequence[float] | None = None,
    seed: int = 0,
    start_tracking: Callable[[dict[str, Any]], PretrainTracker] | None = None,
) -> tuple[dict[str, Any], list[str], int]:
    """Pretrain ``network`` on the volumes among ``inputs`` and write its weights to ``out``.

    ``params`` are ``KEY=JSON`` network parameters; ``start_tracking(settings)`` starts a tracker.
    Returns the result document, its text lines, and the exit code: 0, or 1 when some inputs were
    unreadable (their count is in the lines).
    """
    from medimg.errors import EXIT_OK, EXIT_SOME_FAILED, ConfigError
    from medimg.models.networks import network_task
    from medimg.tasks import get_task

    if not get_task(network_task(network)).dense:
        raise ConfigError(
            f"--network {network!r}: pretraining needs a network that answers per voxel (a segmentation one)"
        )
    network_params = parse_params(params)
    volumes, failures = _readable_volumes(inputs, window)
    settings = {
        "network": network,
        "params": json.dumps(network_params, sort_keys=True),
        "patch": patch,
        "batch": batch,
        "steps": steps,
        "lr": lr,
        "seed": seed,
        "window": str(window),
        "volumes": len(volumes),
        "unreadable": len(failures),
        "inputs_digest": hashlib.sha256("\n".join(sorted(inputs)).encode()).hexdigest()[:16],
    }
    run = start_tracking(settings) if start_tracking is not None else None
    state = _pretrain_and_save(volumes, out, run, settings, network_params)
    document, lines = _summary(out, state, len(volumes), failures, run)
    return document, lines, EXIT_SOME_FAILED if failures else EXIT_OK


def _readable_volumes(
    inputs: Sequence[str], window: Sequence[float] | None
) -> tuple[list[torch.Tensor], list[tuple[str, str]]]:
    """The volumes read from ``inputs`` and the unreadable ones (each logged); none readable is an error."""
    from medimg.errors import DataError

    volumes, failures = read_volumes(find_volumes(inputs), window)
    for name, reason in failures:
        log.warning("skipped %s: %s", name, reason)
    if not volumes:
        raise DataError(f"no readable 3D NIfTI volume among the inputs ({len(failures)} unreadable)")
    return volumes, failures


def _pretrain_and_save(
    volumes: Sequence[torch.Tensor],
    out: str | Path,
    run: PretrainTracker | None,
    settings: dict[str, Any],
    network_params: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Pretrain on random crops (losses to ``run``), write the weights atomically; the run always ends."""
    from safetensors.torch import save_file

    from medimg.io.atomic import atomic_write
    from medimg.models.ssl import pretrain_network

    network, steps = settings["network"], settings["steps"]

    def track(step: int, values: dict[str, float]) -> None:
        if run is not None and (step % 10 == 0 or step == steps - 1):
            run.log_metrics({f"ssl/{k}": v for k, v in values.items()}, step=step)

    try:
        state = pretrain_network(
            network,
            crop_sampler(volumes, settings["patch"], settings["batch"]),
            steps=steps,
            in_channels=1,
            lr=settings["lr"],
            seed=settings["seed"],
            network_params=network_params,
            log=track,
        )
        metadata = {"medimg": "ssl-pretrain", "network": network, "params": settings["params"]}
        with atomic_write(out, suffix=".safetensors") as tmp:
            save_file(state, str(tmp), metadata=metadata)
        if run is not None:
            run.log_artifact(out)
    finally:
        if run is not None:
            run.end()
    return state


def _summary(
    out: str | Path,
    state: dict[str, torch.Tensor],
    n_volumes: int,
    failures: list[tuple[str, str]],
    run: PretrainTracker | None,
) -> tuple[dict[str, Any], list[str]]:
    """The result document and its text lines (the run's ``model.pretrained.source`` first when tracked)."""
    run_id = run.run_id if run is not None else None
    source = f"runs:/{run_id}/weights" if run_id else None
    document = {
        "out": str(out), "tensors": len(state), "volumes": n_volumes, "unreadable": len(failures),
        "failures": [{"file": name, "reason": reason} for name, reason in failures],
        "run_id": run_id, "pretrained_source": source,
    }  # fmt: skip
    lines = [f"MLflow run {run_id}: model.pretrained.source: {source}"] if run_id else []
    lines.append(f"wrote {out} ({len(state)} tensors) from {n_volumes} volumes; {len(failures)} unreadable")
    return document, lines
