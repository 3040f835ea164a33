"""``medimg convert IN OUT``: a DICOM series (or NIfTI) to NIfTI, with an optional JSON sidecar."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand (argparse only; cheap)."""
    p = subparsers.add_parser(
        "convert",
        help="convert a DICOM series folder to NIfTI with exact geometry",
        description="Read IN (a DICOM series folder, 'folder#series_key' for one series of a folder "
        "holding several, or a NIfTI file) and write OUT (.nii or .nii.gz) atomically. Voxel order is "
        "kept; the affine maps it to RAS millimetres. With --sidecar, OUT's name with .json holds "
        "non-PHI acquisition metadata (modality, manufacturer, spacing, QA flags, pseudonymous keys).",
    )
    p.add_argument("input", help="DICOM series folder, folder#series_key, or NIfTI file")
    p.add_argument("output", help="output NIfTI path (.nii or .nii.gz)")
    p.add_argument("--sidecar", action="store_true", help="also write a JSON sidecar of non-PHI metadata")
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
    return p


def execute(args: argparse.Namespace) -> int:
    """Convert and return 0 (errors raise :class:`medimg.errors.DataError`)."""
    import json
    from pathlib import Path

    import numpy as np

    from medimg.errors import ConfigError
    from medimg.io.atomic import atomic_write_text
    from medimg.io.load import load_image
    from medimg.io.nifti import save_nifti

    out = Path(args.output)
    if not str(out).endswith((".nii", ".nii.gz")):
        raise ConfigError(f"{out}: output must end in .nii or .nii.gz")
    vol = load_image(args.input, spacing_policy=args.spacing_policy, tilt_policy=args.tilt_policy)
    dtype = args.dtype
    if dtype == "auto":
        d = vol.data
        integral = d.size and np.all(np.mod(d, 1) == 0) and d.min() >= -32768 and d.max() <= 32767
        dtype = "int16" if integral else "float32"
    save_nifti(vol, out, dtype=np.dtype(dtype))
    if args.sidecar:
        meta = {k: v for k, v in vol.meta.items() if k != "source"}
        meta.update(
            shape=list(vol.shape),
            spacing=[round(s, 6) for s in vol.spacing],
            affine_ras=vol.affine_in("RAS").tolist(),
        )
        name = out.name.removesuffix(".gz").removesuffix(".nii") + ".json"
        atomic_write_text(out.with_name(name), json.dumps(meta, indent=2, default=str) + "\n")
    print(f"{args.input} -> {out} shape {vol.shape} spacing {tuple(round(s, 4) for s in vol.spacing)}")
    return 0
