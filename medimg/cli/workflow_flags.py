"""The flags of the commands that read a study workflow (``run``, ``tune``)."""

from __future__ import annotations

import argparse


def add_set_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--set KEY.PATH=VALUE`` (repeatable) to a command's parser, read into ``args.overrides``.

    Example:
        >>> p = argparse.ArgumentParser(); add_set_flag(p)
        >>> p.parse_args(["--set", "optim.lr=0.001", "--set", "trainer.max_epochs=5"]).overrides
        ['optim.lr=0.001', 'trainer.max_epochs=5']
    """
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one workflow key (repeatable), e.g. --set optim.lr=0.001",
    )
