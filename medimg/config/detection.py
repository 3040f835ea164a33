"""The detection workflow: the study schema with ``task: detection`` and a ``detection`` section.

A detection workflow is a :class:`~medimg.config.schema.Workflow` (same data, split, optim,
trainer, tracking and outputs sections, same strictness) whose task is ``detection`` and which
says where the boxes come from: a box file (world mm, see ``medimg.detection.boxes``) or a mask
column whose connected components are the lesions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from medimg.config.load import _format_errors, _read_yaml, apply_overrides
from medimg.config.schema import IntTriple, Strict, Triple, Workflow
from medimg.errors import ConfigError


class DetectionConfig(Strict):
    """Where the boxes come from, the detector's grid and how boxes are kept."""

    box_file: str | None = Field(
        None, description="CSV/JSON of boxes (case_key, x, y, z world mm, size_x/y/z or diameter mm)"
    )
    mask_column: str | None = Field(
        None, description="manifest column with a lesion mask; each connected component is a box"
    )
    patch_size: IntTriple | None = Field(
        None, description="training patch and inference window (default: the planned median image)"
    )
    spacing: Triple | None = Field(None, description="detector grid spacing in mm (default: median)")
    score_thresh: float = Field(0.02, ge=0, lt=1, description="boxes below this score are dropped")
    nms_iou: float = Field(0.22, gt=0, le=1, description="IoU above which NMS keeps only the best box")
    max_detections: int = Field(50, ge=1, le=10000, description="boxes kept per scan")
    overlap: float = Field(0.25, ge=0, lt=1, description="sliding-window overlap")
    flip_tta: bool = Field(
        True,
        description="also detect on the 8 flips of each window, at both phases of the anchor grid, and fuse "
        "the boxes (16x inference time)",
    )
    n_boot: int = Field(500, ge=0, le=100000, description="patient bootstrap replicates of the test CIs")

    @model_validator(mode="after")
    def _one_source(self) -> DetectionConfig:
        if (self.box_file is None) == (self.mask_column is None):
            raise ValueError("set exactly one of detection.box_file and detection.mask_column")
        return self


class DetectionWorkflow(Workflow):
    """A study workflow whose task is ``detection``."""

    task: Literal["detection"] = Field(..., description="what the network learns")  # type: ignore[assignment]
    detection: DetectionConfig = Field(..., description="boxes, detector grid and box selection")


def is_detection_workflow(path: str | os.PathLike[str]) -> bool:
    """True when the workflow file says ``task: detection`` (read strictly; False when unreadable)."""
    try:
        return _read_yaml(Path(path)).get("task") == "detection"
    except (ConfigError, AttributeError):
        return False


def parse_detection_workflow(raw: dict[str, Any], source: str = "<workflow>") -> DetectionWorkflow:
    """Validate a plain dict as a detection workflow (errors name the key path)."""
    try:
        return DetectionWorkflow.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("invalid workflow\n" + _detection_errors(exc, source)) from None


def _detection_errors(exc: ValidationError, source: str) -> str:
    """The schema's error lines; an unknown key under ``detection`` lists that section's keys."""
    allowed = ", ".join(sorted(DetectionConfig.model_fields))
    lines = []
    for line in _format_errors(exc, source).splitlines():
        head = f"{source}: detection."
        if line.startswith(head) and ": unknown key;" in line and line[len(head) :].count(".") == 0:
            line = line.split("; allowed keys here:")[0] + f"; allowed keys here: {allowed}"
        lines.append(line)
    return "\n".join(lines)


def load_detection_workflow(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> DetectionWorkflow:
    """Read, override and validate a detection workflow file.

    Example:
        >>> wf = load_detection_workflow("workflows/quickstart-detection.yaml")  # doctest: +SKIP
        >>> wf.detection.box_file  # doctest: +SKIP
        'boxes.csv'
    """
    p = Path(path)
    return parse_detection_workflow(apply_overrides(_read_yaml(p), overrides), source=str(p))
