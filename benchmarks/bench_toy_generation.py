#!/usr/bin/env python3
"""Speed of toy-humans generation (render + JPEG + DensePose-COCO JSON), printed as JSON.

    uv run python benchmarks/bench_toy_generation.py [--images 100] [--width 320 --height 240]

Compares against a reference measured in the same run: rendering alone (no files), so the
ratio shows what writing JPEGs/RLEs/JSON costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from fnl_data.toy.generate import ToySettings, generate_split, render_sample, sample_rng


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    settings = ToySettings(width=args.width, height=args.height)

    render_sample(sample_rng(0, "warmup", 0), settings)
    t0 = time.perf_counter()
    for k in range(args.images):
        render_sample(sample_rng(0, "bench", k), settings)
    render_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gt = generate_split(settings, 0, "bench", args.images, Path(tmp), workers=args.workers)
        full_s = time.perf_counter() - t0
        json_mb = gt.stat().st_size / 1e6

    print(
        json.dumps(
            {
                "benchmark": "toy_generation",
                "images": args.images,
                "size": [args.width, args.height],
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "render_only_images_per_s": round(args.images / render_s, 1),
                "generate_split_images_per_s": round(args.images / full_s, 1),
                "files_overhead_ratio": round(full_s / render_s, 2),
                "json_mb_per_100_images": round(json_mb * 100 / args.images, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
