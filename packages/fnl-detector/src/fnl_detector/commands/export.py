"""``fnl export SPEC_OR_PRESET --out DIR``: ONNX graphs + manifest, verified with onnxruntime."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import add_overrides_argument


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="a preset name (fnl list presets) or a spec file")
    parser.add_argument(
        "--weights", default=None, help="FnL .safetensors or reference .pth/.pkl weights"
    )
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--size",
        type=int,
        default=512,
        help="short side images are resized to (sets input.min_size_test; default 512)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17, >= 16)")
    add_overrides_argument(
        parser, "override a spec field, e.g. --set test.nms_thresh=0.3 (repeatable)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_export(
    spec: Any,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    size: int = 512,
    opset: int | None = None,
    overrides: list[str] | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """Build (and load or calibrate) the model, export it and compare onnxruntime with PyTorch
    on two synthetic images of different sizes. Returns the manifest path, file sizes and the
    verification report (also stored in the manifest)."""
    import numpy as np
    import torch

    from fnl_detector.analysis import benchmark_image, calibrate_batch_norm
    from fnl_detector.build import build_detector
    from fnl_detector.convert import load_weights
    from fnl_detector.export import (
        DEFAULT_OPSET,
        OnnxDensePoseRunner,
        export_onnx,
        require_export_deps,
        verify_export,
    )
    from fnl_detector.spec import load_spec

    require_export_deps()
    loaded = load_spec(spec, [*(overrides or []), f"input.min_size_test={size}"])
    torch.manual_seed(0)
    model = build_detector(loaded).eval()
    image = benchmark_image(size)
    if weights is not None:
        load_weights(model, weights)
        note = f"weights from {weights}"
    else:
        # Random weights: set BatchNorm statistics from the example image so that detections
        # are not degenerate (see docs: "Performance habits").
        calibrate_batch_norm(model, [image])
        note = "random weights, BatchNorm calibrated on a synthetic image (no --weights)"
    path = export_onnx(model, out, image, opset=opset or DEFAULT_OPSET)
    manifest = json.loads(path.read_text())
    manifest["weights"] = note
    result: dict[str, Any] = {"manifest": str(path), "weights": note}
    if verify:
        runner = OnnxDensePoseRunner(out)
        other = benchmark_image(max(size * 3 // 4, 32), seed=1).permute(1, 2, 0)
        images = [image.permute(1, 2, 0).numpy(), other.numpy()[:, : other.shape[1] * 2 // 3]]
        images = [np.ascontiguousarray(i.round().astype(np.uint8)) for i in images]
        manifest["verification"] = verify_export(model, runner, images)
        result["verification"] = manifest["verification"]
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    result["files_bytes"] = manifest["files_bytes"]
    return result


def _run(args: argparse.Namespace) -> int:
    result = run_export(
        args.spec,
        args.out,
        weights=args.weights,
        size=args.size,
        opset=args.opset,
        overrides=args.overrides,
        verify=not args.no_verify,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"wrote {result['manifest']} ({result['weights']})")
        for name, n in result["files_bytes"].items():
            print(f"  {name:<22}{n / 1e6:>8.2f} MB")
        ver = result.get("verification")
        if ver is not None:
            _print_verification(ver)
    ver = result.get("verification")
    return 0 if ver is None or ver["stages_ok"] else 1


def _print_verification(ver: dict[str, Any]) -> None:
    print(f"  onnxruntime vs PyTorch, stage by stage: {'ok' if ver['stages_ok'] else 'MISMATCH'}")
    for row in ver["stages"]:
        h, w = row["image_hw"]
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in row.items() if k != "image_hw")
        print(f"    {h}x{w}: max rel diff {diffs}")
    print(f"  onnxruntime vs PyTorch, end to end: {'ok' if ver['end_to_end_ok'] else 'MISMATCH'}")
    for row in ver["end_to_end"]:
        h, w = row["image_hw"]
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in row["max_rel_diff"].items())
        print(
            f"    {h}x{w}: {row['onnx_detections']}/{row['detections']} detections"
            + (f"; max rel diff {diffs}" if diffs else "; different detections")
        )
    if ver["stages_ok"] and not ver["end_to_end_ok"]:
        print(
            "  note: every graph matches on the same inputs; the final detections differ "
            "because some scores/overlaps tie within float32 noise (typical of random weights)"
        )


command = Command(
    help="export a spec/preset to ONNX (3 graphs + manifest) and verify it with onnxruntime",
    configure=_configure,
    run=_run,
    description="Writes features.onnx (image -> pyramid features + RPN head outputs), "
    "box_head.onnx and densepose_head.onnx (features + RoIs per level -> RoIAlign -> head) and "
    "manifest.json (spec, preprocessing, anchors, thresholds, opset, versions) into --out. The "
    "selection glue (resize, top-k, box decoding, NMS) runs in numpy in "
    "fnl_detector.export.OnnxDensePoseRunner. Unless --no-verify, onnxruntime and PyTorch are "
    "compared on two synthetic images of different sizes (exit status 1 on a mismatch). "
    "Without --weights the model has random weights with BatchNorm calibrated on the example "
    "image (good for latency and plumbing checks only). Needs the fnl-detector[export] extra.",
)
