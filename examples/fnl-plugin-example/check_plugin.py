"""Checks used by `nox -s plugin`: is `tiny_convnet` (not) installed, and does a spec build?

``--expect absent``: the name is not listed and a spec naming it fails with the registry's
unknown-name error. ``--expect present``: it is listed with its distribution, and a full
detector spec whose backbone is the plugin validates, builds and runs.
"""

from __future__ import annotations

import argparse
import sys

from fnl_core import registry

SPEC = {"preset": "mobile_parsing_rcnn_b", "backbone": {"type": "tiny_convnet", "width": 16}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", choices=["absent", "present"], required=True)
    args = parser.parse_args()

    from pydantic import ValidationError

    from fnl_detector import build_detector, load_spec

    listed = "tiny_convnet" in registry.names("fnl.backbones")
    if args.expect == "absent":
        assert not listed, "tiny_convnet is installed but should not be"
        try:
            load_spec(SPEC)
        except ValidationError as exc:
            assert "unknown fnl.backbones component 'tiny_convnet'" in str(exc), exc
            print("ok: spec with tiny_convnet rejected:", str(exc).splitlines()[1].strip())
            return 0
        print("spec with an uninstalled backbone was accepted", file=sys.stderr)
        return 1

    dist = {i.name: i.distribution for i in registry.entries("fnl.backbones")}
    assert dist.get("tiny_convnet") == "fnl-plugin-example", dist
    import torch

    model = build_detector(load_spec(SPEC)).eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 128, 160) * 255])
    print("ok: detector with plugin backbone ran; detections:", len(out[0]["boxes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
