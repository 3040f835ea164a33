"""A trained detector is a folder: ``plan.json`` + ``model.safetensors`` + ``workflow.yaml`` + ``model.json``.

``model.json`` records the sha256 of the three other files; :func:`load_detector` checks them
before building the network, and reads the weights with safetensors (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medimg.config.detection import DetectionWorkflow
from medimg.config.load import workflow_to_yaml
from medimg.detection.network import build_detector
from medimg.detection.plan import DetectionPlan
from medimg.errors import WeightsError
from medimg.io.atomic import atomic_write, atomic_write_text
from medimg.models.download import sha256_of

FILES = ("plan.json", "model.safetensors", "workflow.yaml")


def save_detector(detector: Any, plan: DetectionPlan, wf: DetectionWorkflow, out_dir: str | Path) -> Path:
    """Write the model folder (every file atomically) and return it.

    Example:
        >>> save_detector(detector, plan, wf, "runs/det/model")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "plan.json", json.dumps(plan.to_dict(), indent=2))
    atomic_write_text(out / "workflow.yaml", workflow_to_yaml(wf))
    state = {k: v.detach().cpu().contiguous() for k, v in detector.network.state_dict().items()}
    with atomic_write(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    record = {"task": "detection", "sha256": {name: sha256_of(out / name) for name in FILES}}
    atomic_write_text(out / "model.json", json.dumps(record, indent=2))
    return out


def load_detector(model_dir: str | Path) -> tuple[Any, DetectionPlan, str]:
    """The detector (eval mode), its plan and its weights sha256, after checking every file's sha256.

    Raises:
        WeightsError: a file is missing or differs from its recorded sha256 (names the file).
    """
    from safetensors.torch import load_file

    folder = Path(model_dir)
    record_path = folder / "model.json"
    if not record_path.is_file():
        raise WeightsError(f"{folder}: not a detection model folder (no model.json)")
    record = json.loads(record_path.read_text())
    if record.get("task") != "detection":
        raise WeightsError(f"{record_path}: task is {record.get('task')!r}, expected 'detection'")
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"{path}: missing from the model folder")
        if sha256_of(path) != record["sha256"].get(name):
            raise WeightsError(f"{path}: sha256 differs from the one recorded in {record_path}")
    plan = DetectionPlan.from_dict(json.loads((folder / "plan.json").read_text()))
    detector = build_detector(plan)
    detector.network.load_state_dict(load_file(str(folder / "model.safetensors")))
    detector.eval()
    return detector, plan, str(record["sha256"]["model.safetensors"])
