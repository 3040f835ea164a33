"""Classification: one class per image, learnt from integer classes in the manifest."""

from __future__ import annotations

from medimg.tasks.base import Task

CLASSIFICATION = Task(
    name="classification",
    description="one class per image (finding present or not, grade, ...)",
    target="class",
    dense=False,
    channels="classes",
    writers=(),
    dicom_writers=("dicom_sr",),
    explain_methods=("gradcam",),
    reference_is_label=True,
)
