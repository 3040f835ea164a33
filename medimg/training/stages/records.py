"""What passes between the stages of a study run (:mod:`medimg.training.stages`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from medimg.config.schema import Workflow
    from medimg.data.planner import Plan


@dataclass
class RunResult:
    """What a finished run produced."""

    run_id: str
    tracking_uri: str
    out_dir: Path
    metrics: dict[str, float]
    per_case: pd.DataFrame
    model_dir: Path
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedData:
    """The checked manifest with its patient-level splits, and where the run writes."""

    out: Path  # outputs.dir, resolved and created
    df: pd.DataFrame  # the manifest, one row a case, with its ``split``
    rank: int  # this process's rank (0 when alone)

    @property
    def last_checkpoint(self) -> Path:
        """Lightning's ``last.ckpt``, written after every epoch, that ``--resume`` continues from."""
        return self.out / "checkpoints" / "last.ckpt"


@dataclass
class StudyPlan:
    """The workflow as it will run (the batch the planner allows), its datasets and loaders."""

    wf: Workflow  # the resolved workflow: its hash records the batch size used
    plan: Plan  # the planner's cache mode and patch batch, and why
    caveats: list[str]  # what determinism could not promise on this machine
    train_ds: Any
    train_dl: Any
    val_dl: Any
    net: Any = None  # the network the planner measured, its initial weights: the build stage trains it


@dataclass
class TrackedRun:
    """The MLflow run of the study: new, or the one ``run.json`` names when resuming."""

    uri: str
    logger: Any  # Lightning's MLFlowLogger
    client: Any  # mlflow.MlflowClient
    run_id: str | None  # None on ranks other than 0
    lineage: Any = None  # the lineage being recorded beside training (track_background.Background), or None


@dataclass
class BuiltModel:
    """The Lightning task with its network (pretrained weights loaded when the workflow names them)."""

    module: Any


@dataclass
class FitResult:
    """The trained task (best weights not yet loaded) and where its best checkpoint is."""

    module: Any
    best: str  # path of the best checkpoint ("" when none)
    rank: int  # the trainer's global rank: only rank 0 exports, scores and registers


@dataclass
class ExportedModel:
    """The model folder (``workflow.yaml`` + ``model.safetensors`` + ``model.json``) logged in the run."""

    net: Any  # the network with the best weights, in the default memory layout
    model_dir: Path
    weights_sha256: str
    postprocessing: Any = None  # medimg.inference.postprocess.Postprocessing chosen on validation


@dataclass
class Scores:
    """The test split scored with the predictor users get (both empty when there is no test split)."""

    per_case: pd.DataFrame
    metrics: dict[str, float]
