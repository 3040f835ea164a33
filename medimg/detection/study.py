"""A detection study, end to end: manifest and patient-level splits, plan, Lightning fit, MLflow
lineage, the model folder, and the test split scored with FROC / AP and patient bootstrap CIs.

The order follows the other tasks' run: the outputs folder and the manifest (a synthetic detection
study is generated when the manifest is missing and ``data.synthetic`` is set), the splits (the
same :func:`medimg.data.splits.assign_splits`), the plan from the training boxes, the MLflow run
with the resolved workflow, its hash, the manifest's sha256 and the plan, the fit, the model
folder, then the test cases through :func:`medimg.detection.predict.predict_boxes` (the path
``medimg`` users get).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.config.detection import DetectionWorkflow
from medimg.config.load import config_hash, workflow_to_yaml
from medimg.detection.boxes import box_rows, voxel_to_world
from medimg.detection.cases import DetectionSample, load_samples
from medimg.detection.grid import move_boxes, normalise, to_grid
from medimg.detection.plan import DetectionPlan, plan_detection
from medimg.detection.predict import corners_array, predict_boxes
from medimg.detection.scoring import scan_boxes, score_detection
from medimg.errors import ConfigError, DataError
from medimg.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

# Lightning's checkpoint of the fit after the last finished epoch (medimg.detection.lightning_task.EpochCheckpoint)
CHECKPOINT = Path("checkpoint") / "last.ckpt"


@dataclass
class DetectionResult:
    """What a detection study returns: the run, the scores and where everything is."""

    run_id: str
    tracking_uri: str
    out_dir: Path
    model_dir: Path
    metrics: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def _manifest(wf: DetectionWorkflow) -> tuple[pd.DataFrame, Path, Path]:
    """The manifest (generated when missing and ``data.synthetic`` is set), its path and root."""
    from medimg.data.synthetic import SyntheticGrid
    from medimg.detection.synthetic import write_detection_study

    path = Path(wf.data.manifest)
    if not path.exists() and wf.data.synthetic is not None:
        s = wf.data.synthetic
        write_detection_study(path.parent, s.cases, s.seed, SyntheticGrid.of(s))
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (data.manifest)")
    frame = pd.read_csv(path)
    for col in ("case_key", wf.data.patient_column, wf.data.image_column):
        if col not in frame:
            raise DataError(f"{path}: no column '{col}' (columns: {list(frame.columns)})")
    frame = frame.rename(columns={wf.data.patient_column: "patient_key"})
    root = Path(wf.data.root) if wf.data.root else path.parent
    return frame, path, root


def _training_arrays(samples: list[DetectionSample], plan: DetectionPlan) -> tuple[list, list]:
    arrays, corners = [], []
    for s in samples:
        grid = to_grid(s.image, plan.spacing)
        arrays.append(normalise(grid.data))
        corners.append(corners_array(move_boxes(s.boxes, s.image, grid) if grid is not s.image else s.boxes))
    return arrays, corners


def _plan(wf: DetectionWorkflow, train: list[DetectionSample]) -> DetectionPlan:
    sizes = [voxel_to_world(b, s.image).size_mm for s in train for b in s.boxes]
    plan = plan_detection(
        sizes,
        [s.image.spacing[:3] for s in train],
        [s.image.shape[:3] for s in train],
        patch_size=wf.detection.patch_size,
        spacing=wf.detection.spacing,
    )
    d = wf.detection
    return DetectionPlan.from_dict(
        {
            **plan.to_dict(),
            "score_thresh": d.score_thresh,
            "nms_iou": d.nms_iou,
            "max_detections": d.max_detections,
            "flip_tta": d.flip_tta,
        }
    )


def read_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    """The epoch checkpoint's ``epoch`` (the last one finished, from 0) and ``run_id``; ``None`` when
    there is none. A checkpoint another workflow wrote (its config hash) is refused by name.

    Example:
        >>> read_checkpoint(Path("runs/det/checkpoint/last.ckpt"), config_hash(wf))  # doctest: +SKIP
        {'epoch': 11, 'run_id': '5c0f...'}
    """
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        mine = state["callbacks"]["EpochCheckpoint"]
    except Exception as exc:  # a truncated or foreign file
        raise DataError(
            f"{path}: not a readable detection checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if mine.get("key") != key:
        raise ConfigError(
            f"{path}: written by another workflow (config hash {mine.get('key')}, this one {key}); "
            "run without --resume, or give another outputs.dir"
        )
    return {"epoch": int(state["epoch"]), "run_id": str(mine["run_id"])}


def _fit(
    wf: DetectionWorkflow,
    plan: DetectionPlan,
    train: list[DetectionSample],
    logger: Any,
    checkpoint: Path,
    resume: bool = False,
) -> Any:
    """Train the detector; after every epoch its checkpoint goes to ``checkpoint``, from which
    ``resume`` continues (the same weights as a run never stopped)."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from medimg.detection.lightning_task import BoxDataset, DetectionTask, EpochCheckpoint, collate_boxes
    from medimg.detection.network import build_detector
    from medimg.training.stages.fit import quiet_trainer

    pl.seed_everything(wf.seed, workers=True, verbose=False)
    detector = build_detector(plan)
    arrays, corners = _training_arrays(train, plan)
    dataset = BoxDataset(arrays, corners, plan, seed=wf.seed)
    generator = torch.Generator().manual_seed(wf.seed)
    loader = DataLoader(
        dataset,
        batch_size=wf.optim.batch_size,
        shuffle=True,
        collate_fn=collate_boxes,
        generator=generator,
    )
    saver = EpochCheckpoint(checkpoint, config_hash(wf), logger.run_id, dataset, generator)
    task = DetectionTask(detector, lr=wf.optim.lr, max_epochs=wf.trainer.max_epochs)
    accelerator = (
        "cpu"
        if wf.trainer.accelerator == "auto" and not torch.cuda.is_available()
        else wf.trainer.accelerator
    )
    trainer = quiet_trainer(
        max_epochs=wf.trainer.max_epochs,
        accelerator=accelerator,
        logger=logger,
        gradient_clip_val=wf.trainer.gradient_clip,
        callbacks=[saver],
    )
    trainer.fit(task, loader, ckpt_path=checkpoint if resume else None, weights_only=True)
    return detector.cpu().eval()


