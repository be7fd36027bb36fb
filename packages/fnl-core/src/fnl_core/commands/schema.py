"""``fnl schema``: the JSON Schema of a spec, covering every installed component."""

from __future__ import annotations

import argparse
import json

from fnl_core import registry
from fnl_core.command import Command
from fnl_core.groups import SPECS


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec",
        default="detector",
        help="which spec kind (an entry of fnl.specs; default: detector)",
    )
    parser.add_argument(
        "--group", help="print the schema of one component group instead (e.g. necks)"
    )
    parser.add_argument("--indent", type=int, default=2)


def _run(args: argparse.Namespace) -> int:
    from fnl_core.spec import group_json_schema, spec_json_schema

    if args.group:
        schema = group_json_schema(args.group)
    else:
        schema = spec_json_schema(registry.get(SPECS, args.spec))
    print(json.dumps(schema, indent=args.indent))
    return 0


command = Command(
    help="print the JSON Schema of a spec (or of one component group)",
    configure=_configure,
    run=_run,
)
