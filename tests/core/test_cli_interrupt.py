"""``fnl``'s top level: FnL errors on one line (exit 2), Ctrl-C as exit 130 without a traceback."""

from __future__ import annotations

import pytest

from fnl_core import registry
from fnl_core.cli import EXIT_INTERRUPTED, main
from fnl_core.command import Command
from fnl_core.errors import FnLError
from fnl_core.groups import COMMANDS


def _raising(exc: BaseException) -> Command:
    def run(args):
        raise exc

    return Command(help="raises", configure=lambda parser: None, run=run)


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "fnl boom: interrupted"),
        (FnLError("model.bin: not a weights file"), 2, "fnl boom: error: model.bin: not a"),
    ],
)
def test_top_level_reports_in_one_line(capsys, exc, code, line):
    with registry.registered(COMMANDS, "boom", _raising(exc)):
        assert main(["boom"]) == code
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1
