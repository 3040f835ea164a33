"""The library entry of the generative tasks: one study run, tracked in MLflow like the others.

prepare (outputs folder, synthetic study when asked, manifest read and checked, patient-level
splits) → track (MLflow run, lineage) → the task's study (:mod:`medimg.generative.anomaly_study`
or :mod:`medimg.generative.superres_study`, :mod:`medimg.generative.synthesis_study`) → finish (run FINISHED, or FAILED with the reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _anomaly_cases(wf: GenerativeWorkflow) -> pd.DataFrame:
    """``data.label_column`` is each case's class: 0 normal, 1 abnormal."""
    from medimg.data.manifest import read_manifest

    return read_manifest(wf.data, "classification")


def _superres_cases(wf: GenerativeWorkflow) -> pd.DataFrame:
    """Images only: the image column stands in for the label column the reader requires."""
    from medimg.data.manifest import read_manifest

    cfg = wf.data.model_copy(update={"label_column": "image", "check_geometry": False})
    return read_manifest(cfg, "segmentation").assign(target=0)


def _load_grid(wf: GenerativeWorkflow, path: str, key: str) -> Any:
    """An anomaly or synthesis case as its study reads it: on the model grid, preprocessed."""
    from medimg.generative.anomaly import preprocess

    return preprocess(wf, path, key)


def _load_thin(wf: GenerativeWorkflow, path: str, key: str) -> Any:
    """A super-resolution case as its study reads it: the thin-slice scan, checked."""
    from medimg.generative.superres_study import read_thin

    return read_thin(wf, path)


def _no_settings_check(wf: GenerativeWorkflow) -> None:
    """Super-resolution: its settings are checked by the schema and per case (patch against scan)."""


def _anomaly_grid(wf: GenerativeWorkflow) -> None:
    from medimg.generative.anomaly_study import check_grid

    check_grid(wf)


def _synthesis_grid(wf: GenerativeWorkflow) -> None:
    from medimg.generative.synthesis_study import check_grid

    check_grid(wf)


def _run_synthesis(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any) -> Any:
    from medimg.generative.synthesis_study import run_synthesis

    return run_synthesis(wf, df, out, run)


def _run_anomaly(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any) -> Any:
    from medimg.generative.anomaly_study import run_anomaly

    return run_anomaly(wf, df, out, run)


def _run_superres(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any) -> Any:
    from medimg.generative.superres_study import run_superres

    return run_superres(wf, df, out, run)


@dataclass(frozen=True)
class GenerativeStudy:
    """What one generative task does: how its cases are read, how one image is read, and its study."""

    read: Callable[[GenerativeWorkflow], pd.DataFrame]
    run: Callable[[GenerativeWorkflow, pd.DataFrame, Path, Any], tuple[dict[str, float], pd.DataFrame]]
    load: Callable[[GenerativeWorkflow, str, str], Any]  # (workflow, image path, case key): as training
    settings: Callable[[GenerativeWorkflow], Any]  # the study's own checks of its settings (ConfigError)


STUDIES: dict[str, GenerativeStudy] = {
    "anomaly": GenerativeStudy(_anomaly_cases, _run_anomaly, _load_grid, _anomaly_grid),
    "superres": GenerativeStudy(_superres_cases, _run_superres, _load_thin, _no_settings_check),
    "synthesis": GenerativeStudy(_anomaly_cases, _run_synthesis, _load_grid, _synthesis_grid),  # label: class
}


def read_cases(wf: GenerativeWorkflow) -> pd.DataFrame:
    """The study's cases with their patient-level split, read by medimg's manifest reader.

    ``task: anomaly`` reads ``data.label_column`` as the case's class (0 normal, 1 abnormal),
    ``task: synthesis`` as the class each case teaches the generator;
    ``task: superres`` needs images only (no label column). A missing manifest with
    ``data.synthetic`` set is generated first.

    Example:
        >>> df = read_cases(load_generative_workflow("workflows/quickstart-anomaly.yaml"))  # doctest: +SKIP
    """
    from medimg.data.splits import assign_splits

    manifest = Path(wf.data.manifest)
    if not manifest.exists() and wf.data.synthetic is not None:
        from medimg.data.synthetic import write_configured_study

        s = wf.data.synthetic
        log.info("generating a synthetic study of %d cases in %s", s.cases, manifest.parent)
        write_configured_study(manifest.parent, s)
    df = assign_splits(STUDIES[wf.task].read(wf), wf.data.split)
    if not (df["split"] == "train").any():
        raise DataError(f"{manifest}: no case in the 'train' split (data.split)")
    return df


