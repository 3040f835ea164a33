"""The task strategy: what one task (segmentation, classification, ...) does differently, as facts.

A :class:`Task` is the one place a task's differences are declared. The layers read its facts
instead of comparing task names: ``medimg.data`` (the manifest's target, the transforms, the
planner), ``medimg.models`` (the head's output channels), ``medimg.evaluation`` (which metrics a
case and a cohort get), ``medimg.inference`` (the answer and the files written per case),
``medimg.training`` (the Lightning module registered under the task's name) and ``medimg.explain``
(the default methods and targets). This package sits low in the stack (it imports only
``medimg.errors``), so every layer can read it; see docs/extending.md ("A task").

Two kinds of task share the registry. A task whose target is a mask or a class trains through the
common study stages (``medimg.training``: prepare, plan, track, build, fit, export, score,
register) with a Lightning module registered under its name. A task whose target is of another
kind (boxes, an image) brings its own study and cohort runner, named by ``study`` and ``cohort``
as ``"package.module:function"`` (as Python entry points name them, imported when the task is
run, so this package still imports nothing above it); ``medimg run`` and ``medimg predict``
dispatch to them through the registry, not by comparing names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from medimg.errors import ConfigError

Target = Literal["mask", "class", "boxes", "image"]
Channels = Literal["labels", "classes", "image"]
RunFlag = Literal["check", "folds", "seeds", "resume"]
ALL_RUN_FLAGS: tuple[RunFlag, ...] = ("check", "folds", "seeds", "resume")


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
            ``"boxes"``: lesion boxes (a box file, or the components of a label image).
            ``"image"``: the image itself (learnt from the scans alone, e.g. thin slices from
            simulated thick ones).
        dense: The network answers per voxel: training samples patches
            (``augmentation.patch_size``), the image keeps its size (``preprocessing.spatial_size``
            is not applied), validation and prediction run a sliding window, and the answer is a
            label mask put back on the source grid. ``False``: one answer per image, the class
            probabilities.
        channels: Where the head's output channels come from: ``"labels"`` (one per
            ``data.labels`` value, background included; the values must be 0, 1, 2, ... with no
            gap), ``"classes"`` (``data.num_classes``) or ``"image"`` (the image's own channels:
            the network answers an image).
        writers: The files ``medimg predict`` writes per case, by writer name (``"nifti"``: the
            mask; names from ``medimg.inference.writers.WRITERS``).
        dicom_writers: The DICOM objects written per case when DICOM output is on
            (``"dicom_seg"``, ``"dicom_sr"``), in order.
        explain_methods: The saliency methods ``medimg explain`` runs when none is asked for.
        reference_is_label: ``medimg explain`` compares each map with the manifest's label
            column (the class) by default; otherwise with a mask column the user names.
        study: The task's own study runner, ``"package.module:function"``, called as
            ``function(workflow_path, overrides, **flags) -> (document, lines, exit_code)`` with
            its own strict schema; ``None``: the common study stages (``medimg.training``).
        run_flags: The ``medimg run`` flags the task's study takes (``check``, ``folds``,
            ``seeds``, ``resume``); a study of its own gets the ones it lists as keyword
            arguments, the others are refused with the task's name.
        cohort: The task's own cohort runner for ``medimg predict`` with one of its model
            folders, ``"package.module:function"``, called as ``function(request) -> (document,
            lines, exit_code)`` with the command's ``medimg.inference.request.PredictRequest``
            (it refuses by name the options it does not take); ``None``: the common cohort
            inference (masks or class probabilities).
        evaluate: The task's own evaluation for ``medimg evaluate`` with one of its model
            folders, ``"package.module:function"``, called as ``function(model, **options) ->
            (document, lines, exit_code)`` with ``medimg evaluate``'s options (``manifest``,
            ``split``, ``by``, ``compare``, ``out``, ``tracking_uri``, ``n_boot``, ``log``);
            ``None``: the common evaluation (``medimg.inference.evaluate_model``).
        reproduce: The task's own ``medimg reproduce RUN_ID`` for one of its runs (found by the
            run's ``medimg.task`` tag), ``"package.module:function"``, called as
            ``function(run_id, tracking_uri, out_dir) -> medimg.training.reproduce.Reproduction``;
            ``None``: the common one for a task trained by the common stages, refused for a task
            with a study of its own.

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
    study: str | None = None
    run_flags: tuple[RunFlag, ...] = ALL_RUN_FLAGS
    cohort: str | None = None
    evaluate: str | None = None
    reproduce: str | None = None

    def __post_init__(self) -> None:
        for field_name in ("study", "cohort", "evaluate", "reproduce"):
            entry = getattr(self, field_name)
            if entry is not None and (entry.count(":") != 1 or not all(entry.split(":"))):
                raise ConfigError(
                    f"Task {self.name!r}: {field_name} {entry!r} is not 'package.module:function'"
                )
        if self.target not in ("mask", "class") and self.study is None:
            raise ConfigError(
                f"Task {self.name!r}: a {self.target!r} target has no common study stages; name the "
                "task's own study runner (study='package.module:function')"
            )
        unknown = sorted(set(self.run_flags) - set(ALL_RUN_FLAGS))
        if unknown:
            raise ConfigError(
                f"Task {self.name!r}: run_flags {unknown} unknown; known: {list(ALL_RUN_FLAGS)}"
            )

    def take_run_flags(self, source: str, flags: Mapping[str, Any]) -> dict[str, Any]:
        """The ``medimg run`` flags the task's study takes; one it does not take, when given, is
        refused with the workflow's name.

        Example:
            >>> from medimg.tasks import get_task
            >>> get_task("detection").take_run_flags("wf.yaml", {"check": True, "resume": False})
            Traceback (most recent call last):
            ...
            medimg.errors.ConfigError: wf.yaml: a detection workflow does not take --check yet
        """
        refused = [f"--{k}" for k, v in flags.items() if v and k not in self.run_flags]
        if refused:
            article = "an" if self.name[0] in "aeiou" else "a"
            raise ConfigError(
                f"{source}: {article} {self.name} workflow does not take {', '.join(refused)} yet"
            )
        return {k: v for k, v in flags.items() if k in self.run_flags}

    def out_channels(self, labels: Mapping[Any, Any], num_classes: int, image_channels: int = 1) -> int:
        """The head's output channels for a workflow's ``data.labels`` and ``data.num_classes``
        (``image_channels`` for a task that answers an image).

        Example:
            >>> from medimg.tasks import get_task
            >>> get_task("segmentation").out_channels({0: "background", 1: "liver"}, 2)
            2
        """
        if self.channels == "image":
            return int(image_channels)
        return len(labels) if self.channels == "labels" else int(num_classes)
