"""``medimg pretrain``: self-supervised pretraining of a segmentation network on unlabelled volumes.

The network restores corrupted patches (masked cubes, intensity curves, local
shuffles) and predicts their in-plane rotation (:mod:`medimg.models.ssl`). The
result is a ``.safetensors`` file of the network's own tensors, accepted by
``model.pretrained.source``. Losses and settings are tracked in MLflow; no file
name or path of an input goes to MLflow (only counts and a digest of the list).

Example::

    medimg pretrain scans/ --network unet --param channels=[16,32,64,128] --param strides=[2,2,2] \\
        --patch 64 --steps 2000 --window -1000 1000 --out runs/ssl_unet.safetensors
"""

from __future__ import annotations

import argparse
from typing import Any

from medimg.cli.output import add_json_flag, emit

DESCRIPTION = (
    "Self-supervised pretraining (restoration of masked/shuffled/intensity-curved patches plus rotation "
    "prediction) of a segmentation network on unlabelled NIfTI volumes. Writes .safetensors weights that "
    "model.pretrained.source accepts, and tracks the run in MLflow."
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``pretrain`` command to the ``medimg`` parser."""
    p = subparsers.add_parser(
        "pretrain", help="self-supervised pretraining on unlabelled volumes", description=DESCRIPTION
    )
    p.add_argument("inputs", nargs="+", help="NIfTI files (.nii/.nii.gz) or folders searched recursively")
    p.add_argument("--out", required=True, help="output .safetensors file (written atomically)")
    p.add_argument("--network", default="unet", help="segmentation network name (default unet)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="network parameter as JSON (repeatable), e.g. --param channels=[16,32,64]",
    )
    p.add_argument("--patch", type=int, default=64, help="cubic patch side in voxels (default 64)")
    p.add_argument("--batch", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="clip intensities to this window and scale to [0, 1] (CT: -1000 1000); "
        "default: per-volume z-score",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--tracking-uri",
        default="sqlite:///runs/mlflow.db",
        help="MLflow tracking URI (default sqlite:///runs/mlflow.db)",
    )
    p.add_argument("--experiment", default="pretrain", help="MLflow experiment (default pretrain)")
    p.add_argument("--no-mlflow", action="store_true", help="do not track the run")
    add_json_flag(p)
    return p


def _volumes(args: argparse.Namespace) -> tuple[list, list[tuple[str, str]]]:
    """The readable volumes, normalised, and (file name, reason) of each unreadable input."""
    from pathlib import Path

    import numpy as np
    import torch

    from medimg.errors import DataError
    from medimg.io.load import load_image

    files: list[Path] = []
    for item in args.inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
        else:
            files.append(path)
    volumes, failures = [], []
    for path in files:
        try:
            data = np.asarray(load_image(path).data, dtype=np.float32)
            if data.ndim != 3:
                raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
            if args.window:
                low, high = args.window
                data = (np.clip(data, low, high) - low) / (high - low)
            else:
                data = (data - data.mean()) / max(float(data.std()), 1e-6)
            volumes.append(torch.from_numpy(data)[None])
        except (DataError, ValueError, OSError) as exc:
            failures.append((path.name, str(exc)))
    return volumes, failures


def execute(args: argparse.Namespace) -> int:
    """Pretrain and write the weights; return 0, or 1 when some inputs were unreadable (count printed)."""
    import hashlib
    import json
    import logging

    import torch
    from safetensors.torch import save_file

    from medimg.errors import EXIT_OK, EXIT_SOME_FAILED, ConfigError, DataError
    from medimg.io.atomic import atomic_write
    from medimg.models.networks import network_task
    from medimg.models.ssl import pretrain_network

    log = logging.getLogger("medimg.pretrain")
    if network_task(args.network) != "segmentation":
        raise ConfigError(f"--network {args.network!r}: pretraining needs a segmentation network")
    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=JSON")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    volumes, failures = _volumes(args)
    for name, reason in failures:
        log.warning("skipped %s: %s", name, reason)
    if not volumes:
        raise DataError(f"no readable 3D NIfTI volume among the inputs ({len(failures)} unreadable)")
    patch = args.patch

    def sampler(generator: torch.Generator) -> torch.Tensor:
        crops = []
        for _ in range(args.batch):
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

    settings = {
        "network": args.network,
        "params": json.dumps(params, sort_keys=True),
        "patch": patch,
        "batch": args.batch,
        "steps": args.steps,
        "lr": args.lr,
        "seed": args.seed,
        "window": str(args.window),
        "volumes": len(volumes),
        "unreadable": len(failures),
        "inputs_digest": hashlib.sha256("\n".join(sorted(args.inputs)).encode()).hexdigest()[:16],
    }
    run = None
    if not args.no_mlflow:
        import mlflow

        from medimg.training.tracking import artifact_location, resolve_tracking_uri

        uri = resolve_tracking_uri(args.tracking_uri)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(args.experiment) is None:
            mlflow.create_experiment(
                args.experiment, artifact_location=artifact_location(uri, args.experiment)
            )
        mlflow.set_experiment(args.experiment)
        run = mlflow.start_run(tags={"medimg.command": "pretrain"})
        mlflow.log_params(settings)

    def track(step: int, values: dict[str, float]) -> None:
        if run is not None and (step % 10 == 0 or step == args.steps - 1):
            mlflow.log_metrics({f"ssl/{k}": v for k, v in values.items()}, step=step)

    try:
        state = pretrain_network(
            args.network,
            sampler,
            steps=args.steps,
            in_channels=1,
            lr=args.lr,
            seed=args.seed,
            network_params=params,
            log=track,
        )
        metadata = {"medimg": "ssl-pretrain", "network": args.network, "params": settings["params"]}
        with atomic_write(args.out, suffix=".safetensors") as tmp:
            save_file(state, str(tmp), metadata=metadata)
        if run is not None:
            mlflow.log_artifact(args.out, artifact_path="weights")
    finally:
        if run is not None:
            mlflow.end_run()
    run_id = run.info.run_id if run is not None else None
    source = f"runs:/{run_id}/weights" if run_id else None
    document = {
        "out": str(args.out), "tensors": len(state), "volumes": len(volumes), "unreadable": len(failures),
        "failures": [{"file": name, "reason": reason} for name, reason in failures],
        "run_id": run_id, "pretrained_source": source,
    }  # fmt: skip
    lines = [f"MLflow run {run_id}: model.pretrained.source: {source}"] if run_id else []
    lines.append(
        f"wrote {args.out} ({len(state)} tensors) from {len(volumes)} volumes; {len(failures)} unreadable"
    )
    emit(args, document, lines)
    return EXIT_SOME_FAILED if failures else EXIT_OK  # the count is printed above
