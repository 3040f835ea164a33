"""``medimg scan DIR``: QA manifest of usable series and a table of every excluded file or series."""

from __future__ import annotations

import argparse
import os
import sys

from medimg.cli.output import add_json_flag, emit


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``scan`` subcommand (argparse only; cheap)."""
    p = subparsers.add_parser(
        "scan",
        help="find DICOM series and NIfTI files, write a QA manifest and an excluded table",
        description="Walk DIR (any depth), read DICOM headers in parallel, group and split series, "
        "classify them (volume, with derived maps flagged 'derived' / localizer / secondary capture / "
        "non-image object such as an SR / unsupported / not DICOM) and write "
        "MANIFEST (one row per usable series: image path, pseudonymous patient/study/series keys, "
        "modality, dims, spacing, orientation, QA flags) and EXCLUDED (one line per bad file or "
        "set-aside series, with the reason). The manifest feeds training and `medimg predict` directly; "
        "its paths are relative to the manifest's folder (move the output with the data), or absolute "
        "with --absolute-paths. "
        "Exit code 0 when every file was usable or set aside on purpose, 1 when some were broken.",
    )
    p.add_argument("dir", help="folder to scan")
    p.add_argument("-o", "--out", default=".", help="output folder (default: current folder)")
    p.add_argument(
        "--manifest", default="manifest.csv", help="manifest file name in --out (.csv or .parquet)"
    )
    p.add_argument(
        "--excluded", default="excluded.csv", help="excluded table file name in --out (.csv or .parquet)"
    )
    p.add_argument(
        "-j", "--workers", type=int, default=min(4, os.cpu_count() or 1), help="header-reading processes"
    )
    p.add_argument(
        "--spacing-policy",
        choices=("refuse", "resample"),
        default="refuse",
        help="series with missing slices or non-uniform spacing: exclude them (refuse) or list them flagged "
        "(resample; load them with spacing_policy='resample', e.g. MedimgImageReader(spacing_policy='resample'))",
    )
    p.add_argument("--verify", action="store_true", help="also decode every usable series (slower)")
    p.add_argument(
        "--absolute-paths",
        action="store_true",
        help="write absolute paths (default: relative to the folder of the manifest / excluded table)",
    )
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run the scan and write both tables; return 1 when broken files or series were found."""
    from pathlib import Path

    from medimg.errors import DataError
    from medimg.io.scan import scan, write_scan

    root = Path(args.dir)
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    result = scan(root, workers=args.workers, spacing_policy=args.spacing_policy, verify=args.verify)
    out = Path(args.out)
    write_scan(result, out / args.manifest, out / args.excluded, absolute_paths=args.absolute_paths)
    manifest, excluded = out / args.manifest, out / args.excluded
    document = {
        "usable": len(result.manifest),
        "excluded": len(result.excluded),
        "broken": result.problems,
        "manifest": str(manifest),
        "excluded_table": str(excluded),
    }
    emit(args, document, [f"{len(result.manifest)} usable series -> {manifest}",
                          f"{len(result.excluded)} excluded ({result.problems} broken) -> {excluded}"])  # fmt: skip
    if result.problems:
        print(
            f"medimg scan: {result.problems} file(s) or series could not be used; see {out / args.excluded}",
            file=sys.stderr,
        )
    return 1 if result.problems else 0
