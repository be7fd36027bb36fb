"""``fnl bench SPEC_OR_PRESET...``: inference latency of models on the same fixed image."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import (
    add_overrides_argument,
    check_spec_arguments,
    non_negative_int,
    positive_int,
)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs", nargs="*", help="preset names or spec files; the first is the reference"
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME",
        help="also time a named model (fnl list models; repeatable): its architecture, timed "
        "like every row (latency does not depend on the weights' values, so none are fetched)",
    )
    add_overrides_argument(parser, "override a field in every spec (repeatable)")
    parser.add_argument(
        "--size", type=positive_int, default=512, help="shortest image side (default 512)"
    )
    parser.add_argument(
        "--detections",
        type=non_negative_int,
        default=5,
        help="detections forced per image (default 5)",
    )
    parser.add_argument(
        "--runs", type=positive_int, default=10, help="timed runs per model (default 10)"
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=2, help="untimed runs per model (default 2)"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="time the unoptimised model (as built: no BN folding, NCHW, serial RoIAlign/NMS); "
        "without it, the Predictor as fnl predict and the Python API run it",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="time the Predictor on ONNX Runtime (exported once, checked against PyTorch; needs "
        "fnl-detector[export]) or PyTorch; auto (default): what fnl predict picks",
    )
    parser.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run convolutions in channels_last (default on CPU; see docs/inference.md)",
    )
    parser.add_argument(
        "--parallel-ops",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run torchvision's single-threaded RoIAlign/NMS kernels on pieces side by side "
        "(default; bit-identical results)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time each stage (backbone, neck, RPN + NMS, box pooling, box head, DensePose "
        "pooling and head, chart pasting) on the backend that runs, with --runs runs after the "
        "timing (ONNX Runtime: its node profiler; PyTorch: module hooks)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def run_benchmark(
    specs: list[Any],
    *,
    labels: list[str] | None = None,
    overrides: list[str] = (),  # type: ignore[assignment]
    size: int = 512,
    detections: int = 5,
    runs: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    device: str | None = None,
    plain: bool = False,
    fold_bn: bool = True,
    channels_last: bool = True,
    parallel_ops: bool = True,
    backend: str = "auto",
    stages: bool = False,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Median latency of each model's :class:`~fnl_detector.Predictor` on one uint8 image
    (preprocessing included; models alternate run by run in this process).

    Each model is built with the benchmark overrides (exactly ``detections`` detections, short
    side ``size``), its BatchNorm statistics calibrated on the image (weights are random), then
    wrapped by ``Predictor.from_model`` with the speed-ups (or none with ``plain``), on the
    ``backend`` (``"auto"`` as the Predictor picks it; ``"onnxruntime"``: exported and verified
    first; ``plain`` is always PyTorch).
    ``ratio`` is the speed-up over the first model: its median divided by this one's.
    ``stages``: each row also gets ``stages`` (median ms per stage,
    :func:`fnl_detector.stages.stage_times`), measured after the timed runs.
    """
    import torch

    from fnl_detector.analysis import (
        benchmark_image,
        benchmark_overrides,
        calibrate_batch_norm,
        median,
        parameter_counts,
        time_models,
    )
    from fnl_detector.build import build_detector
    from fnl_detector.loading import select_device
    from fnl_detector.predictor import Predictor
    from fnl_detector.spec import load_spec

    say = progress or (lambda message: None)
    if threads:
        torch.set_num_threads(threads)
    dev = select_device(device or "auto")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    image = benchmark_image(size).round().to(torch.uint8)
    pixels = image.permute(1, 2, 0).numpy()
    predictors, params = [], []
    labels = labels or [str(s) for s in specs]
    for name, given in zip(labels, specs, strict=True):
        say(f"building {name}...")
        torch.manual_seed(0)
        spec = load_spec(given, [*overrides, *benchmark_overrides(size, detections)])
        model = build_detector(spec).to(dev).eval()
        params.append(parameter_counts(model)["total"])
        calibrate_batch_norm(model, [image.float().to(dev)])
        predictor = Predictor.from_model(
            model,
            optimize=not plain,
            copy_model=False,
            fold_bn=fold_bn,
            channels_last=channels_last and dev.type == "cpu",
            parallel_ops=parallel_ops and not plain,
            backend="torch" if plain else backend,
            threads=threads,
            progress=say,
        )
        got = len(predictor(pixels)["boxes"])
        if got != detections:
            raise RuntimeError(
                f"{name}: {got} detections reach the DensePose head instead of {detections} "
                "(too few proposals survive NMS at this input size)"
            )
        predictors.append(predictor)
    say(f"timing {len(labels)} model(s): {warmup} warm-up and {runs} timed runs each...")
    times = time_models(
        [lambda p=p: p(pixels) for p in predictors], runs=runs, warmup=warmup, sync=sync
    )
    medians = [median(t) for t in times]
    stage_ms: list[dict[str, float] | None] = [None] * len(predictors)
    if stages:
        from fnl_detector.stages import stage_times

        say("timing the stages...")
        stage_ms = [stage_times(p, pixels, runs=runs) for p in predictors]
    rows = [
        {
            "name": str(name),
            "params": n_params,
            "median_ms": round(med, 2),
            "detections": detections,
            "ratio": round(medians[0] / med, 3),
            "device": dev.type,
            "threads": torch.get_num_threads(),
            "input_hw": [int(s) for s in image.shape[-2:]],
            "plain": plain,
            "optimizations": {k: v for k, v in p.optimizations.items()},
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        }
        for name, n_params, med, p in zip(labels, params, medians, predictors)
    ]
    for row, ms in zip(rows, stage_ms, strict=True):
        if ms is not None:
            row["stages"] = ms
    return rows


