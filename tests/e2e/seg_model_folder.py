"""The MLflow model folder a segmentation run logs, as the end-to-end and team-server tests expect it.

The weights, their description, the resolved workflow and the postprocessing chosen on the
validation split (docs/tuning.md).
"""

from __future__ import annotations

SEG_MODEL_ARTIFACTS = frozenset(
    {
        "model/model.json",
        "model/model.safetensors",
        "model/workflow.yaml",
        "model/postprocessing.json",
    }
)
