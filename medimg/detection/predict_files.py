"""``medimg predict`` with a detection model folder: the detection task's cohort runner.

The registry (``medimg.tasks``: the detection task's ``cohort``) sends ``medimg predict MODEL
INPUT... --out DIR`` here when MODEL is a detection model folder. The inputs are collected as for
every task (NIfTI files, DICOM folders, manifest CSVs; objects that are not a scan are set aside
with their reason), then :func:`medimg.detection.cohort.predict_detection_cohort` runs them:
``cases/<case>/boxes.json``, the DICOM SR for DICOM inputs, the cohort ``boxes.csv``; resumable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

TAKEN = ("overlap", "workers")  # the options of medimg predict that detection uses


def predict_detection_files(
    model: str | Sequence[str],
    inputs: Sequence[str],
    out: str | Path,
    *,
    overlap: float | None = None,
    workers: int | None = None,
    progress: bool = True,
    **options: Any,
) -> tuple[dict[str, Any], list[str], int]:
    """Detect lesions in every case of ``inputs`` with the detection model folder ``model``.

    Options of ``medimg predict`` that detection does not take (TTA, PACS, ensembles, ...) are
    refused by name when set, never ignored.

    Returns the result document, its text lines and the exit code (1 when some cases failed).

    Example:
        >>> predict_detection_files("runs/quickstart_detection/model", ["scan.nii.gz"], "out")  # doctest: +SKIP
        ({'done': 1, ...}, [...], 0)
    """
    from medimg.detection.cohort import predict_detection_cohort
    from medimg.inference.predict_cohort import cohort_result, own_cohort_inputs

    folder, found = own_cohort_inputs(model, inputs, options, TAKEN, "a detection model", workers)
    kwargs = {} if overlap is None else {"overlap": overlap}
    report = predict_detection_cohort(folder, found.cases, out, progress=progress, **kwargs)
    document, lines, code = cohort_result(report, out)
    document["boxes_csv"] = str(Path(out) / "boxes.csv")
    lines.append(f"boxes of every case: {Path(out) / 'boxes.csv'}")
    if found.set_aside:
        document["set_aside_inputs"] = [{"case_id": s.case_id, "kind": s.kind, "reason": s.reason}
                                        for s in found.set_aside]  # fmt: skip
        lines.append(f"set aside (not a scan): {len(found.set_aside)} input object(s)")
    return document, lines, code
