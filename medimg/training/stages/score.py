"""Stage 7, score: the test split, through the predictor `medimg predict` uses, per case and summarised."""

from __future__ import annotations

import json

import pandas as pd

from medimg.config.schema import Workflow
from medimg.io.atomic import atomic_write_text
from medimg.io.csvsafe import escape_frame
from medimg.tasks import get_task
from medimg.training.stages.records import ExportedModel, PreparedData, Scores, TrackedRun


def score(wf: Workflow, data: PreparedData, run: TrackedRun, exported: ExportedModel) -> Scores:
    """Score every test case; log the summary metrics (NaN ones left out) and both tables.

    Segmentation masks are written to ``test_predictions/``. Without a test split, nothing is scored.

    Example:
        >>> scores = score(plan.wf, data, run, exported)  # doctest: +SKIP
        >>> round(scores.metrics["test_dice_mean"], 2)  # doctest: +SKIP
        0.81
    """
    from medimg.inference.predictor import Predictor
    from medimg.inference.score import score_cases, summarise

    out, test = data.out, data.df[data.df.split == "test"]
    per_case = pd.DataFrame()
    metrics: dict[str, float] = {}
    if len(test):
        seg = get_task(wf.task).dense  # the masks of the test split are kept
        device = "cpu" if wf.trainer.accelerator == "cpu" else None
        predictor = Predictor(exported.net, wf, device=device, postprocessing=exported.postprocessing)
        per_case = score_cases(predictor, test, masks_dir=out / "test_predictions" if seg else None)
        atomic_write_text(
            out / "test_per_case.csv", escape_frame(per_case, ("image", "target")).to_csv(index=False)
        )
        metrics = summarise(per_case, wf.task)
        for k, v in metrics.items():
            if v == v:  # not NaN
                run.client.log_metric(run.run_id, k, v)
        atomic_write_text(out / "test_summary.json", json.dumps(metrics, indent=2))
        run.client.log_artifact(run.run_id, str(out / "test_per_case.csv"), "evaluation")
        run.client.log_artifact(run.run_id, str(out / "test_summary.json"), "evaluation")
    return Scores(per_case=per_case, metrics=metrics)
