"""A study run: one straight pipeline of stages (:mod:`medimg.training.stages`), each with typed records.

prepare (manifest, splits) → plan (seeds, cache, batch, loaders) → track (MLflow run, lineage) →
build (task + pretrained weights) → fit (Lightning, resumable) → export (model folder) →
score (test split) → register (pyfunc, FINISHED). A killed run resumes (``--resume``) into the
same MLflow run, which ``run.json`` in ``outputs.dir`` names from the first moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from medimg import __version__
from medimg.config.schema import Workflow
from medimg.training.stages.build import build
from medimg.training.stages.export import export
from medimg.training.stages.fit import fit
from medimg.training.stages.plan import plan_study
from medimg.training.stages.postprocess import postprocess
from medimg.training.stages.prepare import prepare, prepare_data
from medimg.training.stages.records import RunResult
from medimg.training.stages.register import register
from medimg.training.stages.score import score
from medimg.training.stages.track import track

__all__ = ["RunResult", "prepare_data", "run_workflow"]

log = logging.getLogger(__name__)


def run_workflow(
    wf: Workflow, resume: bool = False, parent_run_id: str | None = None, callbacks: Sequence[Any] = ()
) -> RunResult:
    """Train and score the study described by ``wf``; return the MLflow run and test metrics.

    ``callbacks`` are extra Lightning callbacks for the fit (``medimg tune`` prunes with one).

    Example:
        >>> res = run_workflow(load_workflow("workflows/quickstart_seg.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_dice_mean"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    log.info("medimg %s: study %s (%s)", __version__, wf.name, wf.task)
    data = prepare(wf)
    plan = plan_study(wf, data)
    run = track(plan, data, resume, parent_run_id)
    built = build(plan, data, run, resume)
    fitted = fit(plan, data, run, built, resume, callbacks)
    if fitted.rank != 0:  # only rank 0 exports, scores and registers
        return RunResult(
            "", run.uri, data.out, {}, pd.DataFrame(), data.out / "model", time.perf_counter() - t0
        )
    exported = postprocess(plan.wf, data, run, export(plan.wf, data, run, fitted))
    scores = score(plan.wf, data, run, exported)
    return register(plan.wf, data, run, exported, scores, t0)
