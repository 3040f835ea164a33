"""``medimg schema``: print the workflow schema (JSON Schema or a Markdown key reference)."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit, to_json


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "schema",
        help="print the workflow schema (every key, type, default)",
        description="Print the study workflow schema as JSON Schema or as the Markdown "
        "reference used in docs/workflow.md. --json is the same as --format json.",
    )
    p.add_argument("--format", choices=("markdown", "json"), default="markdown", help="output format")
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    from medimg.config.reference import markdown_reference
    from medimg.config.schema import Workflow

    schema = Workflow.model_json_schema()
    emit(args, schema, [to_json(schema) if args.format == "json" else markdown_reference()])
    return 0
