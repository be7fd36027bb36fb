"""The ``fnl`` console script.

Subcommands are entries of the ``fnl.commands`` group (see :mod:`fnl_core.command`): a package
adds one by declaring an entry point, with no change here. Only the chosen subcommand's ``run``
does real work, so ``fnl --help`` and ``fnl list`` never import torch.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from fnl_core import registry
from fnl_core.command import Command
from fnl_core.errors import FnLError
from fnl_core.groups import COMMANDS

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

FNL_PACKAGES = (
    "fnl-core",
    "fnl-backbones",
    "fnl-necks",
    "fnl-heads",
    "fnl-data",
    "fnl-detector",
    "fnl-quant",
    "fnl-eval",
)


def _version_text() -> str:
    parts = []
    for dist in FNL_PACKAGES:
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    return "fnl: " + ", ".join(parts)


class CliError(Exception):
    """An error to report as one line on stderr with exit code 2 (no traceback)."""


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^`>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.S)


def plain_text(text: str | None) -> str | None:
    """Help text without reStructuredText markup (command descriptions and option help come
    from docstrings): ``:func:`~a.b.c``` becomes ``c``, ``:mod:`a.b``` ``a.b`` and
    double-backquoted literals lose their backquotes."""
    if not text:
        return text

    def role(match: re.Match[str]) -> str:
        target = match.group(1).strip()
        return (
            target.rsplit(".", 1)[-1] if match.group(0).split("`", 1)[1].startswith("~") else target
        )

    return _LITERAL.sub(r"\1", _ROLE.sub(role, text))


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """:func:`plain_text` over a parser's description and every option's help."""
    parser.description = plain_text(parser.description)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain_text(action.help)
    for group in parser._action_groups:
        group.description = plain_text(group.description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fnl",
        description="FnL: fast and light DensePose. Build, train, quantize, export and evaluate "
        "DensePose models composed from registered components.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in registry.entries(COMMANDS):
        # One broken command plugin must not hide the others: warn and go on.
        try:
            cmd = registry.get(COMMANDS, info.name)
        except (registry.PluginLoadError, registry.RegistryError) as exc:
            print(f"fnl: warning: {exc}", file=sys.stderr)
            continue
        if not isinstance(cmd, Command):
            print(
                f"fnl: warning: {info.target} ({info.distribution}) is not a fnl_core.Command",
                file=sys.stderr,
            )
            continue
        p = sub.add_parser(
            info.name, help=plain_text(cmd.help), description=cmd.description or cmd.help
        )
        try:
            cmd.configure(p)
        except Exception as exc:
            print(
                f"fnl: warning: command {info.name!r} from {info.distribution} failed to set up "
                f"its arguments: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            continue
        _plain_help(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    from pydantic import ValidationError

    from fnl_core.spec import format_validation_error

    try:
        return int(args._run(args) or 0)
    except ValidationError as exc:
        print(f"fnl {args.command}: invalid spec:\n{format_validation_error(exc)}", file=sys.stderr)
    except (CliError, registry.RegistryError, FnLError, FileNotFoundError, ValueError) as exc:
        print(f"fnl {args.command}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:  # commands that save partial work catch it themselves first
        print(f"fnl {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 2


if __name__ == "__main__":
    sys.exit(main())
