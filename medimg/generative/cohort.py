"""Cohort inference of a generative model folder: anomaly maps, or super-resolved thick-slice series.

``medimg predict <anomaly or superres model folder> INPUT... --out DIR`` lands here (the tasks'
``cohort`` runner in ``medimg.tasks``, found from the folder's ``model.json``). The run is :func:`medimg.inference.cohort.run_cohort`, like
segmentation's and detection's: the model is loaded once, the next case is read while the current
one is on the network, every file is written atomically, a fsync'd ledger marks a case done only
after its files are in place, a killed run resumes by running it again (each case done once), and
one bad case is recorded with its reason while the rest go on.

Per case, in ``DIR/cases/<case>/``:

* ``task: anomaly``: ``anomaly.nii.gz`` (the map on the input's own grid: its shape and affine)
  and ``anomaly.json`` (score, threshold, flag); the cohort table ``anomaly_scores.csv``;
* ``task: superres``: ``sr.nii.gz`` (the thin grid: ``factor`` times the slices along the model's
  axis, affine :func:`medimg.generative.slices.thin_affine`) and ``sr.json``; the cohort table
  ``superres.csv``.

``cohort.csv`` lists every case with its status and, for a failed one, the reason. A synthesis
model folder (a generator) reads no scans: :mod:`medimg.generative.generate_cohort` writes its cases.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import ConfigError, DataError
from medimg.generative.anomaly import preprocess
from medimg.generative.superres_study import super_resolve
from medimg.inference.cases import CaseInput, CaseOutputs
from medimg.inference.cohort import CohortReport, cases_table, run_cohort, settings_hash
from medimg.inference.request import CohortRun, PredictRequest
from medimg.io.atomic import atomic_write_text
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

GENERATIVE_TASKS = ("anomaly", "superres")
# the columns of each task's cohort table, read back from the cases' JSON files
TABLE_COLUMNS = {
    "anomaly": ("case_id", "score", "threshold", "flagged", "score_kind"),
    "superres": ("case_id", "input_shape", "output_shape", "axis", "factor"),
}
TABLE_NAMES = {"anomaly": "anomaly_scores.csv", "superres": "superres.csv"}
CASE_JSON = {"anomaly": "anomaly", "superres": "sr"}  # <name>.json per case


def generative_task(model: str | Path) -> str | None:
    """``anomaly`` / ``superres`` when ``model`` is such a model folder (its ``model.json`` says so), else None.

    Example:
        >>> generative_task("runs/quickstart_seg/model")  # doctest: +SKIP
    """
    info = Path(model) / "model.json"
    if not info.is_file():
        return None
    try:
        task = json.loads(info.read_text()).get("task")
    except (ValueError, AttributeError):
        return None
    return task if task in GENERATIVE_TASKS else None


def _image(case: CaseInput) -> str:
    return str(case.meta.get("image") or case.paths[0])


def _json_writer(name: str, fields: Callable[[CaseInput, CaseOutputs], dict[str, Any]]) -> Any:
    """A writer of ``<name>.nii.gz`` (``outputs.source``, a Volume) and ``<name>.json`` (``fields``)."""

    class _Writer:
        def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
            vol: Volume = outputs.source
            image = save_nifti(
                Volume(np.asarray(vol.data, np.float32), vol.affine), case_dir / f"{name}.nii.gz"
            )
            doc = {
                "case_id": case.case_id,
                **fields(case, outputs),
                "affine": np.asarray(vol.affine).tolist(),
            }
            return [image, atomic_write_text(case_dir / f"{name}.json", json.dumps(doc, indent=2) + "\n")]

    writer = _Writer()
    writer.name = name  # type: ignore[attr-defined]
    return writer


def _anomaly_parts(model_dir: Path) -> tuple[Callable, Callable, Any, dict[str, Any]]:
    """``load_fn``, ``predict_fn``, the writer and the settings of an anomaly model folder."""
    from medimg.generative.apply import load_anomaly_model

    wf, model = load_anomaly_model(model_dir)

    def load(case: CaseInput) -> Any:
        return preprocess(wf, _image(case), case.case_id)

    def predict(case: CaseInput, grid: Any) -> CaseOutputs:
        amap = model.source_map(grid)
        if not np.isfinite(amap).all():
            raise DataError(f"{_image(case)}: the anomaly map has non-finite values (an unusable image?)")
        score = model.case_score(amap)
        extra = {"score": score, "threshold": model.threshold, "flagged": bool(score > model.threshold)}
        return CaseOutputs(
            source=Volume(amap, grid.source_affine), extra={**extra, "score_kind": model.score}
        )

    writer = _json_writer(CASE_JSON["anomaly"], lambda case, out: dict(out.extra))
    return load, predict, writer, {"task": "anomaly", "threshold": model.threshold, "score": model.score}


def _superres_parts(model_dir: Path) -> tuple[Callable, Callable, Any, dict[str, Any]]:
    """``load_fn``, ``predict_fn``, the writer and the settings of a super-resolution model folder."""
    from medimg.generative.apply import load_superres_model
    from medimg.io.load import load_image

    wf, net = load_superres_model(model_dir)
    cfg = wf.superres
    assert cfg is not None

    def load(case: CaseInput) -> Volume:
        thick = load_image(_image(case), affine_policy=wf.data.nifti_affine)
        if thick.data.ndim != 3 or thick.shape[cfg.axis] < 2:
            raise DataError(
                f"{_image(case)}: expected a 3D thick-slice image with at least 2 slices along the model's "
                f"superres.axis {cfg.axis}, got shape {thick.shape}"
            )
        return thick

    def predict(case: CaseInput, thick: Volume) -> CaseOutputs:
        sr = super_resolve(net, thick, cfg)
        extra = {"input_shape": "x".join(map(str, thick.shape)), "output_shape": "x".join(map(str, sr.shape))}
        return CaseOutputs(source=sr, extra={**extra, "axis": cfg.axis, "factor": cfg.factor})

    writer = _json_writer(CASE_JSON["superres"], lambda case, out: dict(out.extra))
    return load, predict, writer, {"task": "superres", "axis": cfg.axis, "factor": cfg.factor}


COHORT_PARTS = {"anomaly": _anomaly_parts, "superres": _superres_parts}  # the task's load, predict, writer


def cohort_table(out_dir: str | Path, task: str, case_ids: Sequence[str]) -> Path:
    """Every done case's JSON in one CSV (``anomaly_scores.csv`` / ``superres.csv``), written atomically."""
    names = (f"{CASE_JSON[task]}.json", TABLE_NAMES[task])
    return cases_table(Path(out_dir), case_ids, names, TABLE_COLUMNS[task], lambda case_id, doc: [doc])


