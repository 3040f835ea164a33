"""Cohort prediction as ``medimg predict`` runs it: inputs (and a PACS) in, masks/probabilities out.

The model is loaded once; writers are chosen from the task and the inputs (NIfTI masks; DICOM SEG
and SR for DICOM inputs; a PACS store); the inference settings are hashed so that a rerun with
other settings does not reuse finished cases.

Every cohort runner, this one and a task's own (:func:`cohort_runner`), takes one
:class:`medimg.inference.request.PredictRequest`.

Example::

    from medimg.inference.predict_cohort import predict_cohort
    from medimg.inference.request import PredictRequest
    request = PredictRequest("runs/quickstart_seg/model", ["scans/"], "predictions/", tta=True)
    document, lines, code = predict_cohort(request)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medimg.inference.cases import CaseInput
from medimg.inference.request import PredictRequest
from medimg.tasks import get_task


def settings_key(inference: Any) -> str:
    """A short hash of the inference settings (a workflow's ``inference`` section)."""
    from medimg.inference.cohort import settings_hash

    return settings_hash(inference.model_dump())[:16]


def choose_writers(task: str, algo: Any, dicom: str, dicom_in: bool, store_client: Any = None) -> list:
    """The writers of a cohort: the task's files, its DICOM objects (``dicom``: auto/on/off), a PACS store."""
    from medimg.inference.writers import make_writers

    spec = get_task(task)
    want_dicom = dicom == "on" or (dicom == "auto" and dicom_in)
    writers: list = make_writers(spec.writers + (spec.dicom_writers if want_dicom else ()), algo)
    if store_client is not None:
        from medimg.inference.pacs_cohort import PacsStoreWriter

        writers.append(PacsStoreWriter(store_client))
    return writers


def predict_cohort(request: PredictRequest) -> tuple[dict[str, Any], list[str], int]:
    """Predict every case of the request's inputs (and of a PACS query) into its ``out``; resumable.

    ``request.model`` is one model or several (an ensemble: their probabilities are averaged; a
    ``--folds`` study's output folder or parent run stands for all its members, see
    :mod:`medimg.inference.ensemble`). Every option of ``medimg predict`` applies; a generator's
    (``class_index``, ``count``, ``seed``) is refused by name.

    Returns the result document, its text lines and the exit code (1 when some cases failed).

    Example:
        >>> predict_cohort(PredictRequest("runs/quickstart_seg/model", ["scans/"], "out", tta=True))  # doctest: +SKIP
        ({'done': 3, ...}, [...], 0)
    """
    from medimg.inference.cohort import run_cohort
    from medimg.inference.ensemble import make_predictor

    _refuse_generator_options(request)
    _require_inputs(request.inputs, request.pacs)
    found = _collect(request.inputs, request.workers)
    tm = _load_models(request)
    wf = tm.workflow
    predictor = make_predictor(tm, device=request.device)
    out_dir = Path(request.out)
    client, cases, writers = _cases_and_writers(found, tm, out_dir, request)
    run = request.cohort_run(cases, found.set_aside)
    report = run_cohort(
        run.cases,
        _case_predictor(predictor, wf),
        out_dir,
        load_fn=_case_loader(predictor, client),
        writers=writers,
        model_key=tm.weights_sha256,
        settings_key=settings_key(wf.inference),
        **run.options(),
    )
    document, lines, code = cohort_result(report, request.out)
    _add_ensemble(document, lines, tm, out_dir)
    return document, lines, code


def _cases_and_writers(found: Any, tm: Any, out_dir: Path, request: PredictRequest) -> tuple[Any, list, list]:
    """The PACS client (or ``None``), the cases (the PACS query's added) and the output writers."""
    client, cases = None, found.cases
    if request.pacs:
        client, cases = _add_pacs_cases(found, request, out_dir)
    dicom_in = client is not None or any(c.meta.get("dicom") for c in cases)
    writers = choose_writers(
        tm.workflow.task, _algorithm_info(tm), request.dicom, dicom_in, client if request.store else None
    )
    return client, cases, writers


def own_runner(model: str | Sequence[str] | None, which: str) -> Any:
    """The ``which`` runner (``cohort``, ``evaluate``) of the task that made the model folder
    ``model`` (or any of several) when that task has its own (``medimg.tasks.Task``), else ``None``.

    Example:
        >>> own_runner("runs/quickstart_detection/model", "evaluate").__name__  # doctest: +SKIP
        'evaluate_detection'
    """
    from medimg.models.record import recorded_task
    from medimg.tasks import get_task, task_entry, task_names

    for member in [model] if isinstance(model, str) else list(model or []):
        name = recorded_task(member)
        if name in task_names() and getattr(get_task(name), which) is not None:
            return task_entry(get_task(name), which)  # type: ignore[arg-type]
    return None


def cohort_runner(model: str | Sequence[str] | None) -> Any:
    """What ``medimg predict MODEL`` runs: the cohort runner of the task that made the model folder
    when that task has its own (``medimg.tasks.Task.cohort``: detection, anomaly, superres), else
    :func:`predict_cohort` (masks or class probabilities; ensembles; run ids and ``models:/`` URIs).
    Every one takes a :class:`~medimg.inference.request.PredictRequest`; a task's own refuses by
    name the options it does not take.

    Example:
        >>> cohort_runner("runs/quickstart_seg/model").__name__  # doctest: +SKIP
        'predict_cohort'
        >>> request = PredictRequest("runs/quickstart_seg/model", ["scans/"], "out")
        >>> document, lines, code = cohort_runner(request.model)(request)  # doctest: +SKIP
    """
    return own_runner(model, "cohort") or predict_cohort


def own_cohort_inputs(request: PredictRequest, taken: Sequence[str], what: str) -> tuple[str, Any]:
    """The common start of a task's own cohort runner: its one model folder and the collected inputs.

    ``what`` names the model in messages (``"a detection model"``). An ensemble, an option of
    ``medimg predict`` the runner does not take (``taken``: the ones it does) and no inputs are
    refused by name.

    Example:
        >>> own_cohort_inputs(PredictRequest(["a", "b"], ["x.nii.gz"], "out"), (), "a detection model")
        Traceback (most recent call last):
        ...
        medimg.errors.ConfigError: ['a', 'b']: a detection model is used alone (no ensembles of them)
    """
    from medimg.errors import ConfigError

    folder = request.one_model(what)
    request.refuse_options(taken, what)
    if not request.inputs:
        raise ConfigError("give INPUT paths (nothing to predict)")
    return folder, _collect(request.inputs, request.workers)


def _refuse_generator_options(request: PredictRequest) -> None:
    """Refuse ``--class-index``/``--count``/``--seed`` (a synthesis model folder's) by name."""
    given = [k for k in ("class_index", "count", "seed") if getattr(request, k) is not None]
    if given:
        from medimg.errors import ConfigError

        raise ConfigError(
            f"{request.model}: {request.flags(given)} is for a synthesis model folder (a generator), "
            "not a model that reads scans"
        )


def _require_inputs(inputs: Sequence[str], pacs: str | None) -> None:
    """Refuse a call with neither input paths nor a PACS to query."""
    if not inputs and not pacs:
        from medimg.errors import ConfigError

        raise ConfigError("give INPUT paths or --pacs URL (nothing to predict)")


def _load_models(request: PredictRequest) -> Any:
    """Load the model or ensemble and apply the request's inference overrides to every member."""
    from medimg.inference.ensemble import load_ensemble

    tm = load_ensemble(request.models, tracking_uri=request.tracking_uri)
    for member in tm.members:
        _override_inference(member.workflow, request.tta, request.overlap, request.sw_batch_size)
    return tm


def _add_ensemble(document: dict[str, Any], lines: list[str], tm: Any, out_dir: Path) -> None:
    """For an ensemble, record its members (``ensemble.json``) in the document and the text."""
    if len(tm.members) > 1:
        document["ensemble"] = _record_members(tm, out_dir)
        lines.append(f"ensemble of {len(tm.members)} models: {out_dir / 'ensemble.json'}")


def _record_members(ens: Any, out_dir: Path) -> list[dict[str, Any]]:
    """Write ``ensemble.json`` (every member's source, run and weights hash) beside the cohort summary."""
    from medimg.io.atomic import atomic_write_text

    members = ens.records()
    doc = {"weights_sha256": ens.weights_sha256, "parent_run_id": ens.parent_run_id, "members": members}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ensemble.json", json.dumps(doc, indent=2) + "\n")
    return members


def _collect(inputs: Sequence[str], workers: int | None) -> Any:
    """The cases among ``inputs`` (read with ``workers`` threads, default up to 4) and those set aside."""
    from medimg.inference.inputs import CollectedInputs, collect_inputs

    workers = workers or min(4, os.cpu_count() or 1)
    return collect_inputs(list(inputs), workers=workers) if inputs else CollectedInputs()


def _override_inference(wf: Any, tta: bool, overlap: float | None, sw_batch_size: Any) -> None:
    """Apply the command line's inference settings (TTA, window overlap, sliding-window batch) to ``wf``."""
    if tta:
        wf.inference.tta_flips = True
    if overlap is not None:
        wf.inference.overlap = overlap
    if sw_batch_size is not None:
        wf.inference.sw_batch_size = sw_batch_size


def _add_pacs_cases(found: Any, request: PredictRequest, out_dir: Path) -> tuple[Any, list[CaseInput]]:
    """The PACS client and the cases with the queried series added (series set aside join ``found``)."""
    from medimg.inference.pacs import PacsClient
    from medimg.inference.pacs_cohort import pacs_cases, pacs_set_aside, query_filters

    client = PacsClient(request.pacs)
    series = client.query_series(
        request.pacs_study, modality=request.pacs_modality, filters=query_filters(request.pacs_filter) or None
    )
    cases = found.cases + pacs_cases(client, series, out_dir / "pacs_cache")
    found.set_aside += pacs_set_aside(series)
    return client, cases


def _case_loader(predictor: Any, client: Any):
    """Preprocess a case (in background threads); PACS cases are retrieved first."""

    def load_fn(case):  # runs in background threads
        return predictor.preprocess(case.meta.get("image") or str(case.paths[0]))

    if client is not None:
        from medimg.inference.pacs_cohort import retrieving

        load_fn = retrieving(client, load_fn)
    return load_fn


def _case_predictor(predictor: Any, wf: Any):
    """Predict a loaded case: a mask (segmentation) or class probabilities, with timings and QA flags."""
    import numpy as np

    from medimg.inference.cases import CaseOutputs

    labels = {int(k): v for k, v in wf.data.labels.items() if int(k) != 0}
    dense = get_task(wf.task).dense  # a mask on the source grid, else class probabilities

    def predict_fn(case, item):
        pred = predictor.predict_item(item, case.case_id)
        if dense:
            mask = pred.mask_volume()
            extra = {**pred.timings, **({"input_qa_flags": pred.source_qa} if pred.source_qa else {})}
            return CaseOutputs(mask=mask, labels=labels, extra=extra)
        names = [str(i) for i in range(len(pred.probs))]
        return CaseOutputs(
            probabilities=dict(zip(names, map(float, pred.probs), strict=True)),
            extra={"prediction": int(np.argmax(pred.probs)), **pred.timings},
        )

    return predict_fn


def _algorithm_info(tm: Any) -> Any:
    """The algorithm the DICOM SEG and SR name: the workflow, medimg's version and the weights hash."""
    from medimg.inference.dicom_seg import AlgorithmInfo

    members = tuple(m.weights_sha256 for m in tm.members) if len(tm.members) > 1 else ()
    return AlgorithmInfo(
        name=tm.workflow.name + (f"-ensemble{len(members)}" if members else ""),
        version=__import__("medimg").__version__,
        weights_sha256=tm.weights_sha256,
        members=members,
    )


def cohort_result(report: Any, out: str | Path) -> tuple[dict[str, Any], list[str], int]:
    """The result document, its text lines and the exit code (1 when some cases failed)."""
    counts = {k: getattr(report, k) for k in ("done", "skipped", "failed", "set_aside", "unreadable")}
    document = {**counts, "out": str(out), "summary_csv": str(report.summary_csv)}
    lines = [
        f"done {report.done}, skipped {report.skipped}, failed {report.failed}, set aside {report.set_aside}, "
        f"unreadable files {report.unreadable} -> {out}",
        f"cohort summary: {report.summary_csv}",
    ]
    return document, lines, 1 if report.failed else 0  # medimg.errors.EXIT_SOME_FAILED: the count is printed
