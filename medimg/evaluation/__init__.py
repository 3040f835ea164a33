"""Evaluation a reviewer accepts: metrics, bootstrap CIs, subgroups, comparisons, plots, study report.

The main entry points are :func:`segmentation_case_metrics` (one case, all labels),
:func:`classification_metrics` (one cohort) and :func:`evaluate_study` (per-case table
in, ``per_case.csv`` + ``summary.json`` + PNG plots + self-contained ``report.html`` out).
Submodules are imported lazily so ``import medimg.evaluation`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "segmentation_case_metrics": "seg_metrics",
    "classification_metrics": "cls_metrics",
    "bootstrap_ci": "bootstrap",
    "paired_comparison": "compare",
    "subgroup_analysis": "subgroups",
    "evaluate_study": "report",
    "StudyResult": "report",
    "flat_metrics": "summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"medimg.evaluation.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'medimg.evaluation' has no attribute {name!r}")
