"""Ensembles: several trained models whose class probabilities are averaged.

A member is anything :func:`~medimg.inference.model_io.load_trained` accepts. A ``--folds k`` study
(:func:`medimg.training.repeats.run_repeats`) stands for all its children: its output folder (the
one holding ``repeats.csv``) or its parent MLflow run (the run with the param ``repeats.folds``).
Members must agree on everything that shapes their input and output (task, labels or classes,
channels, preprocessing); each keeps its own network and sliding window. The ensemble's
probability is the plain mean of the members' probabilities (each with flip TTA when asked), then
the mask or class comes from the mean. A postprocessing step is applied only where every member
chose it on its own validation split.

Example:
    >>> ens = load_ensemble(["runs/cv/fold0_seed0/model", "runs/cv/fold1_seed0/model"])  # doctest: +SKIP
    >>> predictor = make_predictor(ens)  # doctest: +SKIP
    >>> predictor.predict_path("scan.nii.gz").mask.shape  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medimg.errors import ConfigError
from medimg.inference.model_io import TrainedModel, load_trained
from medimg.inference.postprocess import Postprocessing, common_postprocessing
from medimg.inference.predictor import Predictor
from medimg.tasks import get_task

REPEATS_TABLE = "repeats.csv"
FOLDS_PARAM = "repeats.folds"


@dataclass
class Ensemble:
    """The loaded members (one member: a single model, used exactly as before)."""

    members: list[TrainedModel]
    parent_run_id: str | None = None  # the --folds parent run, when known

    @property
    def workflow(self) -> Any:
        return self.members[0].workflow

    @property
    def weights_sha256(self) -> str:
        """The member's hash, or for several the sha256 of their hashes in order."""
        shas = [m.weights_sha256 for m in self.members]
        return shas[0] if len(shas) == 1 else hashlib.sha256("\n".join(shas).encode()).hexdigest()

    @property
    def postprocessing(self) -> Postprocessing | None:
        if len(self.members) == 1:
            return self.members[0].postprocessing
        return common_postprocessing([m.postprocessing for m in self.members])

    def records(self) -> list[dict[str, Any]]:
        """One row per member: where it came from, its MLflow run, its weights hash, its postprocessing."""
        return [
            {"source": m.source, "run_id": _run_id(m), "weights_sha256": m.weights_sha256,
             "postprocessing": {str(k): v for k, v in (m.postprocessing.steps if m.postprocessing else {}).items()}}
            for m in self.members
        ]  # fmt: skip


def _run_id(tm: TrainedModel) -> str | None:
    """The member's MLflow run: loaded from it, or named by ``run.json`` beside its model folder."""
    import json

    info = Path(tm.source).parent / "run.json"
    if tm.run_id or not info.is_file():
        return tm.run_id
    try:
        return str(json.loads(info.read_text(encoding="utf-8"))["run_id"])
    except (ValueError, KeyError, TypeError):
        return None


