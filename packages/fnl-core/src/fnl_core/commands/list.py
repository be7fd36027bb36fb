"""``fnl list [GROUP]``: installed components and the package providing each (imports nothing)."""

from __future__ import annotations

import argparse
import json

from fnl_core import registry
from fnl_core.command import Command
from fnl_core.groups import COMPONENT_GROUPS, normalize_group


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "group", nargs="?", help="a group such as backbones or fnl.necks (default: all groups)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list instead")


def _run(args: argparse.Namespace) -> int:
    groups = [normalize_group(args.group)] if args.group else list(COMPONENT_GROUPS)
    rows = [info for group in groups for info in registry.entries(group)]
    if args.json:
        print(json.dumps([info.__dict__ for info in rows], indent=2))
        return 0
    headers = ("group", "name", "package", "version", "target")
    table = [(i.group, i.name, i.distribution, i.version, i.target) for i in rows]
    empty = [(g, "(none installed)", "", "", "") for g in groups if not registry.entries(g)]
    table = sorted(table + empty, key=lambda r: (groups.index(r[0]), r[1]))
    widths = [max(len(h), *(len(r[k]) for r in table)) for k, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


command = Command(
    help="list installed components (backbones, necks, heads, datasets, ...)",
    configure=_configure,
    run=_run,
)
