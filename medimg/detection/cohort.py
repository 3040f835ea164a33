"""Detection over a cohort, resumable like segmentation: ``cases/<case>/boxes.json``, a cohort
``boxes.csv`` and, for DICOM inputs, a DICOM SR of the boxes.

The run is :func:`medimg.inference.cohort.run_cohort` (model loaded once, prefetching, a fsync'd
ledger, a killed run resumed by running it again, one bad case recorded and the rest going on)
with three writers: :class:`BoxesJsonWriter`, :class:`DetectionReportWriter` (``report.html``, the
boxes drawn on three orthogonal slices through each centre) and :class:`DetectionSrWriter`. ``boxes.json`` holds,
per box, the world centre and size (mm, in the scan's space: RAS for NIfTI, LPS for DICOM), the
voxel centre, extent and corners on the scan's own grid, and the score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medimg.detection.boxes import VoxelBox, box_rows
from medimg.detection.predict import predict_boxes
from medimg.inference.cases import CaseInput, CaseOutputs
from medimg.inference.cohort import CohortReport, cases_table, run_cohort, settings_hash
from medimg.inference.dicom_seg import AlgorithmInfo
from medimg.inference.request import CohortRun
from medimg.io.atomic import atomic_write_text
from medimg.io.load import load_image
from medimg.io.volume import Volume


@dataclass
class LoadedScan:
    """A scan read for detection: the volume and, for a DICOM series, its headers; then its boxes."""

    volume: Volume
    datasets: list[Any]
    boxes: list[VoxelBox] = field(default_factory=list)


def load_scan(case: CaseInput) -> LoadedScan:
    """Read the case's image strictly; a DICOM folder also gives its headers (for the SR)."""
    import pydicom
    from pydicom.misc import is_dicom

    path = Path(case.paths[0])
    volume = load_image(path)
    datasets: list[Any] = []
    if path.is_dir():
        by_series: dict[str, list[Any]] = {}
        for f in sorted(p for p in path.rglob("*") if p.is_file() and is_dicom(p)):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:
                continue  # not DICOM (a README, a DICOMDIR's companions)
            if "ImagePositionPatient" in ds:
                by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        # the series the reader assembled: the one with as many slices as the volume
        fitting = [v for v in by_series.values() if len(v) == volume.shape[2]]
        datasets = fitting[0] if len(fitting) == 1 else []
    return LoadedScan(volume, datasets)


class BoxesJsonWriter:
    """Write ``boxes.json``: the case's boxes in world mm and voxel indices, best score first."""

    name = "boxes"

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        scan: LoadedScan = outputs.source
        doc = {"case_id": case.case_id, "boxes": box_rows(case.case_id, scan.boxes, scan.volume)}
        return [atomic_write_text(case_dir / "boxes.json", json.dumps(doc, indent=2))]


class DetectionReportWriter:
    """Write ``report.html``: per box, three orthogonal slices through its centre with its outline."""

    name = "report"

    def __init__(self, model: dict[str, Any]) -> None:
        self.model = model

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        from medimg.detection.report import write_detection_report

        scan: LoadedScan = outputs.source
        return [
            write_detection_report(
                case.case_id, scan.volume, scan.boxes, case_dir / "report.html", self.model
            )
        ]


class DetectionSrWriter:
    """Write ``boxes_sr.dcm`` (TID 1500) for a DICOM input; nothing for a NIfTI input."""

    name = "dicom_sr"

    def __init__(self, algorithm: AlgorithmInfo) -> None:
        self.algorithm = algorithm

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        from medimg.detection.dicom_sr import write_detection_sr

        scan: LoadedScan = outputs.source
        if not scan.datasets:
            return []
        return [
            write_detection_sr(
                scan.boxes, scan.volume, scan.datasets, case_dir / "boxes_sr.dcm", self.algorithm
            )
        ]


def cohort_boxes_csv(out_dir: str | Path, case_ids: Sequence[str]) -> Path:
    """Every case's ``boxes.json`` in one CSV (``boxes.csv``), one row per box, written atomically."""
    columns = ["case_key", "space", "x", "y", "z", "size_x", "size_y", "size_z", "centre_i", "centre_j",
               "centre_k", "extent_i", "extent_j", "extent_k", "score"]  # fmt: skip

    def rows(case_id: str, doc: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "voxel_corners"} for r in doc["boxes"]]

    return cases_table(Path(out_dir), case_ids, ("boxes.json", "boxes.csv"), columns, rows)


def predict_detection_cohort(model_dir: str | Path, run: CohortRun, *, overlap: float = 0.25) -> CohortReport:
    """Detect lesions in every case of ``run`` (resumable), write boxes.json / SR per case and boxes.csv.

    Example:
        >>> run = CohortRun([CaseInput("scan1", (Path("scan1.nii.gz"),))], "out")  # doctest: +SKIP
        >>> predict_detection_cohort("runs/quickstart_detection/model", run).exit_code  # doctest: +SKIP
        0
    """
    from medimg.detection.model_folder import load_detector

    detector, plan, weights_sha = load_detector(model_dir)
    algorithm = AlgorithmInfo(name="medimg-retinanet", version="1", weights_sha256=weights_sha)

    def predict(case: CaseInput, scan: LoadedScan) -> CaseOutputs:
        scan.boxes = predict_boxes(detector, plan, scan.volume, overlap=overlap)
        top = max((b.score for b in scan.boxes), default=0.0)
        return CaseOutputs(source=scan, extra={"n_boxes": len(scan.boxes), "max_score": round(top, 6)})

    report = run_cohort(
        run.cases,
        predict,
        Path(run.out_dir),
        load_fn=load_scan,
        writers=[
            BoxesJsonWriter(),
            DetectionReportWriter({"model": Path(model_dir).name, "weights sha256": weights_sha}),
            DetectionSrWriter(algorithm),
        ],
        model_key=weights_sha,
        settings_key=settings_hash({"overlap": overlap, "plan": plan.to_dict()}),
        **run.options(),
    )
    cohort_boxes_csv(run.out_dir, [c.case_id for c in run.cases])
    return report
