#!/usr/bin/env python3
"""CPU/GPU latency of detector presets and of each inference speed-up of the Predictor (JSON).

    uv run python benchmarks/bench_latency.py [--size 512] [--detections 5] [--runs 5]
        [--threads 2] [--models mobile_parsing_rcnn_b mobile_parsing_rcnn_b_test_tuned ...]

For each model, the variants below run alternately in this process on the same fixed uint8
image with exactly K detections (BatchNorm calibrated on the image, see fnl_detector.analysis),
each through :class:`fnl_detector.Predictor` (preprocessing included, ``torch.inference_mode``):

* ``plain``: the model as built (``Predictor(optimize=False)``, what ``fnl bench --plain`` times);
* ``+parallel_ops``: torchvision's RoIAlign/NMS pieces side by side (bit-identical);
* ``+channels_last``: and channels_last convolutions;
* ``+fold_bn``: and BatchNorm folded into the convolutions = the PyTorch backend;
* ``onnxruntime``: the model exported once to ONNX and run by ONNX Runtime = the default user
  path on a CPU with onnxruntime installed (``backend="auto"``; skipped without onnxruntime).

``ratio`` is the speed-up over the model's ``plain`` variant. OMP_WAIT_POLICY is read when
torch loads, so it cannot vary within one process: this script sets PASSIVE unless it is set
(as the fnl commands do); run it with ``OMP_WAIT_POLICY=ACTIVE`` to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from fnl_detector.threads import prefer_passive_omp_wait

prefer_passive_omp_wait()

import torch  # noqa: E402

from fnl_detector.analysis import (  # noqa: E402
    benchmark_image,
    benchmark_overrides,
    calibrate_batch_norm,
    median,
    time_models,
)
from fnl_detector.build import build_detector  # noqa: E402
from fnl_detector.predictor import Predictor, onnxruntime_installed  # noqa: E402
from fnl_detector.spec import load_spec  # noqa: E402

VARIANTS = {
    "plain": {"optimize": False},
    "+parallel_ops": {"optimize": False, "parallel_ops": True},
    "+channels_last": {"optimize": True, "fold_bn": False},
    "+fold_bn": {"optimize": True, "backend": "torch"},
    "onnxruntime": {"optimize": True, "backend": "onnxruntime"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["mobile_parsing_rcnn_b", "mobile_parsing_rcnn_b_test_tuned"],
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--detections", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = benchmark_image(args.size).round().to(torch.uint8)
    pixels = image.permute(1, 2, 0).numpy()
    fns, labels = [], []
    for name in args.models:
        for variant, options in VARIANTS.items():
            if options.get("backend") == "onnxruntime" and not onnxruntime_installed():
                continue
            torch.manual_seed(0)
            spec = load_spec(name, benchmark_overrides(args.size, args.detections))
            model = build_detector(spec).eval()
            calibrate_batch_norm(model, [image.float()])
            predictor = Predictor.from_model(model, copy_model=False, **options)
            got = len(predictor(pixels)["boxes"])
            if got != args.detections:
                raise RuntimeError(f"{name} {variant}: {got} detections, not {args.detections}")
            fns.append(lambda p=predictor: p(pixels))
            labels.append((name, variant))
    times = time_models(fns, runs=args.runs, warmup=args.warmup)
    med = {label: median(t) for label, t in zip(labels, times)}
    rows = [
        {
            "model": name,
            "variant": variant,
            "median_ms": round(ms, 1),
            "ratio": round(med[(name, "plain")] / ms, 3),
            "threads": torch.get_num_threads(),
            "input_hw": list(image.shape[-2:]),
            "detections": args.detections,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "loadavg_1min": os.getloadavg()[0],
        }
        for (name, variant), ms in med.items()
    ]
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
