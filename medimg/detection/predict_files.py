"""``medimg predict`` with a detection model folder: the detection task's cohort runner.

The registry (``medimg.tasks``: the detection task's ``cohort``) sends ``medimg predict MODEL
INPUT... --out DIR`` here, with the command's :class:`medimg.inference.request.PredictRequest`, when
MODEL is a detection model folder. The inputs are collected as for every task (NIfTI files, DICOM
folders, manifest CSVs; objects that are not a scan are set aside with their reason), then
:func:`medimg.detection.cohort.predict_detection_cohort` runs them: ``cases/<case>/boxes.json``,
the DICOM SR for DICOM inputs, the cohort ``boxes.csv``; resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medimg.inference.request import CohortRun, PredictRequest

TAKEN = ("overlap", "workers", "progress")  # the options of medimg predict that detection uses


def predict_detection_files(request: PredictRequest) -> tuple[dict[str, Any], list[str], int]:
    """Detect lesions in every case of the request's inputs with its detection model folder.

    Options of ``medimg predict`` that detection does not take (TTA, PACS, ensembles, ...) are
    refused by name when set, never ignored.

    Returns the result document, its text lines and the exit code (1 when some cases failed).

    Example:
        >>> request = PredictRequest("runs/quickstart_detection/model", ["scan.nii.gz"], "out")
        >>> predict_detection_files(request)  # doctest: +SKIP
        ({'done': 1, ...}, [...], 0)
    """
    from medimg.detection.cohort import predict_detection_cohort
    from medimg.inference.predict_cohort import cohort_result, own_cohort_inputs

    folder, found = own_cohort_inputs(request, TAKEN, "a detection model")
    kwargs = {} if request.overlap is None else {"overlap": request.overlap}
    out = request.out
    run = CohortRun(found.cases, out, progress=request.progress)  # set-aside inputs: in the document
    report = predict_detection_cohort(folder, run, **kwargs)
    document, lines, code = cohort_result(report, out)
    document["boxes_csv"] = str(Path(out) / "boxes.csv")
    lines.append(f"boxes of every case: {Path(out) / 'boxes.csv'}")
    if found.set_aside:
        document["set_aside_inputs"] = [{"case_id": s.case_id, "kind": s.kind, "reason": s.reason}
                                        for s in found.set_aside]  # fmt: skip
        lines.append(f"set aside (not a scan): {len(found.set_aside)} input object(s)")
    return document, lines, code
