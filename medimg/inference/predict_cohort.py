"""Cohort prediction as ``medimg predict`` runs it: inputs (and a PACS) in, masks/probabilities out.

The model is loaded once; writers are chosen from the task and the inputs (NIfTI masks; DICOM SEG
and SR for DICOM inputs; a PACS store); the inference settings are hashed so that a rerun with
other settings does not reuse finished cases.

Example::

    from medimg.inference.predict_cohort import predict_cohort
    document, lines, code = predict_cohort("runs/quickstart_seg/model", ["scans/"], "predictions/")
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medimg.inference.cases import CaseInput
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


def predict_cohort(
    model: str | Sequence[str],
    inputs: Sequence[str],
    out: str | Path,
    *,
    tracking_uri: str | None = None,
    tta: bool = False,
    overlap: float | None = None,
    sw_batch_size: Any = None,
    device: str | None = None,
    shard: str | None = None,
    prefetch: int = 2,
    workers: int | None = None,
    progress: bool = True,
    dicom: str = "auto",
    pacs: str | None = None,
    pacs_study: str | None = None,
    pacs_modality: str | None = None,
    pacs_filter: Sequence[str] = (),
    store: bool = True,
    class_index: int | None = None,
    count: int | None = None,
    seed: int | None = None,
) -> tuple[dict[str, Any], list[str], int]:
    """Predict every case of ``inputs`` (and of a PACS query) into ``out``; resumable.

    ``model`` is one model or several (an ensemble: their probabilities are averaged; a ``--folds``
    study's output folder or parent run stands for all its members, see :mod:`medimg.inference.ensemble`).

    Returns the result document, its text lines and the exit code (1 when some cases failed).
    """
    from medimg.inference.cases import parse_shard
    from medimg.inference.cohort import run_cohort
    from medimg.inference.ensemble import make_predictor

    _refuse_generator_options(model, class_index=class_index, count=count, seed=seed)
    _require_inputs(inputs, pacs)
    found = _collect(inputs, workers)
    tm = _load_models(model, tracking_uri, tta, overlap, sw_batch_size)
    wf = tm.workflow
    predictor = make_predictor(tm, device=device)
    out_dir = Path(out)
    pacs_query = (pacs, pacs_study, pacs_modality, pacs_filter)
    client, cases, writers = _cases_and_writers(found, tm, out_dir, pacs_query, dicom, store)
    report = run_cohort(
        cases,
        _case_predictor(predictor, wf),
        out_dir,
        load_fn=_case_loader(predictor, client),
        writers=writers,
        model_key=tm.weights_sha256,
        settings_key=settings_key(wf.inference),
        prefetch=prefetch,
        progress=progress,
        shard=parse_shard(shard) if shard else None,
        set_aside=found.set_aside,
    )
    document, lines, code = cohort_result(report, out)
    _add_ensemble(document, lines, tm, out_dir)
    return document, lines, code


def _cases_and_writers(
    found: Any, tm: Any, out_dir: Path, pacs_query: tuple[Any, ...], dicom: str, store: bool
) -> tuple[Any, list[Any], list[Any]]:
    """The PACS client (or ``None``), the cases (the PACS query's added) and the output writers."""
    pacs, pacs_study, pacs_modality, pacs_filter = pacs_query
    client, cases = None, found.cases
    if pacs:
        client, cases = _add_pacs_cases(found, pacs, pacs_study, pacs_modality, pacs_filter, out_dir)
    dicom_in = client is not None or any(c.meta.get("dicom") for c in cases)
    writers = choose_writers(
        tm.workflow.task, _algorithm_info(tm), dicom, dicom_in, client if store else None
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
    The task's own runner refuses the options it does not take.

    Example:
        >>> cohort_runner("runs/quickstart_seg/model").__name__  # doctest: +SKIP
        'predict_cohort'
    """
    return own_runner(model, "cohort") or predict_cohort


def options_not_taken(options: dict[str, Any], taken: Sequence[str]) -> list[str]:
    """The options of :func:`predict_cohort` set away from their defaults that a runner does not take.

    A task's own cohort runner (``medimg.tasks.Task.cohort``) refuses them by name rather than
    ignoring them.

    Example:
        >>> options_not_taken({"tta": True, "overlap": 0.5, "prefetch": 2}, ["overlap"])
        ['tta']
    """
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(predict_cohort).parameters.items()}
    return [k for k, v in options.items() if k not in taken and k in defaults and v != defaults[k]
            and not (v in ((), []) and defaults[k] in ((), []))]  # fmt: skip


def own_cohort_inputs(
    model: str | Sequence[str],
    inputs: Sequence[str],
    options: dict[str, Any],
    taken: Sequence[str],
    what: str,
    workers: int | None = None,
) -> tuple[str, Any]:
    """The common start of a task's own cohort runner: its one model folder and the collected inputs.

    ``what`` names the model in messages (``"a detection model"``). An ensemble, an option of
    ``medimg predict`` the runner does not take (``taken``: the ones it does) and no inputs are
    refused by name.

    Example:
        >>> own_cohort_inputs(["a", "b"], ["x.nii.gz"], {}, (), "a detection model")
        Traceback (most recent call last):
        ...
        medimg.errors.ConfigError: ['a', 'b']: a detection model is used alone (no ensembles of them)
    """
    from medimg.errors import ConfigError

    models = [model] if isinstance(model, str) else list(model)
    if len(models) != 1:
        raise ConfigError(f"{models}: {what} is used alone (no ensembles of them)")
    refused = options_not_taken(options, taken)
    if refused:
        names = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise ConfigError(f"{models[0]}: {what} does not take {names}")
    if not inputs:
        raise ConfigError("give INPUT paths (nothing to predict)")
    return models[0], _collect(inputs, workers)


def _refuse_generator_options(model: str | Sequence[str], **given: int | None) -> None:
    """Refuse ``--class-index``/``--count``/``--seed`` (a synthesis model folder's) by name."""
    names = ", ".join("--" + k.replace("_", "-") for k, v in given.items() if v is not None)
    if names:
        from medimg.errors import ConfigError

        raise ConfigError(
            f"{model}: {names} is for a synthesis model folder (a generator), not a model that reads scans"
        )


def _require_inputs(inputs: Sequence[str], pacs: str | None) -> None:
    """Refuse a call with neither input paths nor a PACS to query."""
    if not inputs and not pacs:
        from medimg.errors import ConfigError

        raise ConfigError("give INPUT paths or --pacs URL (nothing to predict)")


def _load_models(
    model: str | Sequence[str], tracking_uri: str | None, tta: bool, overlap: float | None, sw_batch_size: Any
) -> Any:
    """Load the model or ensemble and apply the command's inference overrides to every member."""
    from medimg.inference.ensemble import load_ensemble

    tm = load_ensemble([model] if isinstance(model, str) else list(model), tracking_uri=tracking_uri)
    for member in tm.members:
        _override_inference(member.workflow, tta, overlap, sw_batch_size)
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


def _add_pacs_cases(
    found: Any,
    pacs: str,
    pacs_study: str | None,
    pacs_modality: str | None,
    pacs_filter: Sequence[str],
    out_dir: Path,
) -> tuple[Any, list[CaseInput]]:
    """The PACS client and the cases with the queried series added (series set aside join ``found``)."""
    from medimg.inference.pacs import PacsClient
    from medimg.inference.pacs_cohort import pacs_cases, pacs_set_aside, query_filters

    client = PacsClient(pacs)
    series = client.query_series(
        pacs_study, modality=pacs_modality, filters=query_filters(pacs_filter) or None
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