def _score(
    wf: DetectionWorkflow, detector: Any, plan: DetectionPlan, test: list[DetectionSample], out: Path
) -> dict[str, Any]:
    scans, rows = [], []
    for s in test:
        pred = predict_boxes(detector, plan, s.image, overlap=wf.detection.overlap)
        scans.append(scan_boxes(s.boxes, pred, s.image))
        rows += box_rows(s.case_key, pred, s.image)
    report = score_detection(scans, [s.patient_key for s in test], n_boot=wf.detection.n_boot, seed=wf.seed)
    frame = pd.DataFrame(rows)
    atomic_write_text(out / "test_boxes.csv", frame.to_csv(index=False))
    atomic_write_text(out / "test_detection.json", json.dumps(report, indent=2))
    return report


def _metric_names(report: dict[str, Any]) -> dict[str, float]:
    """MLflow-safe names: ``test_froc``, ``test_sens_fp0.125``, ``test_ap_iou0.1`` and CI bounds."""
    out = {}
    for key, value in report["scores"].items():
        name = "test_" + key.replace("sens@", "sens_fp").replace("ap@", "ap_iou")
        out[name] = float(value)
        ci = report["ci"].get(key)
        if ci is not None and np.isfinite(ci["low"]):
            out[name + "_ci_low"], out[name + "_ci_high"] = float(ci["low"]), float(ci["high"])
    return out


def _open_run(
    wf: DetectionWorkflow, plan: DetectionPlan, out: Path, manifest: Path, checkpoint: Path, resume: bool
) -> tuple[Any, Any, str, bool]:
    """The MLflow run: the checkpoint's, continued, with ``resume`` and a checkpoint of this workflow;
    else a new one (a checkpoint left in ``outputs.dir`` removed first). The last item: resumed."""
    saved = read_checkpoint(checkpoint, config_hash(wf)) if resume else None
    if saved is None:
        if resume:
            log.info("%s: no checkpoint to resume from; the study starts from the beginning", checkpoint)
        checkpoint.unlink(missing_ok=True)
        return (*_start_run(wf, plan, out, manifest), False)
    return (*_continue_run(wf, out, saved), True)


