"""``medimg synth OUT``: write a synthetic study with known ground truth."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "synth",
        help="write a synthetic NIfTI study (oblique, anisotropic, two organs, lesion class)",
        description="Write synthetic cases with known ground truth: image, label map (1 organ, 2 kidney), "
        "lesion mask and a class per case (1 = lesion present), on oblique anisotropic grids with noise "
        "and a smooth bias field, plus manifest.csv. Deterministic for a seed.",
    )
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--cases", type=int, default=24, help="number of cases (default 24)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    for flag, kind, default, names, what in (
        ("--shape", int, (64, 64, 40), ("I", "J", "K"), "voxels per case"),
        ("--spacing", float, (1.6, 1.6, 2.5), ("DX", "DY", "DZ"), "voxel size in mm"),
    ):
        what += f" (default {' '.join(map(str, default))})"
        p.add_argument(flag, type=kind, nargs=3, default=default, metavar=names, help=what)
    p.add_argument("--oblique", type=float, default=12.0, help="grid rotation in degrees (default 12)")
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
    from medimg.errors import ConfigError

    if args.cases < 1:
        raise ConfigError(f"--cases must be >= 1, got {args.cases}")
    grid = SyntheticGrid(tuple(args.shape), tuple(args.spacing), args.oblique)
    manifest = write_synthetic_study(args.out, args.cases, args.seed, grid)
    document = {"cases": args.cases, "seed": args.seed, "out": str(args.out), "manifest": str(manifest)}
    emit(args, document, [f"wrote {args.cases} cases; manifest: {manifest}"])
    return 0
