"""Tasks as strategies: one :class:`Task` per task, registered by name (docs/extending.md)."""

from medimg.tasks.base import Task
from medimg.tasks.registry import get_task, register_task, task_entry, task_names

__all__ = ["Task", "get_task", "register_task", "task_entry", "task_names"]
