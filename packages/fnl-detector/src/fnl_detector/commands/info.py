"""``fnl info SPEC_OR_PRESET``: parameters per part, weight size, GFLOPs, feature shapes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import (
    add_overrides_argument,
    check_spec_arguments,
    non_negative_int,
    positive_int,
    progress,
)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="a preset name (fnl list presets) or a spec file")
    add_overrides_argument(
        parser, "override a spec field, e.g. --set neck.out_channels=88 (repeatable)"
    )
    parser.add_argument(
        "--size",
        type=positive_int,
        default=512,
        help="shortest image side for GFLOPs (default 512)",
    )
    parser.add_argument(
        "--detections",
        type=non_negative_int,
        default=10,
        help="detections forced through the DensePose head for GFLOPs (default 10)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def collect_info(
    spec: Any,
    overrides: list[str],
    size: int,
    detections: int,
    flops: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Everything ``fnl info`` reports, as JSON-ready data; ``say`` gets progress lines."""
    say = say or (lambda message: None)
    import torch

    from fnl_detector.analysis import (
        benchmark_image,
        count_flops,
        feature_shapes,
        parameter_counts,
        prepare_benchmark_model,
        state_dict_bytes,
    )
    from fnl_detector.build import build_detector
    from fnl_detector.spec import load_spec

    torch.manual_seed(0)
    loaded = load_spec(spec, overrides)
    say(f"building {spec}...")
    model = build_detector(loaded)
    params = parameter_counts(model)
    info: dict[str, Any] = {
        "name": str(spec),
        "params": params,
        "weights_mb": round(params["total"] * 4 / 1e6, 3),
        "state_dict_mb": round(state_dict_bytes(model) / 1e6, 3),
        "features": feature_shapes(model),
        "size_divisibility": model.transform.size_divisibility,
    }
    if flops:
        say(f"counting GFLOPs at {size} px with {detections} detections (--no-flops skips it)...")
        image = benchmark_image(size)
        bench = prepare_benchmark_model(loaded, image, detections, fold_bn=False)
        info["gflops"] = round(count_flops(bench, [image]) / 1e9, 3)
        info["flops_input_hw"] = list(image.shape[-2:])
        info["flops_detections"] = detections
    return info


def _print_table(info: dict[str, Any]) -> None:
    p = info["params"]
    print(f"{info['name']}")
    print(f"  parameters      {p['total']:>12,}")
    for part in ("backbone", "neck", "rpn", "box_head", "densepose_head"):
        print(f"    {part:<14}{p[part]:>12,}")
    mb, sd_mb = info["weights_mb"], info["state_dict_mb"]
    print(f"  fp32 weights    {mb:>12.2f} MB (state dict {sd_mb:.2f} MB)")
    if "gflops" in info:
        h, w = info["flops_input_hw"]
        print(
            f"  GFLOPs          {info['gflops']:>12.2f} ({h}x{w} input, "
            f"{info['flops_detections']} detections)"
        )
    for part, shapes in info["features"].items():
        text = ", ".join(f"{n}: {s['channels']}ch/{s['stride']}" for n, s in shapes.items())
        print(f"  {part} features  {text}")


def _run(args: argparse.Namespace) -> int:
    check_spec_arguments(args)  # a spec typo fails before torch is imported
    info = collect_info(
        args.spec,
        args.overrides,
        args.size,
        args.detections,
        not args.no_flops,
        say=lambda message: progress("info", message),
    )
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_table(info)
    return 0


command = Command(
    help="parameters per part, weight size, GFLOPs and feature shapes of a spec or preset",
    configure=_configure,
    run=_run,
    description="Builds the model (random weights, nothing downloaded unless the spec asks) "
    "and reports nn.Parameter counts per part (backbone, neck, rpn, box_head incl. predictor, "
    "densepose_head incl. predictor; frozen-BN values are buffers, not parameters), fp32 weight "
    "size, GFLOPs (2 per multiply-add) of one inference on a fixed size x 4/3 size image with a "
    "fixed number of detections, and feature channels/strides.",
)
