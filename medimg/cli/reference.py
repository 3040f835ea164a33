"""Generate docs/cli.md from the argument parsers themselves, so the reference never drifts."""

from __future__ import annotations

import os


def cli_reference() -> str:
    """Markdown: ``medimg --help`` and every subcommand's ``--help``.

    Example:
        >>> "## medimg run" in cli_reference()
        True
    """
    from medimg.cli.main import build_parser

    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    parts = [
        "# Command-line reference",
        "",
        "Generated from the parsers (`make docs`); every option below is exactly what `--help` prints.",
        "",
        "## medimg",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():  # type: ignore[attr-defined]
        parts += [f"## medimg {name}", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(cli_reference())
