"""``medimg deid IN OUT``: DICOM PS3.15 Annex E basic-profile de-identification of a folder."""

from __future__ import annotations

import argparse
import sys

from medimg.cli.output import add_json_flag, emit


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``deid`` subcommand (argparse only; cheap)."""
    p = subparsers.add_parser(
        "deid",
        help="de-identify DICOM files (PS3.15 Annex E basic profile)",
        description="Copy every DICOM file under IN to OUT de-identified per DICOM PS3.15 Annex E, "
        "Basic Application Confidentiality Profile: names, IDs, birth dates, accession numbers, "
        "institution and free-text fields removed or emptied, private tags and overlays removed, UIDs "
        "replaced consistently (keyed hash), Patient Identity Removed and De-identification Method set. "
        "PatientName/PatientID become the pseudonymous patient key. Output names come from pseudonyms only. "
        "The key is $MEDIMG_PSEUDONYM_KEY, --key-file, or ~/.medimg/pseudonym.key (created once). "
        "Exit code 1 when some files could not be de-identified (listed on stderr).",
    )
    p.add_argument("input", help="folder of DICOM files (any depth)")
    p.add_argument("output", help="output folder")
    p.add_argument("--key-file", help="file holding the secret used for pseudonyms and UIDs")
    p.add_argument("--retain-uids", action="store_true", help="Retain UIDs Option (keep original UIDs)")
    p.add_argument(
        "--dates",
        choices=("remove", "keep", "shift"),
        default="remove",
        help="remove dates (basic profile), keep them (Retain Longitudinal Full Dates Option) "
        "or shift them by a per-patient offset (Modified Dates Option)",
    )
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """De-identify and return 1 when some files were excluded."""
    from pathlib import Path

    from medimg.errors import ConfigError, DataError
    from medimg.io.dicom.deid import deidentify_folder

    if not Path(args.input).is_dir():
        raise DataError(f"{args.input}: folder not found")
    key = None
    if args.key_file:
        key_path = Path(args.key_file)
        if not key_path.is_file():
            raise ConfigError(
                f"--key-file {key_path}: file not found (expected a file holding the secret key)"
            )
        key = key_path.read_bytes().strip()
        if not key:
            raise ConfigError(f"--key-file {key_path}: file is empty (expected the secret key)")
    written, excluded = deidentify_folder(
        args.input, args.output, key=key, retain_uids=args.retain_uids, dates=args.dates
    )
    document = {
        "deidentified": len(written),
        "output": str(args.output),
        "excluded": [{"path": str(e.path), "reason": e.reason} for e in excluded],
    }
    emit(args, document, [f"{len(written)} file(s) de-identified -> {args.output}"])
    for e in excluded:
        print(f"excluded: {e.path}: {e.reason}", file=sys.stderr)
    return 1 if excluded else 0
