"""The cohort summary: QC flags per case, and the CSV with one row per case.

Columns: ``case_id, key, status, reason, qc_flags, load_s, predict_s, write_s``, then
``volume_ml:<label>`` for every label seen and ``probability:<class>`` for every class.
Rows carry pseudonymous case ids and keys only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medimg.inference.cases import CaseOutputs
from medimg.io.atomic import atomic_write_text
from medimg.io.csvsafe import escape_row, unescape_cell

#: Columns holding paths (escaped with a ``./`` prefix that keeps them resolvable).
PATH_COLUMNS = ("image", "path")

BASE_COLUMNS = ("case_id", "key", "status", "reason", "qc_flags", "load_s", "predict_s", "write_s")


@dataclass(frozen=True)
class QcLimits:
    """Plausibility limits for the QC flags of the summary (per label, in ml)."""

    max_volume_ml: float = 5000.0
    min_volume_ml: float = 0.0


def qc_flags(outputs: CaseOutputs, volumes: dict[str, float], limits: QcLimits) -> list[str]:
    """QC flags of one case: ``empty_mask`` and ``implausible_volume:<label>``.

    Example:
        >>> qc_flags(CaseOutputs(), {"liver": 9000.0}, QcLimits())
        ['implausible_volume:liver']
    """
    flags = []
    if outputs.mask is not None and not np.any(np.asarray(outputs.mask.data)):
        flags.append("empty_mask")
    for name, ml in volumes.items():
        if ml > limits.max_volume_ml or 0.0 < ml < limits.min_volume_ml:
            flags.append(f"implausible_volume:{name}")
    return flags


def summary_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Flatten per-case rows into CSV columns and records.

    Example:
        >>> cols, recs = summary_rows([{"case_id": "c1", "status": "done", "volumes_ml": {"liver": 1.5}}])
        >>> cols[-1], recs[0]["volume_ml:liver"]
        ('volume_ml:liver', 1.5)
    """
    volume_names: list[str] = []
    class_names: list[str] = []
    for row in rows:
        volume_names += [n for n in (row.get("volumes_ml") or {}) if n not in volume_names]
        class_names += [n for n in (row.get("probabilities") or {}) if n not in class_names]
    columns = [
        *BASE_COLUMNS,
        *(f"volume_ml:{n}" for n in volume_names),
        *(f"probability:{n}" for n in class_names),
    ]
    records = []
    for row in rows:
        timings = row.get("timings") or {}
        record: dict[str, Any] = {
            "case_id": row.get("case_id", ""),
            "key": row.get("key") or "",
            "status": row.get("status", ""),
            "reason": row.get("reason") or "",
            "qc_flags": ";".join(row.get("qc_flags") or []),
            "load_s": timings.get("load_s", ""),
            "predict_s": timings.get("predict_s", ""),
            "write_s": timings.get("write_s", ""),
        }
        record.update({f"volume_ml:{n}": v for n, v in (row.get("volumes_ml") or {}).items()})
        record.update({f"probability:{n}": v for n, v in (row.get("probabilities") or {}).items()})
        records.append(record)
    return columns, records


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write the cohort summary CSV atomically and return its path.

    Example:
        >>> write_summary_csv(Path("out/cohort.csv"), report.rows)  # doctest: +SKIP
    """
    columns, records = summary_rows(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(escape_row(r, PATH_COLUMNS) for r in records)
    return atomic_write_text(path, buffer.getvalue())


def merge_summaries(out_dir: Path) -> Path:
    """Merge the per-shard summaries ``cohort-<i>of<n>.csv`` of ``out_dir`` into ``cohort.csv``.

    Example:
        >>> merge_summaries(Path("out"))  # after all SLURM array jobs finished  # doctest: +SKIP
    """
    rows: list[dict[str, Any]] = []
    columns: list[str] = list(BASE_COLUMNS)
    for part in sorted(Path(out_dir).glob("cohort-*of*.csv")):
        with open(part, newline="") as fh:
            reader = csv.DictReader(fh)
            columns += [c for c in reader.fieldnames or [] if c not in columns]
            rows.extend({k: unescape_cell(v) for k, v in r.items()} for r in reader)
    rows.sort(key=lambda r: r["case_id"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(escape_row(r, PATH_COLUMNS) for r in rows)
    return atomic_write_text(Path(out_dir) / "cohort.csv", buffer.getvalue())
