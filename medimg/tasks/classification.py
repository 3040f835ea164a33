"""Classification: one class per image, learnt from integer classes in the manifest."""

from __future__ import annotations

from medimg.tasks.base import Task

CLASSIFICATION = Task(
    name="classification",
    description="one class per image (finding present or not, grade, ...)",
    dense=False,  # one answer per image: resized to preprocessing.spatial_size, no sliding window
    target="class",
    channels="classes",
    explain_methods=("gradcam",),
    reference_is_label=True,  # writers: none; dicom_writers: the SR (the defaults)
)