class EnsemblePredictor(Predictor):
    """A :class:`Predictor` whose probabilities are the mean of its members' probabilities."""

    def __init__(
        self, members: Sequence[TrainedModel], device: str | torch.device | None = None,
        postprocessing: Postprocessing | None = None,
    ) -> None:  # fmt: skip
        super().__init__(members[0].model, members[0].workflow, device, postprocessing)
        self.members = [Predictor(m.model, m.workflow, self.device) for m in members]

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, source_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The mean over members of :meth:`Predictor.probabilities` (each with its TTA)."""
        total = None
        for member in self.members:
            p = member.probabilities(x, source_shape)
            total = p if total is None else total + p
        assert total is not None
        self.plan = self.members[-1].plan
        return total / len(self.members)


def make_predictor(ens: Ensemble, device: str | torch.device | None = None) -> Predictor:
    """The predictor of an ensemble: a plain :class:`Predictor` for one member."""
    if len(ens.members) == 1:
        m = ens.members[0]
        return Predictor(m.model, m.workflow, device, postprocessing=m.postprocessing)
    return EnsemblePredictor(ens.members, device, ens.postprocessing)


def _folds_folder(folder: Path) -> list[str]:
    """The model folders of a ``--folds``/``--seeds`` output folder, in ``repeats.csv`` order."""
    from medimg.io.csvsafe import read_csv_unescaped

    table = read_csv_unescaped(str(folder / REPEATS_TABLE))
    refs = []
    for row in table.itertuples(index=False):
        fold = getattr(row, "fold", None)
        has_fold = fold is not None and not (isinstance(fold, float) and math.isnan(fold))
        tag = (f"fold{int(float(fold))}_" if has_fold else "") + f"seed{int(row.seed)}"
        model = folder / tag / "model"
        if not (model / "workflow.yaml").is_file():
            raise ConfigError(
                f"{folder / REPEATS_TABLE}: member {tag} has no model folder at {model} "
                "(expected workflow.yaml + model.safetensors there)"
            )
        refs.append(str(model))
    if not refs:
        raise ConfigError(f"{folder / REPEATS_TABLE}: lists no member run")
    return refs


def _children(run_id: str, tracking_uri: str | None) -> list[str] | None:
    """``runs:/<child>`` of a ``--folds`` parent run (finished ones), or None for any other run."""
    import mlflow

    from medimg.errors import WeightsError

    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise WeightsError(f"MLflow run {run_id}: cannot read the run ({exc})") from None
    if FOLDS_PARAM not in run.data.params:
        return None
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    unfinished = [f"{c.info.run_id} ({c.info.status})" for c in children if c.info.status != "FINISHED"]
    if unfinished or not children:
        raise ConfigError(
            f"MLflow run {run_id}: a --folds/--seeds parent whose child runs are not all FINISHED "
            f"({', '.join(unfinished) or 'it has none'}); name the members to use with --model"
        )
    # in the order they ran, which is repeats.csv's (a run name would put fold10 before fold2)
    done = sorted(children, key=lambda c: c.info.start_time)
    return [f"runs:/{c.info.run_id}" for c in done]


def expand_members(refs: Sequence[str], tracking_uri: str | None = None) -> tuple[list[str], str | None]:
    """Each model reference, with a ``--folds`` study (folder or parent run) replaced by its members.

    Returns the member references and the parent run id (when one reference was a parent run).
    """
    out: list[str] = []
    parent = None
    for ref in refs:
        p = Path(ref)
        if p.is_dir() and (p / REPEATS_TABLE).is_file() and not (p / "workflow.yaml").is_file():
            out += _folds_folder(p)
            continue
        if p.is_dir() and not (p / "workflow.yaml").is_file():
            raise ConfigError(
                f"{ref}: neither a model folder (workflow.yaml + model.safetensors) nor the output "
                f"folder of a --folds study ({REPEATS_TABLE})"
            )
        run_id = ref[len("runs:/") :].strip("/").split("/")[0] if ref.startswith("runs:/") else ref
        if not p.exists() and len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id):
            from medimg.telemetry import telemetry_off_by_default

            telemetry_off_by_default()
            children = _children(run_id, tracking_uri)
            if children is not None:
                out += children
                parent = run_id
                continue
        out.append(ref)
    return out, parent


def check_compatible(members: Sequence[TrainedModel]) -> None:
    """Refuse members that would not average: another task, labels, classes, channels or preprocessing."""
    first = members[0].workflow
    for m in members[1:]:
        wf = m.workflow
        for key, a, b in (
            ("task", first.task, wf.task),
            ("data.labels", first.data.labels, wf.data.labels),
            ("data.num_classes", first.data.num_classes, wf.data.num_classes),
            ("data.channels", first.data.channels, wf.data.channels),
            ("preprocessing", first.preprocessing.model_dump(exclude={"cache"}),
             wf.preprocessing.model_dump(exclude={"cache"})),
        ):  # fmt: skip
            if key == "data.num_classes" and get_task(first.task).dense:  # classes are the labels
                continue
            if a != b:
                raise ConfigError(
                    f"ensemble: {m.source} differs from {members[0].source} in {key} ({b!r} vs {a!r}); "
                    "members must share the task, labels/classes, channels and preprocessing"
                )


def load_ensemble(refs: Sequence[str], tracking_uri: str | None = None) -> Ensemble:
    """Load every member of ``refs`` (``--folds`` studies expanded) and check they can be averaged.

    Raises:
        ConfigError: No model given, or members that differ in task, labels, channels or preprocessing.
    """
    if not refs:
        raise ConfigError("give at least one model (--model)")
    member_refs, parent = expand_members(refs, tracking_uri)
    members = [load_trained(r, tracking_uri=tracking_uri) for r in member_refs]
    check_compatible(members)
    return Ensemble(members, parent)
