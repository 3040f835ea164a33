"""Explaining a cohort as ``medimg explain`` does: the model, the cases, the maps, reports and MLflow.

The cases come from the same inputs ``medimg predict`` takes
(:func:`medimg.inference.inputs.collect_inputs`); a manifest row also gives the reference class
and a lesion/organ mask.

Example::

    from medimg.explain.inputs import explain_inputs
    document, lines, code = explain_inputs(["scans/case_001.nii.gz"], "explain/", model="runs/quickstart_cls/model")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medimg.tasks import get_task


def load_model(
    run: str | None = None,
    model: str | None = None,
    checkpoint: str | None = None,
    workflow: str | None = None,
    tracking_uri: str | None = None,
):
    """The trained model to explain, from exactly one of a run id, a model folder or a checkpoint.

    ``workflow`` (with ``checkpoint`` only) rebuilds the network from that workflow instead.
    """
    from medimg.errors import ConfigError
    from medimg.inference.model_io import load_trained

    sources = {"run": run, "model": model, "checkpoint": checkpoint}
    given = [name for name, value in sources.items() if value]
    if len(given) != 1:
        raise ConfigError("give exactly one of --run RUN_ID, --model FOLDER or --checkpoint CKPT")
    if workflow and not checkpoint:
        raise ConfigError("--workflow goes with --checkpoint (runs and model folders carry their workflow)")
    tm = load_trained(sources[given[0]], tracking_uri=tracking_uri)
    if workflow:
        from medimg.config.load import load_workflow
        from medimg.models.networks import build_model

        wf = load_workflow(workflow)
        net = build_model(wf)
        net.load_state_dict(tm.model.state_dict())
        tm.model, tm.workflow = net.eval(), wf
    return tm


def explain_cases(inputs: Sequence[str], reference_column: str | None, mask_column: str | None):
    """Explain cases from the same inputs ``medimg predict`` takes (see ``collect_inputs``).

    A manifest row also gives the reference class and the lesion/organ mask (its path
    relative to the manifest, as the image's).
    """
    from medimg.errors import DataError
    from medimg.explain.runner import ExplainCase
    from medimg.inference.inputs import collect_inputs, resolve_path

    found = collect_inputs(list(inputs))
    for item in found.set_aside:
        print(f"  {item.status.replace('_', ' ')} {item.case_id}: {item.kind}: {item.reason}")
    cases = []
    for c in found.cases:
        row, root = c.meta.get("row") or {}, c.meta.get("root")
        ref = str(row.get(reference_column) or "") if reference_column else ""
        mask = str(row.get(mask_column) or "") if mask_column else ""
        try:
            reference = int(float(ref)) if ref.strip() else None
        except ValueError:
            raise DataError(
                f"case {c.case_id}: reference {reference_column}={ref!r} is not a class number"
            ) from None
        cases.append(
            ExplainCase(
                c.case_id,
                c.meta.get("image") or c.paths[0],
                reference=reference,
                mask=resolve_path(root, mask) if mask.strip() and root is not None else None,
            )
        )
    return cases


def explain_inputs(
    inputs: Sequence[str],
    out: str | Path,
    *,
    run: str | None = None,
    model: str | None = None,
    checkpoint: str | None = None,
    workflow: str | None = None,
    tracking_uri: str | None = None,
    methods: Sequence[str] | None = None,
    target_class: int | None = None,
    label: int = 1,
    layer: str | None = None,
    uncertainty: str = "flip",
    reference_column: str | None = None,
    mask_column: str | None = "lesion",
    sanity: bool = True,
    voxel_budget: int | None = None,
    sort_by: str = "error",
    device: str | None = None,
    mlflow: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], list[str], int]:
    """Explain a trained model's predictions on ``inputs`` (what ``medimg explain`` takes) into ``out``.

    Returns the result document, its text lines and the exit code (1 when some cases failed).
    """
    import torch

    from medimg.explain.maps import DEFAULT_VOXEL_BUDGET
    from medimg.explain.runner import explain_cohort

    tm = load_model(run, model, checkpoint, workflow, tracking_uri)
    task = tm.task
    methods, ref_col = _methods_and_reference(tm, methods, reference_column)
    cases = explain_cases(inputs, ref_col, mask_column)
    torch_device = torch.device(device or "cpu")
    net = tm.model.to(torch_device).eval()
    run_id = _mlflow_run_id(tm, mlflow, tracking_uri)
    result = explain_cohort(
        cases,
        net,
        out,
        methods,
        task=task,
        preprocess=_preprocess_on(tm, torch_device),
        target_class=target_class,
        label=label,
        method_params=_method_params(layer, uncertainty),
        model_info=_model_info(tm),
        sanity=sanity,
        voxel_budget=voxel_budget or DEFAULT_VOXEL_BUDGET,
        sort_by=sort_by,
        progress=progress,
        mlflow_run_id=run_id,
        workflow=tm.workflow,
    )
    document, lines = _summary(result, len(cases), methods, run_id)
    return document, lines, result.exit_code


def _methods_and_reference(
    tm: Any, methods: Sequence[str] | None, reference_column: str | None
) -> tuple[list[str], str | None]:
    """The methods to run (default: the task's) and the reference column (default: the label, where
    the task's reference is its label)."""
    spec = get_task(tm.task)
    chosen = list(methods or []) or list(spec.explain_methods)
    ref_col = reference_column or (tm.workflow.data.label_column if spec.reference_is_label else None)
    return chosen, ref_col


def _mlflow_run_id(tm: Any, mlflow: bool, tracking_uri: str | None) -> str | None:
    """The model's run to log the explanations to (tracking URI set), or None."""
    run_id = tm.run_id if mlflow else None
    if run_id:
        import mlflow as mlflow_module

        mlflow_module.set_tracking_uri(tracking_uri or tm.workflow.tracking.uri)
    return run_id


def _preprocess_on(tm: Any, torch_device: Any):
    """The model's own preprocessing, its tensor moved to ``torch_device``."""

    def preprocess(path: str):
        tensor, meta = tm.preprocess(path)
        return tensor.to(torch_device), meta

    return preprocess


def _method_params(layer: str | None, uncertainty: str) -> dict[str, dict]:
    """Per-method parameters: the Grad-CAM layer (when given) and the uncertainty mode."""
    params: dict[str, dict] = {}
    if layer:
        for m in ("gradcam", "gradcam++", "seg-gradcam"):
            params[m] = {"layer": layer}
    params["uncertainty"] = {"mode": uncertainty}
    return params


def _model_info(tm: Any) -> dict[str, Any]:
    """What the reports say about the model explained."""
    return {
        "model_id": f"{tm.workflow.name} ({tm.workflow.model.name})",
        "run_id": tm.run_id,
        "weights_sha256": tm.weights_sha256,
        "task": tm.task,
    }


def _summary(
    result: Any, n_cases: int, methods: list[str], run_id: str | None
) -> tuple[dict[str, Any], list[str]]:
    """The result document and its text lines (and a log line when MLflow has the artifacts)."""
    import logging

    log = logging.getLogger("medimg.explain")
    document = {
        "explained": len(result.reports), "cases": n_cases, "failed": len(result.failures),
        "failures": [{"case_key": key, "reason": reason} for key, reason in result.failures.items()],
        "index": str(result.index), "reports": {key: str(path) for key, path in result.reports.items()},
        "methods": methods, "mlflow_run_id": run_id,
    }  # fmt: skip
    lines = [
        f"explained {len(result.reports)} of {n_cases} cases; {len(result.failures)} failed",
        *(f"  FAILED {key}: {reason}" for key, reason in result.failures.items()),
        f"  index: {result.index}",
    ]
    if run_id:
        log.info("logged to MLflow run %s (artifacts: explain/)", run_id)
    return document, lines
