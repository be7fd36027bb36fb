"""``fnl demo``: toy data → train Mobile Parsing R-CNN (B) from scratch on CPU → evaluate.

Generates the synthetic toy-humans dataset, trains ``mobile_parsing_rcnn_b`` with the CPU recipe
of :mod:`fnl_detector.train.recipes` for ``--minutes``, evaluates box / GPS / GPSm AP on the
held-out split, writes predictions next to ground truth (``predictions.png``) and prints a
table: parameters, weights size, latency, box AP, GPS AP.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import non_negative_int, positive_float, positive_int


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--minutes",
        type=positive_float,
        default=4.0,
        help="training time budget in minutes (default 4)",
    )
    parser.add_argument("--out", default="fnl-demo", help="output folder (default ./fnl-demo)")
    parser.add_argument("--train-images", type=positive_int, default=300)
    parser.add_argument("--val-images", type=positive_int, default=30)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--no-progress", action="store_true")


def measure_latency(predictor: Any, images: list[Any], warmup: int = 2) -> float:
    """Mean time per image in milliseconds of a :class:`~fnl_detector.Predictor` (batch of one,
    preprocessing included, after warm-up)."""
    import torch

    for image in images[:warmup]:
        predictor(image)
    start = time.perf_counter()
    for image in images:
        predictor(image)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return 1000.0 * (time.perf_counter() - start) / max(len(images), 1)


def write_gallery(predictor: Any, dataset: Any, out_path: Path, count: int = 3) -> None:
    """Predictions (left) next to ground truth (right) for the first ``count`` images."""
    import numpy as np
    from PIL import Image

    from fnl_core.visualize import draw_ground_truth, draw_prediction, side_by_side

    rows = []
    for record in dataset.records[:count]:
        image = dataset.load_image(record)
        pred = predictor(image, iuv=True)
        left = draw_prediction(
            image, pred["boxes"].numpy(), pred["scores"].numpy(), pred["charts"], min_score=0.5
        )
        right = draw_ground_truth(image, record)
        rows.append(side_by_side(left, right, ("prediction (score > 0.5)", "ground truth")))
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    Image.fromarray(np.concatenate(padded)).save(out_path)


def _run(args: argparse.Namespace) -> int:
    import torch

    from fnl_core import groups, registry
    from fnl_detector.predictor import Predictor
    from fnl_detector.spec import load_spec
    from fnl_detector.train.config import TrainConfig
    from fnl_detector.train.evaluate import require_evaluator
    from fnl_detector.train.loop import Trainer
    from fnl_detector.train.recipes import (
        TOY_CPU_SPEC_OVERRIDES,
        TOY_CPU_TRAIN_OPTIONS,
        TOY_SIZE,
        cpu_threads,
    )

    out = Path(args.out)
    require_evaluator("toy", purpose="fnl demo's evaluation")
    t0 = time.perf_counter()
    data_cfg = registry.get(groups.DATASETS, "toy")(
        num_images={"train": args.train_images, "val": args.val_images}, seed=args.seed
    )
    print(f"generating toy data ({args.train_images} train / {args.val_images} val images)...")
    train_set, val_set = data_cfg.build(split="train"), data_cfg.build(split="val")
    print(f"  data ready in {time.perf_counter() - t0:.0f} s ({data_cfg.cache_folder()})")

    spec = load_spec("mobile_parsing_rcnn_b", TOY_CPU_SPEC_OVERRIDES)
    config = TrainConfig.scaled(
        100_000,
        **{
            **TOY_CPU_TRAIN_OPTIONS,
            "max_minutes": args.minutes,
            "seed": args.seed,
            "device": args.device,
            "num_threads": cpu_threads(),
        },
    )
    print(
        f"training mobile_parsing_rcnn_b from scratch for {args.minutes:g} min "
        f"(batch {config.batch_size}, lr {config.lr}, {config.device}, "
        f"{config.num_threads} thread(s))..."
    )
    trainer = Trainer(
        config,
        train_set,
        out,
        spec=spec,
        eval_set=val_set,
        surface="toy",
        overwrite=True,  # a demo folder holds the last demo: running it again replaces it
        progress=not args.no_progress,
    )
    summary = trainer.train()
    model = trainer.model

    weights = out / "model.safetensors"
    params = sum(p.numel() for p in model.parameters())
    predictor = Predictor.from_model(model.eval(), optimize=True)
    images = [val_set.load_image(r) for r in val_set.records[:10]]
    latency = measure_latency(predictor, images)
    write_gallery(predictor, val_set, out / "predictions.png")
    ev = summary.get("eval") or {}
    row = {
        "params": params,
        "size_mb": weights.stat().st_size / 1e6,
        "latency_ms": latency,
        "box_AP": 100 * ev.get("bbox", {}).get("AP", 0.0),
        "gps_AP": 100 * ev.get("gps", {}).get("AP", 0.0),
        "gpsm_AP": 100 * ev.get("gpsm", {}).get("AP", 0.0),
        "iterations": summary["iterations"],
        "train_minutes": summary["train_seconds"] / 60,
        "total_minutes": (time.perf_counter() - t0) / 60,
        "threads": torch.get_num_threads(),
    }
    (out / "demo_summary.json").write_text(json.dumps(row, indent=2))
    print()
    print(
        f"{'model':24s} {'params':>10s} {'size MB':>8s} {'latency ms':>11s} "
        f"{'box AP':>7s} {'GPS AP':>7s} {'GPSm AP':>8s}"
    )
    print(
        f"{'mobile_parsing_rcnn_b':24s} {params:>10,d} {row['size_mb']:>8.1f} "
        f"{latency:>11.0f} {row['box_AP']:>7.1f} {row['gps_AP']:>7.1f} {row['gpsm_AP']:>8.1f}"
    )
    print(
        f"\n{summary['iterations']} iterations in {row['train_minutes']:.1f} min; "
        f"latency at {TOY_SIZE} px short side, "
        f"{row['threads']} threads. Files in {out}: predictions.png, loss_curve.png, "
        "metrics.jsonl, metrics_eval.json, model.safetensors"
    )
    return 0


command = Command(
    help="train Mobile Parsing R-CNN (B) on toy data on CPU for a few minutes, then evaluate",
    configure=_configure,
    run=_run,
)
