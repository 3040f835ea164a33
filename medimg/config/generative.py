"""The workflow schema of the generative tasks (``task: anomaly``, ``superres``, ``synthesis``).

A :class:`GenerativeWorkflow` is a study :class:`~medimg.config.schema.Workflow` (every section,
as strict) whose ``task`` is ``anomaly``, ``superres`` or ``synthesis`` and which adds that task's section
(``anomaly:``, ``superres:`` or ``synthesis:``). The shared sections apply as for the other tasks: ``seed``,
``data`` (manifest, split), ``preprocessing``, ``optim.lr``/``optim.batch_size``,
``trainer.max_epochs``, ``tracking`` and ``outputs``. Only pydantic is imported here, so validating
a workflow never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medimg.config.schema import Workflow
from medimg.errors import ConfigError

GENERATIVE_TASKS = ("anomaly", "superres", "synthesis")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AnomalyConfig(_Strict):
    """Unsupervised anomaly detection: an autoencoder trained on the cases marked normal.

    Which cases are normal is the manifest's ``data.label_column``: 0 normal, 1 abnormal
    (``data.num_classes`` 2). Training uses the normal cases of the training split only.

    Example:
        >>> AnomalyConfig().smoothing_mm
        4.0
    """

    lesion_column: str | None = Field(
        "lesion",
        description="manifest column with a lesion mask per abnormal case (voxel AUPRC, peak-in-lesion); "
        "empty cells and a missing column are allowed",
    )
    channels: tuple[int, ...] = Field(
        (16, 32, 64), min_length=1, max_length=6, description="autoencoder channels per level"
    )
    strides: tuple[int, ...] = Field(
        (2, 2, 2), min_length=1, max_length=6, description="autoencoder strides per level"
    )
    smoothing_mm: float = Field(
        4.0,
        ge=0,
        le=50,
        description="Gaussian sigma (mm) of the smoothing of the residual (image - reconstruction), before its magnitude",
    )
    score: Literal["max", "p99", "mean"] = Field(
        "max", description="case score from the anomaly map: maximum, 99th percentile or mean"
    )
    threshold_quantile: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="the case threshold is this quantile of the normal validation cases' scores",
    )

    @model_validator(mode="after")
    def _check(self) -> AnomalyConfig:
        if len(self.channels) != len(self.strides):
            raise ValueError(
                f"anomaly.channels ({len(self.channels)} levels) and anomaly.strides "
                f"({len(self.strides)}) must have the same length"
            )
        return self


class SuperresConfig(_Strict):
    """Through-plane super-resolution learned from the study's own thin-slice scans.

    Example:
        >>> SuperresConfig(factor=4).profile
        'box'
    """

    factor: int = Field(4, ge=2, le=8, description="thin slices per thick slice")
    axis: int = Field(
        2,
        ge=0,
        le=2,
        description="voxel axis (0, 1, 2) along which slices are thick: the acquisition axis of the thick "
        "series to be super-resolved",
    )
    profile: Literal["box", "gaussian"] = Field(
        "box",
        description="slice profile used to simulate thick slices: box (mean of `factor` thin slices) "
        "or gaussian (FWHM = thick slice thickness)",
    )
    features: int = Field(32, ge=4, le=256, description="feature channels of the residual network")
    layers: int = Field(6, ge=2, le=32, description="convolution layers of the residual network")
    patch_size: tuple[int, int, int] = Field(
        (32, 32, 32),
        description="training patch on the thin grid (voxels)",
    )
    patches_per_epoch: int = Field(64, ge=1, le=100000, description="random patches drawn per epoch")


class SynthesisConfig(_Strict):
    """A class-conditional variational autoencoder that samples new cases of a chosen class.

    Trained on every class of the training split (``data.label_column``, ``data.num_classes``);
    each case is preprocessed to ``preprocessing.spatial_size`` (divisible by 4).

    Example:
        >>> SynthesisConfig().latent_dim
        32
    """

    channels: tuple[int, int] = Field(
        (16, 32),
        description="feature channels at 1/2 and 1/4 of the grid (encoder; the decoder mirrors them)",
    )
    latent_dim: int = Field(32, ge=2, le=1024, description="size of the latent vector sampled from N(0, I)")
    beta: float = Field(
        1.0,
        ge=0,
        le=100,
        description="weight of the KL term (per latent unit) against the squared error (per voxel, "
        "scaled by 1/(2 * sigma^2) with sigma 0.1)",
    )
    balance_classes: bool = Field(
        True,
        description="draw training batches with equal weight per class (the rare class is seen as often)",
    )
    flip: bool = Field(
        True,
        description="random flips along each axis while training (turn off when left/right or another "
        "axis must not be mirrored)",
    )
    samples_per_class: int = Field(
        2,
        ge=0,
        le=1000,
        description="example cases sampled per class into outputs.dir/samples after training",
    )


class GenerativeWorkflow(Workflow):
    """A study workflow for ``task: anomaly``, ``superres`` or ``synthesis`` (docs/generative.md).

    Example:
        >>> wf = GenerativeWorkflow(task="superres", data={"manifest": "m.csv"})
        >>> wf.superres.factor, wf.anomaly is None
        (4, True)
    """

    task: Literal["anomaly", "superres", "synthesis"] = Field(..., description="what the network learns")  # type: ignore[assignment]
    anomaly: AnomalyConfig | None = Field(None, description="task: anomaly settings (defaults when absent)")
    superres: SuperresConfig | None = Field(
        None, description="task: superres settings (defaults when absent)"
    )
    synthesis: SynthesisConfig | None = Field(
        None, description="task: synthesis settings (defaults when absent)"
    )

    @model_validator(mode="after")
    def _sections(self) -> GenerativeWorkflow:
        for other in GENERATIVE_TASKS:
            if other != self.task and getattr(self, other) is not None:
                raise ValueError(f"section {other!r} does not apply to task {self.task!r}; remove it")
        defaults = {"anomaly": AnomalyConfig, "superres": SuperresConfig, "synthesis": SynthesisConfig}
        if getattr(self, self.task) is None:
            setattr(self, self.task, defaults[self.task]())
        return self


def load_generative_workflow(
    path: str | os.PathLike[str], overrides: Sequence[str] = ()
) -> GenerativeWorkflow:
    """Read, override and validate a generative workflow file (errors name the file and key path).

    Example:
        >>> wf = load_generative_workflow("workflows/quickstart-anomaly.yaml")  # doctest: +SKIP
    """
    from medimg.config.load import apply_overrides
    from medimg.config.yaml_strict import load_yaml_file

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: workflow file not found (expected a YAML study workflow)")
    raw: Any = load_yaml_file(p, "workflow file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (data, task, anomaly, ...) at the top level")
    raw = apply_overrides(raw, overrides)
    try:
        return GenerativeWorkflow.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = (
                ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-")) or "(top level)"
            )
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            got = err.get("input")
            extra = "" if isinstance(got, dict) or err["type"] == "extra_forbidden" else f" (got {got!r})"
            lines.append(f"{p}: {where}: {what}{extra}")
        raise ConfigError("invalid workflow\n" + "\n".join(lines)) from None
