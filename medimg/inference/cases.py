"""Cases of a cohort: what goes in, what comes out, how a case is keyed and sharded.

A case is keyed on the sha256 of its input *content* (not its path or name), the
model key (e.g. the weights sha256) and the settings key (e.g. the hash of the
resolved inference settings). Same bytes, same model, same settings: same key, and a
rerun skips it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import ConfigError, DataError
from medimg.io.volume import Volume

_CHUNK = 1 << 20


@dataclass(frozen=True)
class CaseInput:
    """One case of a cohort.

    Args:
        case_id: pseudonymous, file-system safe name of the case (used for its output
            folder, the ledger and the summary; never a patient name or ID).
        paths: input files or folders (a DICOM series folder, a NIfTI file, ...).
        content_sha256: precomputed content hash; computed from ``paths`` when None.
        meta: anything the caller's ``load_fn`` needs (not written anywhere).

    Example:
        >>> case = CaseInput("case-001", (Path("series/001"),))
    """

    case_id: str
    paths: tuple[Path, ...] = ()
    content_sha256: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.case_id or any(c in self.case_id for c in "/\\\0") or self.case_id in (".", ".."):
            raise ConfigError(f"case_id {self.case_id!r}: expected a non-empty name without path separators")
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))


@dataclass(frozen=True)
class SetAside:
    """An input object that is not a case, listed in the cohort summary with its reason.

    Localizers, derived images, secondary captures and non-image objects (structured
    reports, ...) are set aside on purpose (``status`` ``set_aside``); a series that
    cannot be used (missing slices, no geometry) is a failure (``failed``); a file that
    is not readable DICOM is ``unreadable``. Only failures count in the exit code.

    Example:
        >>> SetAside("series-1f2e3d4c5b6a", "localizer", "localizer (ImageType ORIGINAL/PRIMARY/LOCALIZER)").status
        'set_aside'
    """

    case_id: str
    kind: str  # localizer | derived | secondary_capture | non_image | unsupported | unreadable
    reason: str

    @property
    def status(self) -> str:
        return {"unsupported": "failed", "unreadable": "unreadable"}.get(self.kind, "set_aside")


class SetAsideError(DataError):
    """Raised by a ``load_fn`` when a case turns out not to be one (e.g. a retrieved localizer)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class CaseOutputs:
    """What a predictor returns for one case; writers turn it into files.

    Args:
        mask: label map on the input's grid (a Volume, so it keeps its affine).
        labels: label value -> name, for volumes, DICOM SEG segments and SR.
        probabilities: class name -> probability (classification models).
        source: what ``load_fn`` returned (e.g. source DICOM datasets), for writers.
        extra: further numbers to keep in the per-case JSON (must be JSON-serialisable).
        written: filled by the writers: writer name -> path written (a later writer may
            reference an earlier one's output, as the SR references the SEG).

    Example:
        >>> out = CaseOutputs(mask=Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4)), labels={1: "liver"})
    """

    mask: Volume | None = None
    labels: dict[int, str] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)
    source: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Path] = field(default_factory=dict)


