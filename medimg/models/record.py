"""The hash record of a trained model folder (``model.json``) and its verification.

A model folder is ``workflow.yaml`` + ``model.safetensors`` + ``model.json``; the last one,
written at export, records the sha256 of the other two. Every load checks the files
against it, and, when the model came from MLflow, against the hash the run (or the
registered model version) recorded in the tracking database, which an edit of the
artifact store cannot change. A mismatch is refused with the file, the expected and the
actual hash: weights that changed after training would give plausible, wrong masks.

Example:
    >>> record = write_record("runs/liver/model")  # doctest: +SKIP
    >>> verify_folder("runs/liver/model")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from medimg.errors import WeightsError
from medimg.io.atomic import atomic_write_text
from medimg.models.download import sha256_of

RECORD_FILE = "model.json"
RECORD_FORMAT = "medimg-model/1"
WEIGHTS_FILE = "model.safetensors"
WORKFLOW_FILE = "workflow.yaml"
POSTPROCESS_FILE = "postprocessing.json"  # chosen on validation; recorded when the folder has one
MAX_RECORDED_BYTES = 64 * 2**30
"""Largest file a record may name (read whole into memory to hash and load the same bytes)."""


@dataclass(frozen=True)
class Expected:
    """A sha256 that a trusted place other than the folder recorded for its weights.

    Attributes:
        sha256: Hex digest.
        recorded_in: Where it was recorded, for the error (``MLflow run 3f2a… tag medimg.weights_sha256``).
    """

    sha256: str
    recorded_in: str


def write_record(folder: str | Path, files: tuple[str, ...] = (WEIGHTS_FILE, WORKFLOW_FILE)) -> dict:
    """Write ``model.json`` recording the sha256 of ``files`` in ``folder`` (atomically).

    Example:
        >>> write_record("runs/liver/model")["files"]["model.safetensors"]  # doctest: +SKIP
        '9c1e...'
    """
    folder = Path(folder)
    record = {"format": RECORD_FORMAT, "files": {name: sha256_of(folder / name) for name in files}}
    atomic_write_text(folder / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    return record


def read_record(folder: str | Path) -> dict[str, str] | None:
    """The ``{file name: sha256}`` recorded in ``folder/model.json``; ``None`` when there is none.

    Raises:
        WeightsError: The record is not a medimg record (names the file and what was expected).
    """
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > 1 << 20:
            raise ValueError("larger than 1 MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"] if data.get("format") == RECORD_FORMAT else None
        if not isinstance(files, dict) or not files:
            raise ValueError(f"expected format {RECORD_FORMAT!r} with a 'files' mapping")
        for name, digest in files.items():
            if Path(name).name != name or not isinstance(digest, str) or len(digest) != 64:
                raise ValueError(f"entry {name!r} is not a file name with a 64-character sha256")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a valid medimg model record ({exc})") from None
    return {str(k): str(v).lower() for k, v in files.items()}


def recorded_task(folder: str | Path) -> str | None:
    """The task that made the model folder ``folder``: its ``model.json``'s ``task`` (the folders of
    tasks with a study of their own record it there), else its ``workflow.yaml``'s; ``None`` when
    ``folder`` is no folder (a run id, a ``models:/`` URI) or says neither.

    Example:
        >>> recorded_task("runs/quickstart_detection/model")  # doctest: +SKIP
        'detection'
    """
    import yaml

    path = Path(folder)
    if not path.is_dir():
        return None
    for name, read in ((RECORD_FILE, json.loads), (WORKFLOW_FILE, yaml.safe_load)):
        try:
            found = read((path / name).read_text()) if (path / name).is_file() else None
        except (ValueError, yaml.YAMLError, OSError):
            found = None
        if isinstance(found, dict) and isinstance(found.get("task"), str):
            return str(found["task"])
    return None


def mismatch(path: Path, actual: str, expected: str, recorded_in: str) -> WeightsError:
    """The refusal for a file whose sha256 differs from a record (names file, expected, actual)."""
    return WeightsError(
        f"{path}: sha256 {actual} does not match {expected} recorded in {recorded_in}; the file changed "
        f"after it was recorded (tampered or damaged); refusing to load it"
    )


def read_verified(
    folder: str | Path,
    name: str,
    record: dict[str, str] | None,
    expected: Expected | None = None,
    *,
    required: bool = True,
    shown: str | None = None,
) -> tuple[bytes, str]:
    """Read ``folder/name`` once and check its sha256 against ``expected`` and the record.

    Args:
        folder: The model folder.
        name: File inside it.
        record: ``model.json``'s entries (:func:`read_record`), or ``None``.
        expected: A hash recorded outside the folder (MLflow), checked first, or ``None``.
        required: Refuse when neither the record nor ``expected`` covers the file.
        shown: How to name the folder in errors (``runs:/ID/model`` for a temporary copy).

    Returns:
        ``(content, sha256)``: the verified bytes (load these, not the file again) and their hash.

    Raises:
        WeightsError: Missing file, a hash that differs, or nothing to check it against.
    """
    path = Path(folder) / name
    label = Path(shown) if shown else Path(folder)
    if not path.is_file():
        raise WeightsError(
            f"{label / name}: not found; a trained model folder holds {WORKFLOW_FILE} and {WEIGHTS_FILE}"
        )
    if path.stat().st_size > MAX_RECORDED_BYTES:
        raise WeightsError(
            f"{label / name}: {path.stat().st_size / 2**30:.1f} GiB is larger than any medimg model"
        )
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if expected is not None and expected.sha256 != actual:
        raise mismatch(label / name, actual, expected.sha256, expected.recorded_in)
    if record is not None and name in record and record[name] != actual:
        raise mismatch(label / name, actual, record[name], str(label / RECORD_FILE))
    if required and (record is None or name not in record) and expected is None:
        raise WeightsError(
            f"{label / name}: no sha256 record to check it against ({label / RECORD_FILE} is missing or "
            f"does not name {name}); medimg writes one at export. If you trust this folder, record its "
            f"hashes with `medimg weights record {label}`"
        )
    return content, actual


def verify_sidecar(path: str | Path) -> str | None:
    """Check ``path`` against ``path.sha256`` (``sha256sum`` format) when that file exists.

    Returns:
        The verified sha256, or ``None`` when there is no sidecar record.

    Example:
        >>> verify_sidecar("runs/liver/checkpoints/best.ckpt")  # doctest: +SKIP
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None
    words = sidecar.read_text(encoding="utf-8", errors="replace").split()
    expected = words[0].lower() if words else ""
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise WeightsError(f"{sidecar}: expected a sha256 (64 hexadecimal characters) as its first word")
    actual = sha256_of(path)
    if actual != expected:
        raise mismatch(path, actual, expected, str(sidecar))
    return actual
