"""Generate the workflow key reference (docs/workflow.md) from the schema itself."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from medimg.config.schema import Workflow


def _type_name(ann: object) -> str:
    text = str(ann).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("medimg.config.schema.", "")


def _section_model(ann: object) -> type[BaseModel] | None:
    for cand in (ann, *typing.get_args(ann)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def reference_document() -> str:
    """The whole docs/workflow-reference.md page."""
    head = (
        "# Workflow key reference\n\nGenerated from the schema (`make docs`); every key a workflow "
        "may hold, its type, default and meaning. Unknown keys are errors.\n\n"
    )
    return head + markdown_reference()


def markdown_reference(model: type[BaseModel] = Workflow, prefix: str = "") -> str:
    """Markdown tables, one per section: key, type, default, description.

    Example:
        >>> "optim.lr" in markdown_reference()
        True
    """
    rows, subs = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _section_model(field.annotation)
        if sub is not None:
            subs.append((key, sub))
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | `{_type_name(field.annotation)}` | `{default}` | {desc} |")
    title = prefix.rstrip(".") or "top level"
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    out = [
        f"### `{title}`",
        "",
        doc,
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    text = "\n".join(out) if rows else ""
    for key, sub in subs:
        text += "\n" + markdown_reference(sub, key + ".")
    return text


if __name__ == "__main__":  # pragma: no cover
    print(reference_document())
