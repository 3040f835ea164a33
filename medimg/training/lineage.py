"""Lineage of a run: which code, which environment, which data (down to each file's hash).

Everything here is logged to MLflow by :mod:`medimg.training.run`, so a reviewer can
answer "which data, which code, which weights, which seed" from the run alone.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from medimg.models.download import sha256_of


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder (its files' names and contents, sorted).

    Example:
        >>> sha256_path(__file__) == sha256_path(__file__)
        True
    """
    p = Path(path)
    if not p.is_dir():
        return sha256_of(p)
    h = hashlib.sha256()  # a folder (DICOM series): names and per-file digests, in sorted order
    for f in sorted(f for f in p.rglob("*") if f.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + sha256_of(f).encode())
    return h.hexdigest()


def file_hashes(
    df: pd.DataFrame, columns: tuple[str, ...] = ("image", "target"), workers: int = 4
) -> pd.DataFrame:
    """One row per (case, file): ``case_key, role, path, sha256`` for every file a manifest names.

    Example:
        >>> file_hashes(manifest_df).columns.tolist()  # doctest: +SKIP
        ['case_key', 'role', 'path', 'sha256']
    """
    jobs = []
    for row in df.itertuples(index=False):
        for col in columns:
            value = getattr(row, col, None)
            if isinstance(value, str) and value and Path(value).exists():
                jobs.append((row.case_key, "label" if col == "target" else col, value))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda j: sha256_path(j[2]), jobs))
    return pd.DataFrame(
        [(k, r, p, d) for (k, r, p), d in zip(jobs, digests, strict=True)],
        columns=["case_key", "role", "path", "sha256"],
    )


def changed_files(recorded: pd.DataFrame) -> list[str]:
    """Files whose content no longer matches the recorded sha256 (or that are gone), one line each."""
    problems = []
    for row in recorded.itertuples(index=False):
        if not Path(row.path).exists():
            problems.append(f"{row.path}: missing (case {row.case_key}, {row.role})")
        elif sha256_path(row.path) != row.sha256:
            problems.append(f"{row.path}: content changed (case {row.case_key}, {row.role})")
    return problems


def environment() -> dict[str, Any]:
    """Versions and hardware: Python, platform, torch, CUDA, cuDNN, GPUs, CPU count, medimg."""
    import torch

    import medimg

    info: dict[str, Any] = {
        "medimg": medimg.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    for mod in ("monai", "lightning", "mlflow", "numpy", "nibabel", "pydicom"):
        try:
            info[mod.lower()] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional or version-less
            info[mod.lower()] = "unknown"
    return info


def pip_freeze() -> str:
    """``pip freeze`` of the running interpreter (empty text when pip is unavailable)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--all"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        return ""
