"""The task strategies: one registered Task per task, the schema names the same tasks, no branches."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import get_args

import pytest

from medimg.config.schema import Workflow
from medimg.errors import ConfigError
from medimg.tasks import Task, get_task, register_task, task_entry, task_names
from medimg.training.tasks import LIGHTNING_TASKS, ClassificationTask, SegmentationTask, task_class

ROOT = Path(__file__).resolve().parents[2]


def _schema_tasks() -> set[str]:
    """Every task a workflow schema names: the common one and the schemas of tasks with their own study."""
    from medimg.config.detection import DetectionWorkflow
    from medimg.config.generative import GenerativeWorkflow

    return {
        name
        for schema in (Workflow, DetectionWorkflow, GenerativeWorkflow)
        for name in get_args(schema.model_fields["task"].annotation)
    }


def test_every_task_a_workflow_names_is_registered():
    named = set(get_args(Workflow.model_fields["task"].annotation))
    assert {"segmentation", "classification"} <= named <= set(task_names())
    assert _schema_tasks() <= set(task_names())
    assert {"detection", "anomaly", "superres"} <= _schema_tasks()


def test_tasks_with_their_own_study_name_runners_the_cli_may_import():
    from test_architecture import ALLOWED

    own = [get_task(n) for n in task_names() if get_task(n).study is not None]
    assert {t.name for t in own} >= {"detection", "anomaly", "superres"}
    common = set(get_args(Workflow.model_fields["task"].annotation))
    assert not common & {t.name for t in own}  # the common stages train the others, one way each
    for task in own:
        for which in ("study", "cohort"):
            if getattr(task, which) is None:
                continue
            function = task_entry(task, which)
            assert callable(function) and getattr(task, which).endswith(":" + function.__name__)
            package = getattr(task, which).split(".")[1]  # medimg.<package>.module:function
            assert package in ALLOWED["cli"], (task.name, which)  # called by medimg run / predict only


def test_a_task_states_its_runners_rightly():
    with pytest.raises(ConfigError, match="a 'boxes' target has no common study stages"):
        Task("boxes-demo", "boxes", target="boxes", dense=True, channels="classes")
    with pytest.raises(ConfigError, match="is not 'package.module:function'"):
        Task("d", "x", target="boxes", dense=True, channels="classes", study="medimg.detection.study")
    with pytest.raises(ConfigError, match=r"run_flags \['fold'\] unknown"):
        Task("d", "x", target="class", dense=False, channels="classes", run_flags=("fold",))  # type: ignore[arg-type]
    missing = Task(
        "d", "x", target="boxes", dense=True, channels="classes", study="medimg.detection.study:nope"
    )
    with pytest.raises(
        ConfigError, match="task 'd': its study runner 'medimg.detection.study:nope' cannot be loaded"
    ):
        task_entry(missing, "study")
    with pytest.raises(ConfigError, match="task 'segmentation' has no cohort runner of its own"):
        task_entry(get_task("segmentation"), "cohort")
    assert get_task("superres").out_channels({}, num_classes=2, image_channels=3) == 3


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
    names = "|".join(task_names())
    pattern = rf'task (==|!=)|(==|!=) *"({names})"|"({names})" *(==|!=)|in \("({names})"'
    out = subprocess.run(
        ["grep", "-rnE", "--include=*.py", pattern, "medimg"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    # the strategies, the schemas, and the package that implements a task's own study (the
    # strategy's implementation: it checks its own records, and tells its own tasks apart)
    allowed = re.compile(r"^medimg/(tasks|config)/")
    own_packages: dict[str, set[str]] = {}
    for n in task_names():
        if get_task(n).study:
            own_packages.setdefault(str(get_task(n).study).split(".")[1], set()).add(n)

    def checks_its_own(line: str) -> bool:
        pkg = line.split("/")[1]
        compared = set(re.findall(rf'"({names})"', line))
        return bool(compared) and compared <= own_packages.get(pkg, set())

    def reads_a_record(line: str) -> bool:  # which task made a run or a model folder: its record says
        return '.get("medimg.task")' in line or '.get("task")' in line

    found = [
        line
        for line in out.splitlines()
        if not allowed.match(line) and not checks_its_own(line) and not reads_a_record(line)
    ]
    assert not found, (
        "read a task's facts (medimg.tasks.get_task) instead of comparing its name:\n" + "\n".join(found)
    )