def _run(args: argparse.Namespace) -> int:
    check_spec_arguments(args)  # a spec typo fails before torch is imported
    from fnl_detector.threads import prefer_passive_omp_wait

    prefer_passive_omp_wait()
    if not args.specs and not args.models:
        raise ValueError("nothing to time: give preset names or spec files, or --model NAME")
    from fnl_detector.loading import model_spec

    rows = run_benchmark(
        [*args.specs, *(model_spec(name) for name in args.models)],
        labels=[*args.specs, *args.models],
        overrides=args.overrides,
        size=args.size,
        detections=args.detections,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        device=args.device,
        plain=args.plain,
        fold_bn=not args.no_fold_bn,
        channels_last=args.channels_last,
        parallel_ops=args.parallel_ops,
        backend=args.backend,
        stages=args.stages,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    h, w = rows[0]["input_hw"]
    print(
        f"{rows[0]['device']}, {rows[0]['threads']} threads, {h}x{w} image, "
        f"{rows[0]['detections']} detections, network run by "
        f"{rows[0]['optimizations']['backend']}"
    )
    print(f"{'model':<{width}}  {'params':>12}  {'median ms':>10}  {'speed-up':>8}")
    for r in rows:
        name, params, ms, ratio = r["name"], r["params"], r["median_ms"], r["ratio"]
        print(f"{name:<{width}}  {params:>12,}  {ms:>10.1f}  {ratio:>7.2f}x")
    for r in rows:
        if "stages" in r:
            total = sum(r["stages"].values()) or 1.0
            print(f"\nstages of {r['name']} ({r['optimizations']['backend']}, median ms, share)")
            for stage, ms in r["stages"].items():
                print(f"  {stage:<24} {ms:>8.1f}  {100 * ms / total:>5.1f} %")
    return 0


command = Command(
    help="inference latency of presets/specs as users get it (the Predictor; --plain: as built)",
    configure=_configure,
    run=_run,
    description="Times fnl_detector.Predictor (what fnl predict and the Python API run: uint8 "
    "image in, preprocessing, then ONNX Runtime where it is installed, else PyTorch with BN "
    "folded, channels_last, parallel RoIAlign/NMS; --plain: the PyTorch model as built) on one "
    "fixed image with exactly --detections detections reaching the DensePose head (score "
    "threshold 0, detections per image K; BatchNorm statistics calibrated on the image since "
    "weights are random). Runs --warmup untimed then --runs timed "
    "passes per model, alternating models, and reports the median; 'ratio' / speed-up = first "
    "model's median divided by this model's. OMP_WAIT_POLICY is set to PASSIVE unless set.",
)
