"""``medimg schema``: print the workflow schema (JSON Schema or a Markdown key reference)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "schema",
        help="print the workflow schema (every key, type, default)",
        description="Print the study workflow schema as JSON Schema or as the Markdown "
        "reference used in docs/workflow.md.",
    )
    p.add_argument("--format", choices=("markdown", "json"), default="markdown", help="output format")
    return p


def execute(args: argparse.Namespace) -> int:
    import json

    from medimg.config.reference import markdown_reference
    from medimg.config.schema import Workflow

    if args.format == "json":
        print(json.dumps(Workflow.model_json_schema(), indent=2))
    else:
        print(markdown_reference())
    return 0
