"""``fnl`` subcommands shipped by fnl-detector (modules stay light: torch loads in ``run``)."""

from __future__ import annotations

import argparse


def add_overrides_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The shared ``--set KEY=VALUE [KEY=VALUE ...]`` option (repeatable), into ``overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=help,
    )