def run_detection_study(wf: DetectionWorkflow, resume: bool = False) -> DetectionResult:
    """Train and score the detection study ``wf``; print and log the test FROC.

    After every epoch the fit's checkpoint goes to ``outputs.dir/checkpoint/last.ckpt``. With
    ``resume`` a killed study continues from it: the same MLflow run (status back to RUNNING, tag
    ``medimg.resumed_from_epoch``), the epoch after the saved one, the same weights as a run never
    stopped. Without ``resume`` a checkpoint left there is removed first, so a new study never picks
    up an old one.

    Example:
        >>> res = run_detection_study(load_detection_workflow("workflows/quickstart-detection.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_froc"]  # doctest: +SKIP
    """
    from medimg.data.splits import assign_splits
    from medimg.detection.model_folder import save_detector

    t0 = time.perf_counter()
    out = Path(wf.outputs.dir)
    out.mkdir(parents=True, exist_ok=True)
    frame, manifest, root = _manifest(wf)
    frame = assign_splits(frame, wf.data.split)
    atomic_write_text(out / "splits.csv", frame[["case_key", "patient_key", "split"]].to_csv(index=False))
    d = wf.detection
    samples = load_samples(
        frame, root, image_column=wf.data.image_column, box_file=d.box_file, mask_column=d.mask_column
    )
    by_split = {
        k: [s for s, sp in zip(samples, frame["split"], strict=True) if sp == k] for k in ("train", "test")
    }
    plan = _plan(wf, by_split["train"])
    atomic_write_text(out / "plan.json", json.dumps(plan.to_dict(), indent=2))
    checkpoint = out / CHECKPOINT
    logger, client, uri, resumed = _open_run(wf, plan, out, manifest, checkpoint, resume)
    run_id = logger.run_id
    detector = _fit(wf, plan, by_split["train"], logger, checkpoint, resume=resumed)
    model_dir = save_detector(detector, plan, wf, out / "model")
    report = _score(wf, detector, plan, by_split["test"], out)
    metrics = _metric_names(report)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.log_artifact(run_id, str(out / "test_detection.json"))
    client.log_artifacts(run_id, str(model_dir), "model")
    client.set_terminated(run_id, "FINISHED")
    atomic_write_text(
        out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "finished"})
    )
    wall = time.perf_counter() - t0
    print(
        f"detection test split: FROC {metrics['test_froc']:.3f} "
        f"(95% CI {metrics.get('test_froc_ci_low', float('nan')):.3f}-{metrics.get('test_froc_ci_high', float('nan')):.3f}), "
        f"AP@0.1 {metrics['test_ap_iou0.1']:.3f}, AP@0.5 {metrics['test_ap_iou0.5']:.3f}, "
        f"{report['lesions']} lesions in {report['scans']} scans, {wall:.0f} s"
    )
    return DetectionResult(run_id, uri, out, model_dir, metrics, report, wall)


def _start_run(wf: DetectionWorkflow, plan: DetectionPlan, out: Path, manifest: Path) -> tuple[Any, Any, str]:
    """Start the study's MLflow run (``run.json``: running) and log its workflow, plan and splits.

    Returns the Lightning logger, an MLflow client and the tracking URI.
    """
    import mlflow

    from medimg.training.lineage import sha256_path
    from medimg.training.tracking import flatten, make_logger, resolve_tracking_uri

    uri = resolve_tracking_uri(wf.tracking.uri)
    logger = make_logger(
        uri, wf.tracking.experiment, wf.tracking.run_name or wf.name, tags={"medimg.task": "detection"}
    )
    client = mlflow.MlflowClient(uri)
    run_id = logger.run_id
    atomic_write_text(
        out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "running"})
    )
    client.log_param(run_id, "config_hash", config_hash(wf))
    client.log_param(run_id, "manifest_sha256", sha256_path(manifest))
    for key, value in flatten(
        {"plan": {k: v for k, v in plan.to_dict().items() if k != "box_stats"}}
    ).items():
        client.log_param(run_id, key, str(value)[:6000])
    client.log_text(run_id, workflow_to_yaml(wf), "workflow.yaml")
    client.log_dict(run_id, plan.to_dict(), "plan.json")
    client.log_text(run_id, (out / "splits.csv").read_text(), "splits.csv")
    return logger, client, uri


def _continue_run(wf: DetectionWorkflow, out: Path, saved: dict[str, Any]) -> tuple[Any, Any, str]:
    """The checkpoint's MLflow run, continued: status back to RUNNING, tag ``medimg.resumed_from_epoch``."""
    import mlflow

    from medimg.training.tracking import make_logger, resolve_tracking_uri

    uri = resolve_tracking_uri(wf.tracking.uri)
    client = mlflow.MlflowClient(uri)
    run_id = saved["run_id"]
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(
            f"{out / CHECKPOINT}: its MLflow run {run_id} is not in {uri} ({exc.message}); "
            "run without --resume, or set tracking.uri to the store the study started in"
        ) from None
    logger = make_logger(uri, wf.tracking.experiment, wf.tracking.run_name or wf.name, run_id=run_id)
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "medimg.resumed_from_epoch", str(saved["epoch"]))
    atomic_write_text(
        out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "running"})
    )
    log.info("resuming %s after epoch %d (MLflow run %s)", out, saved["epoch"], run_id)
    return logger, client, uri


def run_detection_workflow(
    path: str | Path, overrides: Sequence[str] = (), resume: bool = False
) -> tuple[dict[str, Any], list[str], int]:
    """Load the detection workflow at ``path`` (with ``overrides``) and run its study, as ``medimg run`` does
    (``resume``: ``medimg run --resume``, see :func:`run_detection_study`).

    Returns the result document, its text lines and the exit code (0).
    """
    from medimg.config.detection import load_detection_workflow
    from medimg.training.run import study_lines

    res = run_detection_study(load_detection_workflow(path, overrides), resume=resume)
    document = {"workflow": str(path), "run_id": res.run_id, "tracking_uri": res.tracking_uri,
                "out_dir": str(res.out_dir), "model_dir": str(res.model_dir), "seconds": round(res.wall_s, 3),
                "metrics": dict(sorted(res.metrics.items()))}  # fmt: skip
    return document, study_lines(res.metrics, res.out_dir, res.run_id, res.tracking_uri), 0
