"""The task strategies: one registered Task per task, the schema names the same tasks, no branches."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import get_args

import pytest

from medimg.config.schema import Workflow
from medimg.errors import ConfigError
from medimg.tasks import Task, get_task, register_task, task_names
from medimg.training.tasks import LIGHTNING_TASKS, ClassificationTask, SegmentationTask, task_class

ROOT = Path(__file__).resolve().parents[2]


def test_every_task_a_workflow_names_is_registered():
    named = set(get_args(Workflow.model_fields["task"].annotation))
    assert {"segmentation", "classification"} <= named <= set(task_names())


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
    named = set(get_args(Workflow.model_fields["task"].annotation))  # what run_workflow trains
    assert named <= set(LIGHTNING_TASKS) <= set(task_names())
    assert task_class("segmentation") is SegmentationTask
    assert task_class("classification") is ClassificationTask


def test_no_task_name_comparison_outside_the_strategies_and_the_schema():
    out = subprocess.run(
        ["grep", "-rn", "--include=*.py", r"task ==\|task !=", "medimg"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    allowed = re.compile(r"^medimg/(tasks|config)/")
    found = [line for line in out.splitlines() if not allowed.match(line)]
    assert not found, (
        "read a task's facts (medimg.tasks.get_task) instead of comparing its name:\n" + "\n".join(found)
    )
