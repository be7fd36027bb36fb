"""``fnl validate``: check a spec (preset, spec file or a run's spec.json) with its overrides,
without importing torch: unknown components, typos and bad values are reported at once.

    fnl validate mobile_parsing_rcnn_b --set neck.out_channels=96
    fnl validate runs/b/spec.json --json
"""

from __future__ import annotations

import argparse
import json

from fnl_core.command import Command
from fnl_detector.commands import add_overrides_argument, load_spec_early


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="a preset name (fnl list presets) or a spec file")
    add_overrides_argument(parser, "spec overrides to check with it (KEY=VALUE, repeatable)")
    parser.add_argument(
        "--json", action="store_true", help="print the resolved spec (what a run would save)"
    )


def _run(args: argparse.Namespace) -> int:
    from fnl_core import registry

    spec = load_spec_early(args.spec, args.overrides)
    data = spec.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    parts = registry.provenance(data)
    print(f"{args.spec}: valid ({len(parts)} components)")
    for path, info in parts.items():
        print(f"  {path:<22} {info['name']:<28} {info['distribution']} {info['version']}")
    return 0


command = Command(
    help="check a spec (and --set overrides) without building the model; no torch import",
    configure=_configure,
    run=_run,
)