def content_sha256(paths: Sequence[Path]) -> str:
    """sha256 over the contents of every file in ``paths`` (folders are walked).

    The digest depends on file contents only, not on names or order, so a copied or
    renamed series keeps its key.

    Example:
        >>> content_sha256([Path("series/001")])  # doctest: +SKIP
        '3f1c...'
    """
    digests: list[str] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"{path}: input not found (expected a file or a folder)")
        for file in files:
            h = hashlib.sha256()
            with open(file, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            digests.append(h.hexdigest())
    if not digests:
        raise DataError(f"{', '.join(str(p) for p in paths) or '(no paths)'}: no input files")
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def case_key(case: CaseInput, model_key: str, settings_key: str) -> str:
    """The key of a case: sha256 of content hash, model key and settings key.

    Example:
        >>> case_key(CaseInput("c1", content_sha256="ab"), "model", "settings")[:12]
        '52fafe291a9f'
    """
    content = case.content_sha256 or content_sha256(case.paths)
    return hashlib.sha256(f"{content}\n{model_key}\n{settings_key}".encode()).hexdigest()


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0-based index ``i`` of ``n`` shards), as given to ``--shard``.

    Example:
        >>> parse_shard("2/8")
        (2, 8)
    """
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected 'i/n' with integers, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: expected 0 <= i < n (shards are numbered 0..n-1)")
    return index, count


def shard_cases(cases: Sequence[CaseInput], shard: tuple[int, int] | None) -> list[CaseInput]:
    """The cases of one shard: a deterministic partition by sorted ``case_id``.

    Every case lands in exactly one shard whatever the input order, so ``n`` array
    jobs with ``shard=(i, n)`` together cover the cohort once. For SLURM:
    ``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` with ``--array=0-(n-1)``.

    Example:
        >>> cs = [CaseInput(f"c{i}", content_sha256="x") for i in range(5)]
        >>> [c.case_id for c in shard_cases(cs, (1, 2))]
        ['c1', 'c3']
    """
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"case_id must be unique; repeated: {', '.join(dupes[:5])}")
    if shard is None:
        return list(cases)
    index, count = shard
    ordered = sorted(cases, key=lambda c: c.case_id)
    return [c for position, c in enumerate(ordered) if position % count == index]


def label_volumes_ml(mask: Volume, labels: dict[int, str] | None = None) -> dict[str, float]:
    """Volume in millilitres of each label of ``mask`` (voxel count x voxel volume).

    Labels listed in ``labels`` are always reported (0.0 when absent); other non-zero
    values are reported under their number.

    Example:
        >>> m = Volume(np.ones((10, 10, 10), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
        >>> label_volumes_ml(m, {1: "liver"})
        {'liver': 2.0}
    """
    voxel_ml = abs(float(np.linalg.det(mask.affine[:3, :3]))) / 1000.0
    values, counts = np.unique(np.asarray(mask.data), return_counts=True)
    found = {int(v): int(c) for v, c in zip(values, counts, strict=True) if v != 0}
    names = dict(labels or {})
    out = {name: round(found.get(value, 0) * voxel_ml, 4) for value, name in sorted(names.items())}
    for value, count in sorted(found.items()):
        if value not in names:
            out[str(value)] = round(count * voxel_ml, 4)
    return out


def _fsname(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)


def folder_name(case_id: str) -> str:
    """The output folder name of a case: the case id itself when it is file-system safe.

    Otherwise unsafe characters become ``_`` and a stable suffix, the first 8 hex digits
    of sha256(case id), keeps ids apart that would otherwise share a folder.

    Example:
        >>> folder_name("p_1"), folder_name("p 1"), folder_name("p:1")
        ('p_1', 'p_1-85051de8', 'p_1-aba6e55b')
    """
    safe = _fsname(case_id)
    if safe == case_id and safe not in (".", ".."):
        return case_id
    return f"{safe}-{hashlib.sha256(case_id.encode()).hexdigest()[:8]}"


def case_dir(out_dir: Path, case: CaseInput) -> Path:
    """The folder of one case's outputs: ``out_dir/cases/<folder_name(case_id)>``."""
    return Path(out_dir) / "cases" / folder_name(case.case_id)


def check_case_folders(cases: Sequence[CaseInput]) -> None:
    """Refuse, before any work, two cases whose outputs would share a folder.

    Folder names are compared ignoring case too (macOS and Windows file systems do).

    Raises:
        ConfigError: naming both case ids.
    """
    seen: dict[str, str] = {}
    for case in cases:
        folder = folder_name(case.case_id).casefold()
        if folder in seen and seen[folder] != case.case_id:
            raise ConfigError(
                f"case ids {seen[folder]!r} and {case.case_id!r} would share the output folder "
                f"cases/{folder_name(case.case_id)} (names differing only in letter case or in characters "
                "a file system cannot hold); give them distinct case_key values"
            )
        seen[folder] = case.case_id


def is_partial_name(name: str) -> bool:
    """True for the temporary files ``medimg.io.atomic`` leaves behind when killed."""
    return name.startswith(".") and ".part" in name


def remove_partial_files(folder: Path) -> int:
    """Delete leftovers of killed atomic writes under ``folder``; return how many."""
    removed = 0
    if not Path(folder).is_dir():
        return 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if is_partial_name(name):
                Path(root, name).unlink(missing_ok=True)
                removed += 1
    return removed
