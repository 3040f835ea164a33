"""``medimg evaluate`` with a detection model folder: the detection task's evaluation runner.

The registry (``medimg.tasks``: the detection task's ``evaluate``) sends ``medimg evaluate MODEL``
here when MODEL is a detection model folder. The cases are those of the study's manifest (or
``--manifest``), split as the study split them (the same :func:`medimg.data.splits.assign_splits`
on the same settings), the chosen split's scans are run through
:func:`medimg.detection.predict.predict_boxes` (what ``medimg predict`` gives) and scored against
their true boxes: FROC (LUNA16 rates), AP at IoU 0.1 and 0.5, patient-level bootstrap CIs,
sensitivity by lesion size at one false positive per scan. Written to ``--out`` (default: the
study's ``evaluation/`` folder): ``per_case.csv``, ``boxes.csv``, ``summary.json``; logged to the
study's MLflow run when ``run.json`` beside the model folder names one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.errors import ConfigError
from medimg.io.atomic import atomic_write_text

log = logging.getLogger(__name__)


def _cases(wf: Any, manifest: str | None, split: str) -> tuple[list[Any], pd.DataFrame]:
    """The labelled scans of ``split`` (``all``: every row) with their boxes, and their manifest rows."""
    from medimg.data.splits import assign_splits
    from medimg.detection.cases import load_samples
    from medimg.detection.study import _manifest

    if manifest is not None:
        wf = wf.model_copy(
            update={"data": wf.data.model_copy(update={"manifest": manifest, "synthetic": None})}
        )
    frame, path, root = _manifest(wf)
    frame = assign_splits(frame, wf.data.split)
    rows = frame if split == "all" else frame[frame["split"] == split]
    if rows.empty:
        splits = sorted(frame["split"].unique())
        raise ConfigError(f"{path}: no case in split {split!r} (splits there: {splits}, or 'all')")
    rows = rows.reset_index(drop=True)
    d = wf.detection
    samples = load_samples(
        rows, root, image_column=wf.data.image_column, box_file=d.box_file, mask_column=d.mask_column
    )
    return samples, rows


def _per_case(samples: Sequence[Any], scans: Sequence[Any], threshold: float) -> pd.DataFrame:
    """One row per scan: its lesions, its boxes, the best score, the lesions found at ``threshold``."""
    from medimg.detection.metrics import centre_hits

    rows = []
    for s, scan in zip(samples, scans, strict=True):
        kept = scan.pred[scan.scores >= threshold] if np.isfinite(threshold) else scan.pred[:0]
        found = int(centre_hits(scan.truth, kept).any(axis=0).sum()) if len(kept) else 0
        rows.append({"case_key": s.case_key, "patient_key": s.patient_key, "lesions": len(scan.truth),
                     "boxes": len(scan.pred), "max_score": float(scan.scores.max()) if len(scan.scores) else 0.0,
                     "boxes_at_1fp": len(kept), "lesions_found_at_1fp": found})  # fmt: skip
    return pd.DataFrame(rows)


def _log(folder: Path, out: Path, split: str, report: dict[str, Any]) -> str | None:
    """Log the evaluation to the study's MLflow run (``run.json`` beside the model folder); its id."""
    run_file = folder.parent / "run.json"
    if not run_file.is_file():
        return None
    import mlflow

    info = json.loads(run_file.read_text())
    client = mlflow.MlflowClient(info["tracking_uri"])
    for key, value in report["scores"].items():
        name = key.replace("sens@", "sens_fp").replace("ap@", "ap_iou")
        client.log_metric(info["run_id"], f"eval_{split}_{name}", float(value))
    client.log_artifacts(info["run_id"], str(out), f"evaluation/{split}")
    return str(info["run_id"])


def _lines(report: dict[str, Any], split: str, out_dir: Path) -> list[str]:
    """The text ``medimg evaluate`` prints for a detection evaluation."""
    s, ci = report["scores"], report["ci"].get("froc", {})
    return [f"{split} split, {report['scans']} scans, {report['lesions']} lesions: FROC {s['froc']:.3f} "
            f"(95% CI {ci.get('low', float('nan')):.3f}-{ci.get('high', float('nan')):.3f}), "
            f"AP@0.1 {s['ap@0.1']:.3f}, AP@0.5 {s['ap@0.5']:.3f}",
            f"per case: {out_dir / 'per_case.csv'}; summary: {out_dir / 'summary.json'}"]  # fmt: skip


def evaluate_detection(
    model: str,
    *,
    manifest: str | None = None,
    split: str = "test",
    out: str | None = None,
    n_boot: int = 1000,
    log: bool = True,
    by: Sequence[str] = (),
    compare: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[dict[str, Any], list[str], int]:
    """Score the detection model folder ``model`` on a split of labelled scans.

    ``by`` (subgroups) and ``compare`` (a second model) are refused by name: detection has no
    subgroup or paired analysis yet. ``tracking_uri`` is not needed: the study's ``run.json`` names it.

    Returns the result document, its text lines and the exit code (0).

    Example:
        >>> evaluate_detection("runs/quickstart_detection/model")[0]["scores"]["froc"]  # doctest: +SKIP
        0.85
    """
    from medimg.config.detection import load_detection_workflow
    from medimg.detection.boxes import box_rows
    from medimg.detection.model_folder import load_detector
    from medimg.detection.predict import predict_boxes
    from medimg.detection.scoring import scan_boxes, score_detection

    refused = [name for name, given in (("--by", by), ("--compare", compare)) if given]
    if refused:
        raise ConfigError(
            f"{model}: a detection model takes no {', '.join(refused)} yet (no subgroup or paired analysis)"
        )
    folder = Path(model)
    detector, plan, weights_sha = load_detector(folder)  # checks every file against model.json
    wf = load_detection_workflow(folder / "workflow.yaml")
    samples, _rows = _cases(wf, manifest, split)
    scans, boxes = [], []
    for s in samples:
        pred = predict_boxes(detector, plan, s.image, overlap=wf.detection.overlap)
        scans.append(scan_boxes(s.boxes, pred, s.image))
        boxes += box_rows(s.case_key, pred, s.image)
    report = score_detection(scans, [s.patient_key for s in samples], n_boot=n_boot, seed=wf.seed)
    report.update(split=split, model=str(folder), weights_sha256=weights_sha)
    out_dir = Path(out) if out else folder.parent / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "per_case.csv", _per_case(samples, scans, report["threshold_1fp"]).to_csv(index=False)
    )
    atomic_write_text(out_dir / "boxes.csv", pd.DataFrame(boxes).to_csv(index=False))
    atomic_write_text(out_dir / "summary.json", json.dumps(report, indent=2))
    run_id = _log(folder, out_dir, split, report) if log else None
    lines = _lines(report, split, out_dir)
    if run_id:
        lines.append(f"logged to MLflow run {run_id}")
    document = {"out": str(out_dir), "run_id": run_id, **report}
    return document, lines, 0
