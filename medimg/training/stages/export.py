"""Stage 6, export: the best weights as a model folder, logged under the run's ``model/`` artifacts."""

from __future__ import annotations

from medimg.config.schema import Workflow
from medimg.training.stages.records import ExportedModel, FitResult, PreparedData, TrackedRun


def export(wf: Workflow, data: PreparedData, run: TrackedRun, fitted: FitResult) -> ExportedModel:
    """Load the best checkpoint, save the model folder (safetensors + sha256 record) and log it.

    Example:
        >>> exported = export(plan.wf, data, run, fitted)  # doctest: +SKIP
        >>> sorted(p.name for p in exported.model_dir.iterdir())  # doctest: +SKIP
        ['model.json', 'model.safetensors', 'workflow.yaml']
    """
    import torch

    from medimg.inference.model_io import save_trained, sha256_file

    module, best = fitted.module, fitted.best
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    # scored and saved in the default layout, as `medimg predict` will load it
    module.net.to(memory_format=torch.contiguous_format)
    model_dir = save_trained(module.net, wf, data.out / "model")
    run.client.log_artifacts(run.run_id, str(model_dir), "model")
    if wf.tracking.log_checkpoint and best:
        run.client.log_artifact(run.run_id, best, "checkpoints")
    weights_sha = sha256_file(model_dir / "model.safetensors")
    run.client.set_tag(run.run_id, "medimg.weights_sha256", weights_sha)
    return ExportedModel(net=module.net, model_dir=model_dir, weights_sha256=weights_sha)