def predict_generative_cohort(model_dir: str | Path, run: CohortRun) -> CohortReport:
    """Apply an anomaly or super-resolution model folder to every case of ``run`` (resumable); write
    the cohort table.

    Example:
        >>> run = CohortRun([CaseInput("t1_5mm", (Path("thick/t1_5mm.nii.gz"),))], "sr")  # doctest: +SKIP
        >>> predict_generative_cohort("runs/quickstart_superres/model", run).exit_code  # doctest: +SKIP
        0
    """
    task = generative_task(model_dir)
    if task is None:
        raise ConfigError(f"{model_dir}: model.json not found or its task is not one of {GENERATIVE_TASKS}")
    load, predict, writer, settings = COHORT_PARTS[task](Path(model_dir))
    weights = hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()
    report = run_cohort(
        run.cases,
        predict,
        Path(run.out_dir),
        load_fn=load,
        writers=[writer],
        model_key=weights,
        settings_key=settings_hash(settings),
        **run.options(),
    )
    cohort_table(run.out_dir, task, [c.case_id for c in run.cases])
    return report


TAKEN = ("workers", "shard", "prefetch", "progress")  # the options of medimg predict that these use


def predict_generative(request: PredictRequest) -> tuple[dict[str, Any], list[str], int]:
    """``medimg predict`` with an anomaly or superres model folder: the result document, its lines, the exit code.

    A task's cohort runner (``medimg.tasks.Task.cohort``). Options of ``medimg predict`` with no
    meaning here (TTA, window overlap, a PACS, a device other than the CPU, DICOM output, ensembles)
    are refused by name when set, never ignored.

    Example:
        >>> predict_generative(PredictRequest("runs/quickstart_anomaly/model", ["scans/"], "maps"))  # doctest: +SKIP
        ({'done': 3, ...}, [...], 0)
    """
    from medimg.inference.predict_cohort import cohort_result, own_cohort_inputs

    name = generative_task(request.model) if isinstance(request.model, str) else None
    what = f"a {name} model folder" if name else "an anomaly or superres model folder"
    folder, found = own_cohort_inputs(request, TAKEN, what)
    task = generative_task(folder)
    if task is None:
        raise ConfigError(
            f"{folder}: not an anomaly or superres model folder (its model.json names the task)"
        )
    report = predict_generative_cohort(folder, request.cohort_run(found.cases, found.set_aside))
    document, lines, code = cohort_result(report, request.out)
    document["table"] = str(Path(request.out) / TABLE_NAMES[task])
    lines.append(f"cohort table: {document['table']}")
    return document, lines, code
