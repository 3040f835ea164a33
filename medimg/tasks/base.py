"""The task strategy: what one task (segmentation, classification, ...) does differently, as facts.

A :class:`Task` is the one place a task's differences are declared. The layers read its facts
instead of comparing task names: ``medimg.data`` (the manifest's target, the transforms, the
planner), ``medimg.models`` (the head's output channels), ``medimg.evaluation`` (which metrics a
case and a cohort get), ``medimg.inference`` (the answer and the files written per case),
``medimg.training`` (the Lightning module registered under the task's name) and ``medimg.explain``
(the default methods and targets). This package sits low in the stack (it imports only
``medimg.errors``), so every layer can read it; see docs/extending.md ("A task").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Target = Literal["mask", "class"]
Channels = Literal["labels", "classes"]


@dataclass(frozen=True)
class Task:
    """One task's differences from the others, read by every layer.

    Attributes:
        name: As a workflow writes it (``task: segmentation``).
        description: One line for the docs.
        target: What a manifest row's target holds. ``"mask"``: a label image on the image's
            grid (its path is resolved like the image's, the file must exist and lie on the
            image's grid; cases are scored by overlap: Dice, HD95). ``"class"``: an integer class
            in ``0..data.num_classes-1`` (scored by discrimination: AUROC, accuracy).
        dense: The network answers per voxel: training samples patches
            (``augmentation.patch_size``), the image keeps its size (``preprocessing.spatial_size``
            is not applied), validation and prediction run a sliding window, and the answer is a
            label mask put back on the source grid. ``False``: one answer per image, the class
            probabilities.
        channels: Where the head's output channels come from: ``"labels"`` (one per
            ``data.labels`` value, background included; the values must be 0, 1, 2, ... with no
            gap) or ``"classes"`` (``data.num_classes``).
        writers: The files ``medimg predict`` writes per case, by writer name (``"nifti"``: the
            mask; names from ``medimg.inference.writers.WRITERS``).
        dicom_writers: The DICOM objects written per case when DICOM output is on
            (``"dicom_seg"``, ``"dicom_sr"``), in order.
        explain_methods: The saliency methods ``medimg explain`` runs when none is asked for.
        reference_is_label: ``medimg explain`` compares each map with the manifest's label
            column (the class) by default; otherwise with a mask column the user names.

    Example:
        >>> t = Task("regression-demo", "a number per image", target="class", dense=False,
        ...          channels="classes")
        >>> t.out_channels({0: "background"}, num_classes=1)
        1
    """

    name: str
    description: str
    target: Target
    dense: bool
    channels: Channels
    writers: tuple[str, ...] = ()
    dicom_writers: tuple[str, ...] = ("dicom_sr",)
    explain_methods: tuple[str, ...] = ()
    reference_is_label: bool = False

    def out_channels(self, labels: Mapping[Any, Any], num_classes: int) -> int:
        """The head's output channels for a workflow's ``data.labels`` and ``data.num_classes``.

        Example:
            >>> from medimg.tasks import get_task
            >>> get_task("segmentation").out_channels({0: "background", 1: "liver"}, 2)
            2
        """
        return len(labels) if self.channels == "labels" else int(num_classes)
