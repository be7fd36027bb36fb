"""``fnl`` subcommands shipped by fnl-detector (modules stay light: torch loads in ``run``).

Shared pieces: the ``--set`` option, argument types that reject nonsense numbers at parse time
(from :mod:`fnl_core.arguments`), and :func:`load_spec_early` /
:func:`check_spec_arguments`, which validate a spec before a command imports torch and timm,
so a typo is reported without waiting for those imports (see docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from fnl_core.arguments import non_negative_int, positive_float, positive_int, score_fraction


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


def load_spec_early(spec: str, overrides: Sequence[str] = ()) -> Any:
    """Validate and return the :class:`~fnl_detector.spec.DetectorSpec` without importing torch.

    Every torch command calls this first: spec errors (unknown component, typo, bad value)
    surface before the slow imports.
    """
    from fnl_detector.spec import load_spec

    return load_spec(spec, list(overrides))


def check_spec_arguments(args: argparse.Namespace) -> None:
    """Validate the spec(s) a command was given (``spec``/``specs``/``--spec`` with ``--set``)
    before it imports torch. Specs that come from a named model or a weights file are checked
    when the command resolves them."""
    specs = [getattr(args, "spec", None), *(getattr(args, "specs", None) or [])]
    for spec in filter(None, specs):
        load_spec_early(spec, getattr(args, "overrides", []))


def progress(command: str, message: str) -> None:
    """One progress line on stderr (stdout stays for results such as JSON reports)."""
    print(f"fnl {command}: {message}", file=sys.stderr, flush=True)


__all__ = [
    "add_overrides_argument",
    "check_spec_arguments",
    "load_spec_early",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "progress",
    "score_fraction",
]
