"""Load a workflow YAML, apply ``--set key.path=value`` overrides, validate, hash.

Errors name the file, the key path and what is allowed::

    workflows/x.yaml: optim.lrr: unknown key; allowed keys here: batch_size, loss, lr, ...
"""

from __future__ import annotations

import hashlib
import json
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medimg.config.schema import Workflow
from medimg.config.trust import check_workflow_trust
from medimg.config.yaml_strict import load_yaml_file, load_yaml_text
from medimg.errors import ConfigError


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: workflow file not found (expected a YAML study workflow)")
    raw = load_yaml_file(path, "workflow file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, task, model, ...) at the top level")
    return raw


def workflow_task_name(path: str | os.PathLike[str]) -> str | None:
    """The ``task:`` a workflow file names, read before any schema (``None`` when the file cannot
    be read as a mapping: the schema's reader then says why).

    ``medimg run`` reads it to find the task's strategy (``medimg.tasks``): a task with a study of
    its own has its own schema.

    Example:
        >>> workflow_task_name("workflows/quickstart-detection.yaml")  # doctest: +SKIP
        'detection'
    """
    try:
        raw = _read_yaml(Path(path))
    except ConfigError:
        return None
    task = raw.get("task")
    return task if isinstance(task, str) else None


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested dict.

    Example:
        >>> apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr=0.01", "trainer.max_epochs=3"])
        {'optim': {'lr': 0.01}, 'trainer': {'max_epochs': 3}}
    """
    out = json.loads(json.dumps(raw, default=str))  # deep copy of plain data (dates become text)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source} {item!r}: expected KEY.PATH=VALUE, e.g. optim.lr=0.001")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"{source} {item!r}: empty key path")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source} {item!r}: {p} is a value, not a section")
            node = nxt
        node[parts[-1]] = load_yaml_text(value, f"{source} {item!r}: value")
    return out


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """Follow a pydantic error location through the schema to the section model it points into."""
    model: type[BaseModel] | None = Workflow
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return model
        ann = model.model_fields[part].annotation
        nxt = None
        for cand in (ann, *typing.get_args(ann)):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                nxt = cand
        model = nxt
    return model


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = ", ".join(sorted(parent.model_fields)) if parent else "?"
            lines.append(f"{source}: {path}: unknown key; allowed keys here: {allowed}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {path}: required key is missing")
        else:
            got = err.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{source}: {path}: {err['msg']}{got_s}")
    return "\n".join(lines)


def parse_workflow(raw: dict[str, Any], source: str = "<workflow>") -> Workflow:
    """Validate a plain dict against the schema, raising :class:`ConfigError` with key paths."""
    try:
        return Workflow.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("invalid workflow\n" + _format_errors(exc, source)) from None


def load_workflow(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Workflow:
    """Read, override and validate a workflow file (YAML read strictly, ``allow_pickle`` gated).

    Raises:
        ConfigError: Unreadable or invalid workflow, duplicate key, alias bomb, or
            ``model.pretrained.allow_pickle`` without the user's run-time permission.

    Example:
        >>> wf = load_workflow("workflows/quickstart_seg.yaml", ["trainer.max_epochs=2"])  # doctest: +SKIP
        >>> wf.trainer.max_epochs  # doctest: +SKIP
        2
    """
    p = Path(path)
    raw = apply_overrides(_read_yaml(p), overrides)
    wf = parse_workflow(raw, source=str(p))
    check_workflow_trust(wf, str(p))
    return wf


def workflow_to_dict(wf: Workflow) -> dict[str, Any]:
    """The fully resolved workflow as plain JSON-compatible data (defaults filled in)."""
    return json.loads(wf.model_dump_json())


def workflow_to_yaml(wf: Workflow) -> str:
    """The fully resolved workflow as YAML text (what is saved with every run)."""
    return yaml.safe_dump(workflow_to_dict(wf), sort_keys=False)


def config_hash(wf: Workflow) -> str:
    """sha256 of the canonical JSON of the resolved workflow (key order independent)."""
    canon = json.dumps(workflow_to_dict(wf), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()
