"""``fnl export SPEC_OR_PRESET --out DIR``: one ONNX graph + manifest, verified with onnxruntime."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fnl_core.command import Command
from fnl_core.outputs import add_overwrite_argument
from fnl_detector.commands import (
    add_overrides_argument,
    check_spec_arguments,
    positive_int,
    progress,
)
from fnl_detector.commands._weights import add_model_arguments, model_from_args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        nargs="?",
        help="a preset name (fnl list presets) or a spec file (default: --model's, or the one "
        "stored with --weights)",
    )
    parser.add_argument(
        "--weights", default=None, help="FnL .safetensors or reference .pth/.pkl weights"
    )
    add_model_arguments(parser, weights=False, spec=False)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    add_overwrite_argument(parser)
    parser.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        help="short side images are resized to (default: the spec's input.min_size_test)",
    )
    parser.add_argument(
        "--opset", type=positive_int, default=None, help="ONNX opset (default 17, >= 16)"
    )
    parser.add_argument(
        "--int8", action="store_true", help="also write model.int8.onnx (static QDQ int8)"
    )
    parser.add_argument(
        "--calib-data", default="toy", help="toy | coco:PATH: int8 calibration images"
    )
    parser.add_argument(
        "--calib-images",
        type=_positive_int,
        default=16,
        help="number of calibration images (default 16)",
    )
    parser.add_argument(
        "--verify-image",
        default=None,
        help="image the graph is checked on (default: a synthetic image at the test size)",
    )
    add_overrides_argument(
        parser, "override a spec field, e.g. --set test.nms_thresh=0.3 (repeatable)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def calibration_images(model: Any, data: str, count: int) -> list[Any]:
    """The first ``count`` training images of ``data``, resized by the runtime's rule."""
    import numpy as np

    from fnl_core.imaging import resize_shortest_edge
    from fnl_detector.train.sources import parse_data

    source = parse_data(data)
    dataset = source.build(source.train_split)
    records = dataset.records[:count]
    if not records:
        raise ValueError(f"--calib-data {data}: the {source.train_split} split has no images")
    t = model.transform
    return [
        resize_shortest_edge(np.asarray(dataset.load_image(r)), t.min_size_test, t.max_size_test)
        for r in records
    ]


def run_export(
    spec: Any,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    size: int | None = None,
    opset: int | None = None,
    overrides: list[str] | None = None,
    verify: bool = True,
    verify_image: str | Path | None = None,
    int8: bool = False,
    calib_data: str = "toy",
    calib_images: int = 16,
) -> dict[str, Any]:
    """Build (and load or calibrate) the model, export it, and compare onnxruntime with
    PyTorch on two images (:func:`fnl_detector.export.verification_images`). With ``int8``
    also write the quantised graph. Returns the manifest's content plus its path."""
    import torch

    from fnl_detector.analysis import calibrate_batch_norm
    from fnl_detector.build import build_detector
    from fnl_detector.export import (
        DEFAULT_OPSET,
        MANIFEST,
        add_int8_graph,
        export_onnx,
        require_export_deps,
        verification_images,
        verify_export,
        write_json_atomic,
    )
    from fnl_detector.loading import load_weights
    from fnl_detector.spec import load_spec

    require_export_deps()
    extra = [f"input.min_size_test={size}"] if size is not None else []
    loaded = load_spec(spec, [*(overrides or []), *extra])
    torch.manual_seed(0)
    model = build_detector(loaded).eval()
    images = verification_images(model, verify_image)
    if weights is not None:
        load_weights(model, weights)
        note = f"weights from {weights}"
    else:
        # Random weights: BatchNorm statistics from the verification image, so that detections
        # are not degenerate (docs/speed.md, "Performance habits").
        calibrate_batch_norm(model, [torch.from_numpy(images[0]).permute(2, 0, 1).float()])
        note = "random weights, BatchNorm calibrated on the verification image (no --weights)"
    opset = opset or DEFAULT_OPSET
    out = Path(out)
    path = export_onnx(model, out, images[0], opset=opset)
    manifest = json.loads(path.read_text())
    manifest["weights"] = note
    if verify:
        manifest["verification"] = verify_export(model, out, images, opset)
    if int8:
        add_int8_graph(out, manifest, calibration_images(model, calib_data, calib_images))
        manifest["int8"]["calibration_data"] = calib_data
    from fnl_detector.export.writer import record_file_hashes

    record_file_hashes(out, manifest)  # the int8 graph's too
    write_json_atomic(out / MANIFEST, manifest)
    return {"manifest_path": str(out / MANIFEST), **manifest}


