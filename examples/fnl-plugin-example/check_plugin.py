"""Checks used by `nox -s plugin` (and tests/integration/test_plugin.py): is the plugin absent,
or present and usable the documented ways?

``--expect absent``: neither the backbone nor the preset is listed, and a spec naming the
backbone fails with the registry's unknown-name error. ``--expect present``: both are listed
with their distribution; the plugin's preset ``example.tiny_convnet_b`` validates, builds and
runs; the short name ``tiny_convnet`` resolves to ``example.tiny_convnet``; and the spec's
provenance names fnl-plugin-example as the backbone's package.
"""

from __future__ import annotations

import argparse
import sys

from fnl_core import groups, registry

BACKBONE = "example.tiny_convnet"
PRESET = "example.tiny_convnet_b"
SHORT_SPEC = {"preset": "mobile_parsing_rcnn_b", "backbone": {"type": "tiny_convnet", "width": 8}}


def check_absent() -> int:
    from pydantic import ValidationError

    from fnl_detector import load_spec

    assert BACKBONE not in registry.names(groups.BACKBONES), f"{BACKBONE} should not be installed"
    assert PRESET not in registry.names(groups.PRESETS), f"{PRESET} should not be installed"
    try:
        load_spec(SHORT_SPEC)
    except ValidationError as exc:
        message = next(line for line in str(exc).splitlines() if "unknown" in line)
        assert "unknown fnl.backbones component 'tiny_convnet'" in message, exc
        print("ok: spec with tiny_convnet rejected:", message.strip()[:100])
        return 0
    print("spec with an uninstalled backbone was accepted", file=sys.stderr)
    return 1


def check_present() -> int:
    import torch

    from fnl_detector import build_detector, load_spec

    for group, name in ((groups.BACKBONES, BACKBONE), (groups.PRESETS, PRESET)):
        dist = {i.name: i.distribution for i in registry.entries(group)}
        assert dist.get(name) == "fnl-plugin-example", (group, dist)

    spec = load_spec(PRESET)
    assert spec.backbone.type == BACKBONE and spec.backbone.width == 16, spec.backbone
    assert load_spec(SHORT_SPEC).backbone.type == BACKBONE
    origin = registry.provenance(spec.to_dict())["backbone"]
    assert origin["distribution"] == "fnl-plugin-example", origin

    torch.manual_seed(0)
    model = build_detector(spec).eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 128, 160) * 255])
    print(
        f"ok: preset {PRESET} ({origin['distribution']} {origin['version']}) built and ran;",
        "detections:",
        len(out[0]["boxes"]),
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", choices=["absent", "present"], required=True)
    args = parser.parse_args()
    return check_absent() if args.expect == "absent" else check_present()


if __name__ == "__main__":
    sys.exit(main())
