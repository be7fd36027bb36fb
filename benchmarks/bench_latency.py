"""CPU/GPU latency of detector presets and of the inference speed-ups (prints JSON).

    uv run python benchmarks/bench_latency.py [--size 512] [--detections 5] [--runs 5]
        [--threads 2] [--models densepose_rcnn_r50_fpn mobile_parsing_rcnn_b ...]

For each model, four variants run alternately in this process on the same fixed image with
exactly K detections (BatchNorm calibrated on the image, see fnl_detector.analysis):

* ``no_grad``: ``torch.no_grad()``, BatchNorm kept, NCHW;
* ``inference_mode``: ``torch.inference_mode()`` instead;
* ``+fold_bn``: BatchNorm folded into the preceding convs;
* ``+channels_last``: and channels_last memory format.

``ratio`` is the speed-up over the model's ``no_grad`` variant; ``vs_first`` the speed-up of the
model's fastest variant over the first model's fastest (ratios, not absolute times, compare
across machines).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from fnl_detector.analysis import benchmark_image, median, prepare_benchmark_model, time_models

VARIANTS = {
    "no_grad": {"fold_bn": False, "channels_last": False, "mode": torch.no_grad},
    "inference_mode": {"fold_bn": False, "channels_last": False, "mode": torch.inference_mode},
    "+fold_bn": {"fold_bn": True, "channels_last": False, "mode": torch.inference_mode},
    "+channels_last": {"fold_bn": True, "channels_last": True, "mode": torch.inference_mode},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            "densepose_rcnn_r50_fpn",
            "mobile_parsing_rcnn_b",
            "mobile_parsing_rcnn_b_test_tuned",
        ],
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--detections", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = benchmark_image(args.size)
    fns, labels = [], []
    for name in args.models:
        for variant, opts in VARIANTS.items():
            torch.manual_seed(0)
            model = prepare_benchmark_model(
                name,
                image,
                args.detections,
                fold_bn=opts["fold_bn"],
                channels_last=opts["channels_last"],
            )

            def fn(model=model, mode=opts["mode"]):
                with mode():
                    return model([image])

            fns.append(fn)
            labels.append((name, variant))
    times = time_models(fns, runs=args.runs, warmup=args.warmup)
    med = {label: median(t) for label, t in zip(labels, times)}
    best = {n: min(v for (m, _), v in med.items() if m == n) for n in args.models}
    rows = [
        {
            "model": name,
            "variant": variant,
            "median_ms": round(ms, 1),
            "ratio": round(med[(name, "no_grad")] / ms, 3),
            "vs_first": round(best[args.models[0]] / best[name], 2),
            "threads": torch.get_num_threads(),
            "input_hw": list(image.shape[-2:]),
            "detections": args.detections,
        }
        for (name, variant), ms in med.items()
    ]
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
