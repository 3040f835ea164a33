"""The tasks a workflow may name (``task:``): the built-in ones and any registered by a plug-in.

Example:
    >>> from medimg.tasks import get_task, task_names
    >>> task_names()
    ['segmentation', 'classification', 'detection', 'anomaly', 'superres', 'synthesis']
    >>> get_task("segmentation").dense
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

from medimg.errors import ConfigError
from medimg.tasks.base import Task
from medimg.tasks.classification import CLASSIFICATION
from medimg.tasks.detection import DETECTION
from medimg.tasks.generative import ANOMALY, SUPERRES, SYNTHESIS
from medimg.tasks.segmentation import SEGMENTATION

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` under ``task.name``; a name is registered once (a duplicate is refused).

    Raises:
        ConfigError: the name is taken, or the object is not a :class:`Task`.

    Example:
        >>> register_task(get_task("segmentation"))
        Traceback (most recent call last):
        ...
        medimg.errors.ConfigError: task 'segmentation' is already registered; choose another name
    """
    if not isinstance(task, Task):
        raise ConfigError(f"register_task expects a medimg.tasks.Task, got {type(task).__name__}")
    if task.name in _TASKS:
        raise ConfigError(f"task {task.name!r} is already registered; choose another name")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task registered as ``name``.

    Raises:
        ConfigError: no task has that name (the message lists the known ones).

    Example:
        >>> get_task("classification").target
        'class'
    """
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"task {name!r} is not known; known tasks are {task_names()}") from None


def task_names() -> list[str]:
    """The registered task names, built-in ones first.

    Example:
        >>> "classification" in task_names()
        True
    """
    return list(_TASKS)


def task_entry(task: Task, which: Literal["study", "cohort", "evaluate", "reproduce"]) -> Callable[..., Any]:
    """The function a task names as its own ``study``, ``cohort``, ``evaluate`` or ``reproduce`` runner,
    imported now.

    Raises:
        ConfigError: the task has none (it uses the common stages or cohort inference), or the
            module or the function named is not there (a plug-in's mistake).

    Example:
        >>> task_entry(get_task("detection"), "study").__name__
        'run_detection_workflow'
        >>> task_entry(get_task("segmentation"), "study")
        Traceback (most recent call last):
        ...
        medimg.errors.ConfigError: task 'segmentation' has no study runner of its own (it uses the common one)
    """
    entry = getattr(task, which)
    if entry is None:
        raise ConfigError(f"task {task.name!r} has no {which} runner of its own (it uses the common one)")
    module_name, function_name = entry.split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"task {task.name!r}: its {which} runner {entry!r} cannot be loaded ({exc})"
        ) from None
    if not callable(function):
        raise ConfigError(f"task {task.name!r}: its {which} runner {entry!r} is not a function")
    return function


for _builtin in (SEGMENTATION, CLASSIFICATION, DETECTION, ANOMALY, SUPERRES, SYNTHESIS):
    register_task(_builtin)
