"""Explain a cohort: maps, NIfTI files in each scan's geometry, case reports and an index page.

The model is used as given (loaded once); the weight-randomised copy for the sanity check is
made once per cohort. A case that fails (unreadable file, wrong shape...) is recorded with its
reason in the index and in ``failures.json`` while the others go on; the result's
``exit_code`` is the number of failed cases (capped at 100).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medimg.config.schema import Workflow
from medimg.errors import EXIT_OK, EXIT_SOME_FAILED, ConfigError
from medimg.explain.case_target import classification_target, segmentation_target
from medimg.explain.caseprep import PreparedCase, Preprocess, default_preprocess, prepare_case
from medimg.explain.cases import ExplainCase
from medimg.explain.failures import failure_reason, safe_key, scrub_paths
from medimg.explain.geometry import save_map_in_source_geometry
from medimg.explain.index import IndexEntry, write_cohort_index
from medimg.explain.maps import DEFAULT_VOXEL_BUDGET, compute_saliency, get_method, method_slug
from medimg.explain.report import CaseExplanation, MethodResult, write_case_report
from medimg.explain.sanity import deletion_insertion, randomisation_test, randomise_weights
from medimg.explain.tracking import log_to_mlflow, sanity_summary
from medimg.explain.windows import windowed_saliency
from medimg.io.atomic import atomic_write_text
from medimg.tasks import get_task

log = logging.getLogger("medimg.explain")

_NO_SANITY = {"uncertainty"}  # not an attribution: nothing to randomise or delete


@dataclass
class CohortResult:
    """What :func:`explain_cohort` did: reports written, failures and the index page."""

    out_dir: Path
    index: Path
    reports: dict[str, Path] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    sanity: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every case was explained, else 1 (``EXIT_SOME_FAILED``), never the count."""
        return EXIT_SOME_FAILED if self.failures else EXIT_OK


def explain_cohort(
    cases: Sequence[ExplainCase],
    model_fn: torch.nn.Module,
    out_dir: str | os.PathLike[str],
    methods: Sequence[str] = ("gradcam",),
    *,
    task: str = "classification",
    preprocess: Preprocess | None = None,
    target_class: int | None = None,
    label: int = 1,
    method_params: dict[str, dict[str, Any]] | None = None,
    model_info: dict[str, Any] | None = None,
    sanity: bool = True,
    faithfulness_steps: int = 16,
    voxel_budget: int = DEFAULT_VOXEL_BUDGET,
    sort_by: str = "error",
    progress: bool = True,
    mlflow_run_id: str | None = None,
    on_case: Callable[[str, str], None] | None = None,
    workflow: Workflow | None = None,
) -> CohortResult:
    """Explain every case with every method; write maps, reports and the cohort index.

    Args:
        cases: the cases (see :class:`ExplainCase`).
        model_fn: the network in eval mode (classification: ``(1, K)`` logits; segmentation:
            ``(1, K, D, H, W)`` logits).
        out_dir: output folder: ``index.html``, ``summary.json``, ``failures.json`` and one
            folder per case with ``report.html`` and ``<method>.nii.gz`` (source geometry).
        methods: names from :func:`medimg.explain.available_methods`.
        task: ``"classification"`` or ``"segmentation"``.
        preprocess: ``path -> (tensor (C, D, H, W), meta)`` with ``meta["affine"]`` (grid,
            RAS), ``meta["source_affine"]`` (RAS) and ``meta["source_shape"]``; default: load
            and z-score the image on its own grid.
        target_class: class to explain (``None``: each case's predicted class).
        label: segmentation label to explain.
        method_params: extra parameters per method, e.g. ``{"occlusion": {"mask_size": 8}}``.
        model_info: shown in reports: ``model_id``, ``run_id``, ``weights_sha256``...
        sanity: run the randomisation test and deletion/insertion curves.
        faithfulness_steps: points on the deletion/insertion curves.
        voxel_budget: classification maps of larger inputs are computed on a coarser grid
            (stated in reports); segmentation maps are bounded by their windows instead.
        sort_by: initial order of the index (``error``, ``confidence``, ``case``...).
        progress: show a progress bar (stderr).
        mlflow_run_id: when given, outputs are logged as artifacts (``explain/``) of that run.
        on_case: callback ``(case_key, "ok" | reason)`` after each case.
        workflow: the trained model's workflow; segmentation maps are then computed over the
            sliding windows ``medimg predict`` uses (:mod:`medimg.explain.windows`); without it,
            over one window: the volume padded to a multiple of 32 voxels per side.

    Example:
        >>> res = explain_cohort(cases, model, "out/explain", ["gradcam", "occlusion"])  # doctest: +SKIP
        >>> res.exit_code  # doctest: +SKIP
        0
    """
    out = _output_folder(out_dir, methods, task)
    settings = _Settings.for_model(model_fn, methods, task, target_class, label, method_params, model_info,
                                   sanity, faithfulness_steps, voxel_budget, workflow)  # fmt: skip
    run = _explain_cases(cases, settings, preprocess or default_preprocess, out, progress, on_case)
    return run.write_outputs(sort_by, mlflow_run_id)


