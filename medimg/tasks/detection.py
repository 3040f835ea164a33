"""Detection: lesion boxes, learnt from box files or the components of label images.

The study and the cohort runner are the detection package's own (its schema
``medimg.config.detection``, a RetinaNet, FROC and AP scoring; docs/detection.md).
"""

from __future__ import annotations

from medimg.tasks.base import Task

DETECTION = Task(
    name="detection",
    description="lesion boxes (centre and size in mm, a score), learnt from boxes or label components",
    target="boxes",
    dense=True,  # a sliding window over the whole scan; the answer is boxes on the source grid
    channels="classes",
    study="medimg.detection.study:run_detection_workflow",
    run_flags=("resume",),  # an epoch checkpoint in outputs.dir (medimg.detection.study)
    cohort="medimg.detection.predict_files:predict_detection_files",
    evaluate="medimg.detection.evaluate_files:evaluate_detection",
)
