"""The tasks a workflow may name (``task:``): the built-in ones and any registered by a plug-in.

Example:
    >>> from medimg.tasks import get_task, task_names
    >>> task_names()
    ['segmentation', 'classification']
    >>> get_task("segmentation").dense
    True
"""

from __future__ import annotations

from medimg.errors import ConfigError
from medimg.tasks.base import Task
from medimg.tasks.classification import CLASSIFICATION
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


for _builtin in (SEGMENTATION, CLASSIFICATION):
    register_task(_builtin)
