"""The subcommand contract of the ``fnl`` CLI.

Every subcommand, built-in or from another package, is a :class:`Command` advertised under the
``fnl.commands`` entry-point group::

    [project.entry-points."fnl.commands"]
    train = "fnl_detector.commands.train:command"

The module holding the object must stay light (no torch at import time) because ``fnl --help``
loads every command to print its one-line help; heavy imports belong inside ``run``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, how to add its arguments, and what it runs."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None
