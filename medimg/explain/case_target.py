"""What a case's maps explain: the model's prediction for the case and the target derived from it.

Classification: the predicted (or requested) class. Segmentation: the label, in the structure
segmented over the sliding windows prediction uses (:mod:`medimg.explain.windows`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medimg.config.schema import Workflow
from medimg.explain.caseprep import PreparedCase
from medimg.explain.targets import (
    ScoreFn,
    class_probabilities,
    class_probability_score,
    predicted_class,
    region_probability_score,
)
from medimg.explain.windows import WindowedNetwork, WindowPlan, window_plan


@dataclass
class CaseTarget:
    """What one case's maps explain, and the network the sanity checks probe (stitched for segmentation).

    Attributes:
        prediction: shown in the report (class and probability, or volumes in mL).
        kwargs: the target as method parameters (``target_class`` or ``label``).
        score_fn: the score the deletion/insertion curves follow.
        probe: the network those curves run (segmentation: stitched over the windows).
        plan: the windows of a segmentation case (``None`` for classification).
    """

    prediction: dict[str, Any]
    kwargs: dict[str, Any]
    score_fn: ScoreFn
    probe: torch.nn.Module
    plan: WindowPlan | None = None


def classification_target(
    prepared: PreparedCase, model: torch.nn.Module, target_class: int | None, row: dict[str, Any]
) -> CaseTarget:
    """Predict the class of a case (noting it in ``row``); explain ``target_class`` or the predicted one."""
    x = prepared.tensor
    cls, prob = predicted_class(model, x)
    target = cls if target_class is None else int(target_class)
    row.update(prediction=cls, confidence=prob)
    if prepared.reference is not None:
        with torch.no_grad():
            p_ref = float(class_probabilities(model(x))[0, int(prepared.reference)])
        row["error"] = 1.0 - p_ref
    prediction = {"predicted class": cls, "probability": prob}
    return CaseTarget(prediction, {"target_class": target}, class_probability_score(target), model)


def segmentation_target(
    prepared: PreparedCase, model: torch.nn.Module, workflow: Workflow | None, label: int, row: dict[str, Any]
) -> CaseTarget:
    """Segment a case over prediction's windows (volumes noted in ``row``); explain ``label``.

    Without a lesion/organ mask, the case's structure becomes the predicted ``label``.
    """
    x = prepared.tensor
    device = next(model.parameters()).device.type
    plan = window_plan(workflow, model, tuple(x.shape[2:]), device, prepared.source_shape)
    stitched = WindowedNetwork(model, plan)
    seg = stitched(x).argmax(dim=1)[0].cpu().numpy()
    voxel_ml = abs(float(np.linalg.det(prepared.affine[:3, :3]))) / 1000.0
    volumes = {str(int(v)): round(float((seg == v).sum()) * voxel_ml, 3) for v in np.unique(seg) if v != 0}
    row.update(prediction=json.dumps(volumes), volumes_ml=volumes)
    if prepared.structure is None:
        prepared.structure = seg == label
    prediction = {"segmented volume (mL)": volumes or {"none": 0.0}}
    return CaseTarget(prediction, {"label": label}, region_probability_score(label, None), stitched, plan)
