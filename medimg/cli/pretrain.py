"""``medimg pretrain``: self-supervised pretraining of a segmentation network on unlabelled volumes.

The network restores corrupted patches (masked cubes, intensity curves, local
shuffles) and predicts their in-plane rotation (:mod:`medimg.models.ssl`). The
result is a ``.safetensors`` file of the network's own tensors, accepted by
``model.pretrained.source``. Losses and settings are tracked in MLflow; no file
name or path of an input goes to MLflow (only counts and a digest of the list).
The work is done by :func:`medimg.models.pretrain_files.pretrain_files`.

Example::

    medimg pretrain scans/ --network unet --param channels=[16,32,64,128] --param strides=[2,2,2] \\
        --patch 64 --steps 2000 --window -1000 1000 --out runs/ssl_unet.safetensors
"""

from __future__ import annotations

import argparse
from typing import Any

from medimg.cli.output import add_json_flag, emit, options

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


def _tracking(args: argparse.Namespace) -> Any:
    """What starts the MLflow run, given the settings (None with --no-mlflow)."""
    if args.no_mlflow:
        return None

    def start(settings: dict[str, Any]) -> Any:
        from medimg.models.pretrain_files import MlflowPretrainRun
        from medimg.training.tracking import artifact_location, resolve_tracking_uri

        uri = resolve_tracking_uri(args.tracking_uri)
        return MlflowPretrainRun(uri, args.experiment, settings, artifact_location(uri, args.experiment))

    return start


def execute(args: argparse.Namespace) -> int:
    """Pretrain and write the weights; return 0, or 1 when some inputs were unreadable (count printed)."""
    from medimg.models.pretrain_files import pretrain_files

    document, lines, code = pretrain_files(
        args.inputs,
        args.out,
        **options(args, ("network", "patch", "batch", "steps", "lr", "window", "seed"), params="param"),
        start_tracking=_tracking(args),
    )
    emit(args, document, lines)
    return code
