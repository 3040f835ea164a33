"""The library entry of the generative tasks: one study run, tracked in MLflow like the others.

prepare (outputs folder, synthetic study when asked, manifest read and checked, patient-level
splits) → track (MLflow run, lineage) → the task's study (:mod:`medimg.generative.anomaly_study`
or :mod:`medimg.generative.superres_study`) → finish (run FINISHED, or FAILED with the reason).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medimg.config.generative import GenerativeWorkflow
from medimg.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class GenerativeResult:
    """What a generative study run produced."""

    run_id: str
    tracking_uri: str
    out_dir: Path
    metrics: dict[str, float]
    per_case: pd.DataFrame
    seconds: float


def read_cases(wf: GenerativeWorkflow) -> pd.DataFrame:
    """The study's cases with their patient-level split, read by medimg's manifest reader.

    ``task: anomaly`` reads ``data.label_column`` as the case's class (0 normal, 1 abnormal);
    ``task: superres`` needs images only (no label column).

    Example:
        >>> df = read_cases(load_generative_workflow("workflows/quickstart-anomaly.yaml"))  # doctest: +SKIP
    """
    from medimg.data.manifest import read_manifest
    from medimg.data.splits import assign_splits

    manifest = Path(wf.data.manifest)
    if not manifest.exists() and wf.data.synthetic is not None:
        from medimg.data.synthetic import write_synthetic_study

        s = wf.data.synthetic
        log.info("generating a synthetic study of %d cases in %s", s.cases, manifest.parent)
        write_synthetic_study(manifest.parent, s.cases, s.seed, s.shape, s.spacing, s.oblique_deg)
    if wf.task == "anomaly":
        df = read_manifest(wf.data, "classification")
    else:  # images only: the image column stands in for the label column the reader requires
        cfg = wf.data.model_copy(update={"label_column": "image", "check_geometry": False})
        df = read_manifest(cfg, "segmentation").assign(target=0)
    df = assign_splits(df, wf.data.split)
    if not (df["split"] == "train").any():
        raise DataError(f"{manifest}: no case in the 'train' split (data.split)")
    return df


def run_generative(wf: GenerativeWorkflow) -> GenerativeResult:
    """Run the anomaly or super-resolution study ``wf`` describes; return its run and test metrics.

    Example:
        >>> res = run_generative(load_generative_workflow("workflows/quickstart-anomaly.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_auroc"]  # doctest: +SKIP
    """
    from medimg.generative.tracking import start_run

    t0 = time.perf_counter()
    out = Path(wf.outputs.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    df = read_cases(wf)
    run = start_run(wf, df, out)
    try:
        if wf.task == "anomaly":
            from medimg.generative.anomaly_study import run_anomaly

            metrics, per_case = run_anomaly(wf, df, out, run)
        else:
            from medimg.generative.superres_study import run_superres

            metrics, per_case = run_superres(wf, df, out, run)
    except BaseException as exc:
        run.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    seconds = time.perf_counter() - t0
    run.log_metrics({"wall_seconds": seconds})
    run.finish("FINISHED")
    return GenerativeResult(run.run_id, run.uri, out, metrics, per_case, seconds)
