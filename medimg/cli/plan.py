"""``medimg plan DATA --task ... --out WORKFLOW.yaml``: a workflow planned from the data and the machine."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plan",
        help="fingerprint a dataset and write a workflow planned for it and this machine",
        description="Read every case's header (and a sample of cases whole) of DATA, write the dataset "
        "fingerprint (JSON: spacings, shapes, modality, foreground intensities, label volumes and "
        "components, class balance) and a complete workflow YAML derived from it, the machine and an "
        "optional time budget: target spacing, patch and batch, network, normalisation, augmentation, "
        "loss, optimiser and schedule, each with a comment saying why. Deterministic for a dataset "
        "and a machine.",
        epilog="example: medimg plan data/Task04_Hippocampus --task segmentation --out hippo.yaml --budget 20m",
    )
    p.add_argument("data", help="a manifest CSV, a dataset.json (or its folder), or a DICOM folder")
    p.add_argument("--task", required=True, choices=("segmentation", "classification"), help="what to learn")
    p.add_argument("--out", required=True, help="workflow YAML to write")
    p.add_argument("--budget", help="training wall-clock budget, e.g. 90s, 20m, 8h (trainer.max_time)")
    p.add_argument("--fingerprint", help="fingerprint JSON to write (default: WORKFLOW.fingerprint.json)")
    p.add_argument("--label-column", default="label", help="manifest column with the label or class")
    p.add_argument("--image-column", default="image", help="manifest column with the image path")
    p.add_argument(
        "--sample", type=int, default=16, help="cases read whole for intensities and labels (default 16)"
    )
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medimg.data.recipe import plan_dataset
    from medimg.errors import ConfigError

    if args.sample < 1:
        raise ConfigError(f"--sample must be >= 1, got {args.sample}")
    out = Path(args.out)
    result = plan_dataset(
        args.data,
        args.task,
        out,
        budget=args.budget,
        fingerprint_path=Path(args.fingerprint) if args.fingerprint else None,
        label_column=args.label_column,
        image_column=args.image_column,
        max_intensity_cases=args.sample,
    )
    r = result.recipe
    document = {
        "workflow": str(out),
        "fingerprint": str(result.fingerprint_path),
        "n_cases": result.fingerprint["n_cases"],
        "modality": result.fingerprint["modality"],
        "values": r.workflow,
        "reasons": r.reasons,
    }
    lines = [f"{result.fingerprint['n_cases']} cases ({result.fingerprint['modality']}); "
             f"fingerprint -> {result.fingerprint_path}", f"workflow -> {out}"]  # fmt: skip
    lines += [f"  {k}: {r.get(k)}  # {why}" for k, why in r.reasons.items()]
    emit(args, document, lines)
    return 0