def _output_folder(out_dir: str | os.PathLike[str], methods: Sequence[str], task: str) -> Path:
    """Check every method fits this model's answer (a map per voxel or one per image), then create the folder."""
    dense = get_task(task).dense
    for m in methods:
        _fn, m_task = get_method(m)
        if get_task(m_task).dense is not dense:
            raise ConfigError(f"method {m!r} is for {m_task} models; this is a {task} model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


@dataclass
class _CohortRun:
    """The cohort so far: the result, the index entries and the summary rows."""

    result: CohortResult
    entries: list[IndexEntry] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def explain(
        self,
        case: ExplainCase,
        prep: Preprocess,
        settings: _Settings,
        on_case: Callable[[str, str], None] | None,
    ) -> None:
        """Explain one case and write its report; a failure is recorded and the cohort goes on."""
        out, result = self.result.out_dir, self.result
        key = safe_key(case.key)
        try:
            prepared = prepare_case(case, prep)
            explanation, row = _explain_case(prepared, settings, out / key)
            report = write_case_report(explanation, out / key / "report.html")
        except Exception as exc:  # one bad case never takes the cohort down
            reason = scrub_paths(failure_reason(exc), case)
            log.warning("case %s failed: %s", case.key, reason)
            result.failures[case.key] = reason
            self.entries.append(IndexEntry(case.key, status="failed", reason=reason))
            self.rows.append({"case_key": case.key, "status": "failed", "reason": reason})
            if on_case:
                on_case(case.key, reason)
            return
        result.reports[case.key] = report
        self.entries.append(_index_entry(case.key, f"{key}/report.html", row))
        self.rows.append(row)
        if on_case:
            on_case(case.key, "ok")

    def write_outputs(self, sort_by: str, mlflow_run_id: str | None) -> CohortResult:
        """Write the index page, ``summary.json`` and ``failures.json``; log them to MLflow when asked."""
        out, result = self.result.out_dir, self.result
        write_cohort_index(self.entries, result.index, sort_by=sort_by)
        result.sanity = sanity_summary(self.rows)
        atomic_write_text(
            out / "summary.json", json.dumps({"cases": self.rows, "sanity": result.sanity}, indent=2)
        )
        atomic_write_text(out / "failures.json", json.dumps(result.failures, indent=2))
        if mlflow_run_id:
            log_to_mlflow(mlflow_run_id, out, result.sanity)
        return result


def _explain_cases(
    cases: Sequence[ExplainCase],
    settings: _Settings,
    prep: Preprocess,
    out: Path,
    progress: bool,
    on_case: Callable[[str, str], None] | None,
) -> _CohortRun:
    """Explain every case in turn (with a progress bar on stderr)."""
    from tqdm.auto import tqdm

    run = _CohortRun(CohortResult(out, out / "index.html"))
    for case in tqdm(list(cases), desc="explain", unit="case", disable=not progress):
        run.explain(case, prep, settings, on_case)
    return run


@dataclass
class _Settings:
    """What every case of a cohort is explained with."""

    model: torch.nn.Module
    randomised: torch.nn.Module | None
    methods: Sequence[str]
    task: str
    target_class: int | None
    label: int
    method_params: dict[str, dict[str, Any]]
    model_info: dict[str, Any]
    sanity: bool
    steps: int
    voxel_budget: int
    workflow: Workflow | None

    @classmethod
    def for_model(
        cls,
        model_fn: torch.nn.Module,
        methods: Sequence[str],
        task: str,
        target_class: int | None,
        label: int,
        method_params: dict[str, dict[str, Any]] | None,
        model_info: dict[str, Any] | None,
        sanity: bool,
        faithfulness_steps: int,
        voxel_budget: int,
        workflow: Workflow | None,
    ) -> _Settings:
        """Put the model in eval mode and make its weight-randomised copy (once) when sanity is on."""
        model_fn.eval()
        randomised = randomise_weights(model_fn, seed=0) if sanity else None
        return cls(
            model_fn,
            randomised,
            methods,
            task,
            target_class,
            label,
            method_params or {},
            model_info or {},
            sanity,
            faithfulness_steps,
            voxel_budget,
            workflow,
        )


def _explain_case(
    prepared: PreparedCase, s: _Settings, case_dir: Path
) -> tuple[CaseExplanation, dict[str, Any]]:
    x = prepared.tensor
    row: dict[str, Any] = {"case_key": prepared.key, "status": "ok", "reference": prepared.reference}
    if not get_task(s.task).dense:  # one answer per image: explain a class
        t = classification_target(prepared, s.model, s.target_class, row)
    else:
        t = segmentation_target(prepared, s.model, s.workflow, s.label, row)
    results = []
    for method in s.methods:
        params = {**t.kwargs, **s.method_params.get(method, {})}
        if method == "uncertainty":
            params.pop("region", None)

        def explain(m: torch.nn.Module, v: torch.Tensor, method: str = method, params: dict = params):
            if t.plan is not None:
                return windowed_saliency(m, v, method, t.plan, **dict(params))
            return compute_saliency(m, v, method, voxel_budget=s.voxel_budget, **dict(params))

        saliency = explain(s.model, x)
        res = MethodResult(saliency)
        structure = prepared.structure
        if structure is not None and structure.shape == saliency.array.shape and structure.any():
            res.peak_in_structure = bool(structure[saliency.peak_index])
        if s.sanity and method not in _NO_SANITY:
            res.randomisation = randomisation_test(
                s.model, x, explain, saliency, randomised_model=s.randomised
            )
            res.faithfulness = deletion_insertion(t.probe, x, saliency, t.score_fn, steps=s.steps)
        nifti = case_dir / f"{method_slug(method)}.nii.gz"
        save_map_in_source_geometry(
            saliency.array, prepared.affine, (prepared.source_shape, prepared.source_affine), nifti
        )
        res.nifti = nifti.name
        results.append(res)
        row.setdefault("methods", {})[method] = _method_row(res)
    explanation = CaseExplanation(
        case_key=prepared.key,
        task=s.task,
        image=x[0, 0].detach().cpu().numpy(),
        affine=prepared.affine,
        results=results,
        prediction=t.prediction,
        truth=prepared.reference,
        structure=prepared.structure,
        model=s.model_info,
    )
    return explanation, row


def _method_row(res: MethodResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "target": res.saliency.target,
        "params": res.saliency.params,
        "grid_note": res.saliency.grid_note,
    }
    if res.peak_in_structure is not None:
        row["peak_in_structure"] = res.peak_in_structure
    if res.randomisation is not None:
        row.update(spearman=res.randomisation.spearman, ssim=res.randomisation.ssim)
    if res.faithfulness is not None:
        f = res.faithfulness
        row.update(
            deletion_auc=f.deletion_auc,
            insertion_auc=f.insertion_auc,
            random_deletion_auc=f.random_deletion_auc,
        )
    row["passed"] = res.passed
    row["verdict"] = res.verdict
    return row


def _index_entry(key: str, href: str, row: dict[str, Any]) -> IndexEntry:
    checks = [m.get("passed") for m in row.get("methods", {}).values() if m.get("passed") is not None]
    sanity = "" if not checks else f"{sum(checks)}/{len(checks)} methods pass"
    ref = row.get("reference")
    return IndexEntry(
        key,
        report=href,
        prediction=str(row.get("prediction", "")),
        confidence=row.get("confidence"),
        reference="" if ref is None else str(ref),
        error=row.get("error"),
        sanity=sanity,
    )
