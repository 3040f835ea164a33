"""The task strategies: one registered Task per task, the schema names the same tasks, no branches."""

from __future__ import annotations

from typing import get_args

import pytest

from medimg.config.schema import Workflow
from medimg.errors import ConfigError
from medimg.tasks import Task, get_task, register_task, task_names
from medimg.training.tasks import LIGHTNING_TASKS, ClassificationTask, SegmentationTask, task_class


def test_the_schema_names_exactly_the_registered_tasks():
    assert set(get_args(Workflow.model_fields["task"].annotation)) == set(task_names())


def test_builtin_facts():
    seg, cls = get_task("segmentation"), get_task("classification")
    assert (seg.target, seg.dense, seg.channels) == ("mask", True, "labels")
    assert (cls.target, cls.dense, cls.channels) == ("class", False, "classes")
    assert seg.out_channels({0: "bg", 1: "organ", 2: "kidney"}, num_classes=7) == 3
    assert cls.out_channels({0: "bg"}, num_classes=4) == 4
    assert seg.writers == ("nifti",) and seg.dicom_writers == ("dicom_seg", "dicom_sr")
    assert cls.writers == () and cls.dicom_writers == ("dicom_sr",)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"task 'detect' is not known; known tasks are \['segmentation'"):
        get_task("detect")


def test_a_name_is_registered_once():
    with pytest.raises(ConfigError, match="task 'classification' is already registered"):
        register_task(Task("classification", "again", target="class", dense=False, channels="classes"))
    with pytest.raises(ConfigError, match="expects a medimg.tasks.Task"):
        register_task("segmentation")  # type: ignore[arg-type]


def test_every_task_trains_with_its_lightning_module():
    assert set(LIGHTNING_TASKS) == set(task_names())
    assert task_class("segmentation") is SegmentationTask
    assert task_class("classification") is ClassificationTask
