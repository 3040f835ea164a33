"""The generative tasks: anomaly maps learnt from normal scans, super-resolution learnt from thin slices,
synthetic scans of a class from a conditional generator.

Their study runs through the generative package (its schema ``medimg.config.generative``;
docs/generative.md).
"""

from __future__ import annotations

from medimg.tasks.base import Task

ANOMALY = Task(
    name="anomaly",
    description="an anomaly map and score per scan, learnt from scans marked normal (class 0)",
    target="class",  # the manifest's class: 0 normal (trained on), 1 abnormal (scored)
    dense=True,  # a map per voxel, on the source grid
    channels="image",  # an autoencoder: it answers the image it was given
    study="medimg.generative.run:run_generative_workflow",
    run_flags=("resume", "check"),  # a checkpoint after every epoch (medimg.generative.checkpoint)
    cohort="medimg.generative.cohort:predict_generative",
    reproduce="medimg.generative.reproduce:reproduce_generative",
)

SUPERRES = Task(
    name="superres",
    description="thin slices from a thick-slice series, learnt from the study's own thin-slice scans",
    target="image",  # the thin scan itself, its thick version simulated
    dense=True,
    channels="image",
    study="medimg.generative.run:run_generative_workflow",
    run_flags=("resume", "check"),  # a checkpoint after every epoch (medimg.generative.checkpoint)
    cohort="medimg.generative.cohort:predict_generative",
    reproduce="medimg.generative.reproduce:reproduce_generative",
)

SYNTHESIS = Task(
    name="synthesis",
    description="synthetic scans of a chosen class, from a generator learnt on the training split",
    target="class",  # the class each training scan belongs to (the generator is conditioned on it)
    dense=True,
    channels="image",  # it answers images
    study="medimg.generative.run:run_generative_workflow",
    run_flags=("resume", "check"),  # a checkpoint after every epoch (medimg.generative.checkpoint)
    cohort="medimg.generative.generate_cohort:predict_synthesis",  # --class-index C --count N: its cases
    reproduce="medimg.generative.reproduce:reproduce_generative",
)
