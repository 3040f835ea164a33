"""``medimg convert IN OUT``: a DICOM series (or NIfTI) to NIfTI, or every series of a DICOM tree."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medimg.cli.output import add_json_flag, emit, options


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand (argparse only; cheap)."""
    p = subparsers.add_parser(
        "convert",
        help="convert a DICOM series, or every series of a DICOM tree, to NIfTI with exact geometry",
        description="Read IN (a DICOM series folder, 'folder#series_key' for one series of a folder "
        "holding several, or a NIfTI file) and write OUT (.nii or .nii.gz) atomically. Voxel order is "
        "kept; the affine maps it to RAS millimetres. With --sidecar, OUT's name with .json holds "
        "non-PHI acquisition metadata (modality, manufacturer, spacing, QA flags, pseudonymous keys). "
        "When IN is a folder and OUT is not a .nii/.nii.gz name, every usable series under IN is "
        "converted into the folder OUT as <patient_key>/<study_key>/<SeriesNumber>_<label>_<series_key>"
        ".nii.gz with a JSON sidecar each (the label keeps only acquisition words of the "
        "SeriesDescription, never names, IDs or dates), and OUT/manifest.csv + OUT/excluded.csv are "
        "written as 'medimg scan' writes them. Exit code 1 when some files or series were broken "
        "(everything usable is still converted), else 0.",
    )
    p.add_argument("input", help="DICOM series folder, folder#series_key, NIfTI file, or a DICOM tree")
    p.add_argument("output", help="output NIfTI path (.nii or .nii.gz), or an output folder for a tree")
    p.add_argument("--sidecar", action="store_true", help="also write a JSON sidecar (always on for a tree)")
    p.add_argument(
        "--spacing-policy",
        choices=("refuse", "resample"),
        default="refuse",
        help="missing slices / non-uniform spacing: refuse (default) or resample onto the median step",
    )
    p.add_argument(
        "--tilt-policy",
        choices=("keep", "resample", "refuse"),
        default="keep",
        help="gantry tilt: keep the exact sheared affine (default), resample to an orthogonal grid, or refuse",
    )
    p.add_argument("--dtype", choices=("float32", "int16", "auto"), default="auto",
                   help="output voxel type; auto = int16 when every value is an integer in range, else float32")  # fmt: skip
    p.add_argument(
        "-j",
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="header-reading processes (tree)",
    )
    add_json_flag(p)
    return p


def _convert_tree(args: argparse.Namespace) -> int:
    from medimg.io.convert_tree import convert_tree

    result = convert_tree(
        args.input, args.output, **options(args, ("workers", "spacing_policy", "tilt_policy", "dtype"))
    )
    out = Path(args.output)
    document = {
        "converted": len(result.written),
        "excluded": len(result.scan.excluded),
        "broken": result.problems,
        "out": str(out),
        "manifest": str(out / "manifest.csv"),
        "excluded_table": str(out / "excluded.csv"),
        "written": [str(p) for p in result.written],
    }
    emit(args, document, [
        f"{len(result.written)} series converted -> {out}; manifest {out / 'manifest.csv'}",
        f"{len(result.scan.excluded)} excluded ({result.problems} broken) -> {out / 'excluded.csv'}",
    ])  # fmt: skip
    if result.problems:
        print(
            f"medimg convert: {result.problems} file(s) or series could not be used; see {out / 'excluded.csv'}",
            file=sys.stderr,
        )
    return 1 if result.problems else 0


def execute(args: argparse.Namespace) -> int:
    """Convert one series (errors raise :class:`medimg.errors.DataError`) or a whole tree."""
    from medimg.errors import ConfigError
    from medimg.io.convert_tree import choose_dtype, write_volume
    from medimg.io.load import load_image
    from medimg.io.nifti import save_nifti

    out = Path(args.output)
    is_nii = str(out).endswith((".nii", ".nii.gz"))
    if not is_nii and Path(args.input).is_dir():
        return _convert_tree(args)
    if not is_nii:
        raise ConfigError(
            f"{out}: output must end in .nii or .nii.gz (or be a folder when the input is a folder)"
        )
    vol = load_image(args.input, spacing_policy=args.spacing_policy, tilt_policy=args.tilt_policy)
    dtype = choose_dtype(vol, args.dtype)
    sidecar = None
    if args.sidecar:
        write_volume(vol, out, args.dtype)
        sidecar = out.with_name(out.name.removesuffix(".gz").removesuffix(".nii") + ".json")
    else:
        save_nifti(vol, out, dtype=dtype)
    spacing = tuple(round(s, 4) for s in vol.spacing)
    document = {"input": str(args.input), "output": str(out), "shape": list(vol.shape), "spacing": spacing,
                "dtype": str(dtype), "sidecar": str(sidecar) if sidecar else None}  # fmt: skip
    emit(args, document, [f"{args.input} -> {out} shape {vol.shape} spacing {spacing}"])
    return 0
