"""``fnl list [GROUP]``: installed components and the package providing each (imports nothing).

``fnl list models`` shows the named models instead: name, preset, the data the model was
trained and scored on (coco: DensePose-COCO; toy: synthetic toy people), the accuracy reported
on that data, sha256, the providing package and weights (reading the cards, never torch).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from fnl_core import registry
from fnl_core.command import Command
from fnl_core.groups import COMPONENT_GROUPS, MODELS, normalize_group

if TYPE_CHECKING:
    from fnl_core.models import ModelCard


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "group",
        nargs="?",
        help="a group such as backbones or fnl.necks, or models for the named models with "
        "their weights and reported accuracy (default: all groups)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list instead")


def _print_table(headers: tuple[str, ...], table: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[k]) for r in table)) for k, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _hash_text(card: ModelCard) -> str:
    if card.sha256:
        return card.sha256
    return f"{card.sha256_prefix}... (prefix)" if card.sha256_prefix else "-"


def _list_models(as_json: bool) -> int:
    from fnl_core.models import METRICS, list_cards

    rows = list_cards()
    if as_json:
        out = []
        for info, card in rows:
            item = {} if isinstance(card, Exception) else card.model_dump(mode="json")
            item.update(name=info.name, distribution=info.distribution, version=info.version)
            if isinstance(card, Exception):
                item["error"] = str(card)
            out.append(item)
        print(json.dumps(out, indent=2))
        return 0
    headers = (
        "name", "preset", "dataset", "box/segm/GPS/GPSm AP (on dataset)", "sha256", "package",
        "weights",
    )  # fmt: skip
    table = []
    for info, card in rows:
        if isinstance(card, Exception):
            table.append((info.name, "(broken)", "", "", "", info.distribution, str(card)))
            continue
        ap = "/".join(f"{card.reported[m]:.1f}" if m in card.reported else "-" for m in METRICS)
        preset = card.preset or ("(spec file)" if card.spec else "(in weights)")
        dataset = card.dataset or "-"
        table.append(
            (info.name, preset, dataset, ap, _hash_text(card), info.distribution,
             card.weights_location())
        )  # fmt: skip
    if not table:
        table = [("(none installed)", "", "", "", "", "", "")]
    _print_table(headers, table)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.group and normalize_group(args.group) == MODELS:
        return _list_models(args.json)
    groups = [normalize_group(args.group)] if args.group else list(COMPONENT_GROUPS)
    rows = [info for group in groups for info in registry.entries(group)]
    if args.json:
        print(
            json.dumps([{**i.__dict__, "qualified_name": i.qualified_name} for i in rows], indent=2)
        )
        return 0
    # a name several packages provide is shown as PACKAGE:NAME, the form a spec must then use
    seen = [(i.group, i.name) for i in rows]
    clashing = {key for key in seen if seen.count(key) > 1}
    headers = ("group", "name", "package", "version", "target")
    table = [
        (
            i.group,
            i.qualified_name if (i.group, i.name) in clashing else i.name,
            i.distribution,
            i.version,
            i.target,
        )
        for i in rows
    ]
    empty = [(g, "(none installed)", "", "", "") for g in groups if not registry.entries(g)]
    table = sorted(table + empty, key=lambda r: (groups.index(r[0]), r[1]))
    _print_table(headers, table)
    if clashing:
        print("\nnames shown as PACKAGE:NAME are provided by several packages: write them that way")
    return 0


command = Command(
    help="list installed components (backbones, necks, heads, datasets, ...) or named models",
    configure=_configure,
    run=_run,
)
