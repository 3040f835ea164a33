"""Stage 8, register: the pyfunc model (and a registry version when asked), the run marked FINISHED."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from medimg.config.schema import Workflow
from medimg.io.atomic import atomic_write_text
from medimg.training.stages.records import ExportedModel, PreparedData, RunResult, Scores, TrackedRun
from medimg.training.stages.track import mark_failed

log = logging.getLogger(__name__)


def register(
    wf: Workflow, data: PreparedData, run: TrackedRun, exported: ExportedModel, scores: Scores, t0: float
) -> RunResult:
    """Log the pyfunc model, the run's seconds since ``t0`` (``time.perf_counter``), finish the run.

    Every run logs its pyfunc; only ``tracking.register_model`` adds a registry version. A failure
    to log it marks the run FAILED. ``run.json`` ends ``finished`` with the weights' sha256.

    Example:
        >>> res = register(plan.wf, data, run, exported, scores, t0)  # doctest: +SKIP
        >>> res.extra["model_uri"]  # doctest: +SKIP
        'models:/m-...'
    """
    from medimg.inference.pyfunc import log_pyfunc_model

    out, run_id = data.out, run.run_id
    assert run_id is not None  # only rank 0 registers
    try:  # every run logs its pyfunc; only `tracking.register_model` adds a registry version
        t_model = time.perf_counter()
        model_uri = log_pyfunc_model(
            run_id, exported.model_dir, run.uri, wf.tracking.register_model or None, wf.tracking.model_alias
        )
        log.info("logged the pyfunc model %s in %.1f s", model_uri, time.perf_counter() - t_model)
    except Exception as exc:
        mark_failed(run, out, exc)
        raise
    extra: dict[str, Any] = {"model_uri": model_uri}
    seconds = time.perf_counter() - t0
    run.client.log_metric(run_id, "run_seconds", seconds)
    run.client.set_terminated(run_id, "FINISHED")
    info = {
        "run_id": run_id,
        "tracking_uri": run.uri,
        "status": "finished",
        "weights_sha256": exported.weights_sha256,
    }
    atomic_write_text(out / "run.json", json.dumps({**info, **extra}, indent=2))
    return RunResult(
        run_id, run.uri, out, scores.metrics, scores.per_case, exported.model_dir, seconds, extra
    )