def run_generative(wf: GenerativeWorkflow, resume: bool = False) -> GenerativeResult:
    """Run the anomaly, super-resolution or synthesis study ``wf`` describes; return its run and test metrics.

    Example:
        >>> res = run_generative(load_generative_workflow("workflows/quickstart-anomaly.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_auroc"]  # doctest: +SKIP
    """
    from medimg.generative.checkpoint import open_run

    t0 = time.perf_counter()
    out = Path(wf.outputs.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    df = read_cases(wf)
    run = open_run(wf, df, out, resume)  # resume: the epoch checkpoint's run, from its next epoch
    try:
        metrics, per_case = STUDIES[wf.task].run(wf, df, out, run)
    except BaseException as exc:
        run.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    seconds = time.perf_counter() - t0
    run.log_metrics({"wall_seconds": seconds})
    run.finish("FINISHED")
    return GenerativeResult(run.run_id, run.uri, out, metrics, per_case, seconds)


MAX_LISTED = 20  # bad cases named in one --check error


def check_generative(wf: GenerativeWorkflow) -> dict[str, Any]:
    """``medimg run --check``: the study's settings, the manifest, its splits and every image read exactly as
    the study reads it.

    Nothing is trained and nothing is written but a synthetic study the workflow asks for
    (``data.synthetic``, as the run would generate it). Returns the cases checked per split.

    Raises:
        DataError: one line per unusable image (``case <key>: <file>: <reason>``), up to 20 listed.

    Example:
        >>> check_generative(load_generative_workflow("workflows/quickstart-anomaly.yaml"))  # doctest: +SKIP
        {'workflow': 'quickstart_anomaly', 'cases': 48, 'splits': {'train': 22, ...}, 'ok': True}
    """
    from medimg.config.load import config_hash
    from medimg.errors import find_medimg_error

    STUDIES[wf.task].settings(wf)  # e.g. preprocessing.spatial_size against the network's strides
    df = read_cases(wf)
    load = STUDIES[wf.task].load
    problems: list[str] = []
    for row in df.itertuples():
        try:
            load(wf, str(row.image), str(row.case_key))
        except Exception as exc:  # a MONAI transform wraps medimg's reader error in its own
            error = find_medimg_error(exc)
            if error is None:
                raise  # not the data's fault: a bug, with its traceback
            problems.append(f"case {row.case_key!r}: {' '.join(str(error).split())}")
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(f"{len(problems)} of {len(df)} cases cannot be used:\n  {shown}{more}")
    splits = {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()}
    return {"workflow": wf.name, "task": wf.task, "config_hash": config_hash(wf), "cases": len(df),
            "splits": splits, "ok": True}  # fmt: skip


def run_generative_workflow(
    path: str | Path, overrides: Sequence[str] = (), resume: bool = False, check: bool = False
) -> tuple[dict[str, Any], list[str], int]:
    """Load the anomaly, superres or synthesis workflow at ``path`` (with ``overrides``) and run it, as ``medimg run`` does.

    With ``check`` (``medimg run --check``) nothing is trained: :func:`check_generative`.
    Returns the result document, its text lines and the exit code (0).
    """
    from medimg.config.generative import load_generative_workflow
    from medimg.training.run import study_lines

    wf = load_generative_workflow(path, overrides)
    if check:
        doc = check_generative(wf)
        line = (f"workflow OK ({wf.name}, task {wf.task}, hash {doc['config_hash'][:12]}); "
                f"{doc['cases']} cases read as the study reads them: {doc['splits']}")  # fmt: skip
        return doc, [line], 0
    res = run_generative(wf, resume=resume)
    document = {"workflow": str(path), "run_id": res.run_id, "tracking_uri": res.tracking_uri,
                "out_dir": str(res.out_dir), "seconds": round(res.seconds, 3),
                "metrics": dict(sorted(res.metrics.items()))}  # fmt: skip
    return document, study_lines(res.metrics, res.out_dir, res.run_id, res.tracking_uri), 0