def _run(args: argparse.Namespace) -> int:
    check_spec_arguments(args)  # a spec typo fails before torch is imported
    from fnl_core.onnx_manifest import INT8_FILE, MANIFEST_FILE, MODEL_FILE
    from fnl_core.outputs import check_output_dir

    outputs = (MANIFEST_FILE, MODEL_FILE, INT8_FILE)
    check_output_dir(args.out, outputs=outputs, overwrite=args.overwrite)
    resolved = model_from_args(args, require_weights=False)
    checking = "" if args.no_verify else " and checking it against PyTorch"
    progress("export", f"writing the ONNX graph{checking}...")
    result = run_export(
        resolved.spec,
        args.out,
        weights=resolved.weights,
        size=args.size,
        opset=args.opset,
        overrides=args.overrides,
        verify=not args.no_verify,
        verify_image=args.verify_image,
        int8=args.int8,
        calib_data=args.calib_data,
        calib_images=args.calib_images,
    )
    ver = result.get("verification")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        size = result["input"]["resize"]
        print(
            f"wrote {result['manifest_path']} ({result['weights']}; short side "
            f"{size['min_size_test']}, long side at most {size['max_size_test']})"
        )
        for name, n in result["files_bytes"].items():
            print(f"  {name:<22}{n / 1e6:>8.2f} MB")
        if size.get("spec_resize") == "interpolate":
            print(
                "  note: the spec resizes with input.resize=interpolate (float, in PyTorch); "
                "runtimes resize with Pillow bilinear on uint8, so images that need resizing "
                "give slightly different pixels than fnl predict"
            )
        if ver is not None:
            _print_verification(ver)
    if ver is not None and not ver["ok"]:
        print(
            f"fnl export: onnxruntime does not reproduce PyTorch (see {result['manifest_path']}, "
            "'verification'); the graph in the folder must not be used",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_verification(ver: dict[str, Any]) -> None:
    print(f"  onnxruntime vs PyTorch: {'ok' if ver['ok'] else 'MISMATCH'}")
    if ver.get("forced_detections"):
        print(f"    note: {ver['forced_detections']}")
    for row in ver["images"]:
        h, w = row["image_hw"]
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in row["max_diff"].items())
        how = "same" if row["same"] else f"{row['matched']} matched"
        print(
            f"    {h}x{w}: {row['onnx_detections']}/{row['detections']} detections ({how}); "
            f"max diff {diffs}"
        )
        if row["unmatched_scores"]:
            print(f"      unmatched (near-ties at the cut): scores {row['unmatched_scores']}")
    if ver["detections"] == 0:
        print("    no detections at all: the check proves nothing about the detection branches")


command = Command(
    help="export a spec/preset to one ONNX graph (+ int8) and verify it with onnxruntime",
    configure=_configure,
    run=_run,
    description="Writes model.onnx (resized uint8 image -> boxes, scores, labels and the "
    "DensePose predictor outputs per detection; NMS, TopK and RoiAlign are graph operators) "
    "and manifest.json (resize rule, outputs, spec, opset, versions, verification) into --out; "
    "--int8 adds model.int8.onnx (static QDQ quantisation calibrated on --calib-data). Unless "
    "--no-verify, onnxruntime and PyTorch are compared on two images of different sizes; exit "
    "status 1 on a mismatch or when no detection could be checked. Without --weights the model "
    "has random weights with BatchNorm calibrated on the verification image (for latency and "
    "plumbing checks only). fnl run (package fnl-runtime) runs the folder without torch.",
)
