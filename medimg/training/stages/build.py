"""Stage 4, build: the Lightning task for the workflow's task, with pretrained weights when named."""

from __future__ import annotations

from pathlib import Path

from medimg.config.load import workflow_to_dict
from medimg.training.stages.records import BuiltModel, PreparedData, StudyPlan, TrackedRun


def build(plan: StudyPlan, data: PreparedData, run: TrackedRun, resume: bool) -> BuiltModel:
    """The task module (network, loss, optimiser); pretrained weights loaded and recorded in the run.

    A resumed run that has a checkpoint takes its weights from the checkpoint, not the source.

    Example:
        >>> built = build(plan, data, run, resume=False)  # doctest: +SKIP
        >>> built.module.monitor  # doctest: +SKIP
        'val_dice'
    """
    from medimg.training.tasks import task_class

    wf = plan.wf
    steps = max(1, len(plan.train_dl))
    module = task_class(wf.task)(workflow_to_dict(wf), steps_per_epoch=steps, net=plan.net)
    if wf.model.pretrained is not None and not (resume and data.last_checkpoint.is_file()):
        from medimg.inference.model_io import sha256_file
        from medimg.models.loading import load_pretrained

        report = load_pretrained(module.net, wf.model.pretrained, encoder_prefixes=module.encoder_prefixes())
        if data.rank == 0:
            report.log_to_mlflow(run.run_id, run.uri)
            run.client.set_tag(run.run_id, "medimg.pretrained_source", wf.model.pretrained.source)
            actual = (
                sha256_file(report.path) if report.path and Path(report.path).is_file() else report.sha256
            )
            run.client.set_tag(run.run_id, "medimg.pretrained_sha256", str(actual))
    return BuiltModel(module)
