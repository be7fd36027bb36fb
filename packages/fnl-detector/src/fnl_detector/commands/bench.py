"""``fnl bench SPEC_OR_PRESET...``: inference latency of models on the same fixed image."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import add_overrides_argument


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs", nargs="+", help="preset names or spec files; the first is the reference"
    )
    add_overrides_argument(parser, "override a field in every spec (repeatable)")
    parser.add_argument("--size", type=int, default=512, help="shortest image side (default 512)")
    parser.add_argument(
        "--detections", type=int, default=5, help="detections forced per image (default 5)"
    )
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per model (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run convolutions in channels_last (default; measured: Mobile B 1.5x faster on a "
        "2-core CPU, the ResNet-50 baseline unchanged)",
    )
    parser.add_argument(
        "--parallel-ops",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run torchvision's single-threaded RoIAlign/NMS kernels on pieces side by side "
        "(default; measured on 2 cores at 512 px: ResNet-50 baseline 1.10x, Mobile B 1.03x faster)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def run_benchmark(
    specs: list[str],
    *,
    overrides: list[str] = (),  # type: ignore[assignment]
    size: int = 512,
    detections: int = 5,
    runs: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    device: str | None = None,
    fold_bn: bool = True,
    channels_last: bool = False,
    parallel_ops: bool = True,
) -> list[dict[str, Any]]:
    """Median latency of each model (models alternate run by run in this process).

    ``ratio`` is the speed-up over the first model: its median divided by this one's.
    """
    import torch

    from fnl_detector.analysis import (
        benchmark_image,
        median,
        prepare_benchmark_model,
        time_models,
    )
    from fnl_detector.modeling.parallel import set_parallel_ops

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    image = benchmark_image(size).to(dev)
    models = []
    for name in specs:
        torch.manual_seed(0)
        models.append(
            prepare_benchmark_model(
                name,
                image,
                detections,
                overrides=overrides,
                fold_bn=fold_bn,
                channels_last=channels_last,
                device=dev,
            )
        )

    def call(model: Any) -> Any:
        def fn() -> Any:
            with torch.inference_mode():
                return model([image])

        return fn

    fns = [call(m) for m in models]
    previous = set_parallel_ops(parallel_ops)
    try:
        counts = [len(fn()[0]["boxes"]) for fn in fns]
        times = time_models(fns, runs=runs, warmup=warmup, sync=sync)
    finally:
        set_parallel_ops(previous)
    medians = [median(t) for t in times]
    return [
        {
            "name": str(name),
            "params": model.spec_params,
            "median_ms": round(med, 2),
            "detections": count,
            "ratio": round(medians[0] / med, 3),
            "device": dev.type,
            "threads": torch.get_num_threads(),
            "input_hw": list(image.shape[-2:]),
        }
        for name, model, med, count in zip(specs, models, medians, counts)
    ]


def _run(args: argparse.Namespace) -> int:
    rows = run_benchmark(
        args.specs,
        overrides=args.overrides,
        size=args.size,
        detections=args.detections,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        device=args.device,
        fold_bn=not args.no_fold_bn,
        channels_last=args.channels_last,
        parallel_ops=args.parallel_ops,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    h, w = rows[0]["input_hw"]
    print(
        f"{rows[0]['device']}, {rows[0]['threads']} threads, {h}x{w} image, "
        f"{rows[0]['detections']} detections"
    )
    print(f"{'model':<{width}}  {'params':>12}  {'median ms':>10}  {'speed-up':>8}")
    for r in rows:
        name, params, ms, ratio = r["name"], r["params"], r["median_ms"], r["ratio"]
        print(f"{name:<{width}}  {params:>12,}  {ms:>10.1f}  {ratio:>7.2f}x")
    return 0


command = Command(
    help="inference latency of presets/specs on the same image (median, models alternating)",
    configure=_configure,
    run=_run,
    description="Times inference of each model on one fixed image with exactly --detections "
    "detections reaching the DensePose head (score threshold 0, detections per image K; "
    "BatchNorm statistics calibrated on the image since weights are random; BN folded into "
    "convs unless --no-fold-bn). Runs --warmup untimed then --runs timed passes per model, "
    "alternating models, and reports the median; 'ratio' / speed-up = first model's median "
    "divided by this model's.",
)
