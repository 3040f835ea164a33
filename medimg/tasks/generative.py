"""The generative tasks: anomaly maps learnt from normal scans, super-resolution learnt from thin slices,
synthetic scans of a class from a conditional generator.

Their study runs through the generative package (its schema ``medimg.config.generative``;
docs/generative.md).
"""

from __future__ import annotations

from medimg.tasks.base import Task


def _generative(name: str, description: str, target: str, cohort: str) -> Task:
    """A generative task: it answers images (a dense output), its study, checkpoints and reproduction
    are the generative package's; only its cohort runner differs."""
    return Task(
        name=name,
        description=description,
        target=target,
        dense=True,
        channels="image",
        study="medimg.generative.run:run_generative_workflow",
        run_flags=("resume", "check"),  # a checkpoint after every epoch (medimg.generative.checkpoint)
        cohort=cohort,
        reproduce="medimg.generative.reproduce:reproduce_generative",
    )


ANOMALY = _generative(
    "anomaly",
    "an anomaly map and score per scan, learnt from scans marked normal (class 0)",
    "class",  # the manifest's class: 0 normal (trained on), 1 abnormal (scored)
    "medimg.generative.cohort:predict_generative",  # an autoencoder: a map per voxel, on the source grid
)

SUPERRES = _generative(
    "superres",
    "thin slices from a thick-slice series, learnt from the study's own thin-slice scans",
    "image",  # the thin scan itself, its thick version simulated
    "medimg.generative.cohort:predict_generative",
)

SYNTHESIS = _generative(
    "synthesis",
    "synthetic scans of a chosen class, from a generator learnt on the training split",
    "class",  # the class each training scan belongs to (the generator is conditioned on it)
    "medimg.generative.generate_cohort:predict_synthesis",  # --class-index C --count N: its cases
)
