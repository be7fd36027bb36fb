"""``fnl train``: train a detector spec or preset on a registered dataset.

Single process: ``fnl train mobile_parsing_rcnn_b --data toy --out runs/b --iters 2000``.
Several GPUs / nodes: ``torchrun --nproc-per-node 8 $(which fnl) train ...`` (see
docs/training.md). Heavy imports happen inside ``run`` so ``fnl --help`` stays light.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import add_overrides_argument


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``fnl train`` and ``fnl demo``."""
    parser.add_argument("--iters", type=int, help="optimiser steps (steps/warm-up scale with it)")
    parser.add_argument("--batch-size", type=int, help="images per step over all processes")
    parser.add_argument("--lr", type=float, help="base learning rate (paper: 0.002 at batch 16)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading processes")
    add_overrides_argument(
        parser,
        "spec overrides (input.min_size_train=[240]); train.KEY=VALUE sets a trainer "
        "option (train.clip_grad_norm=5, train.checkpoint_period=500, ...)",
    )
    parser.add_argument(
        "--data-set",
        dest="data_options",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help='dataset options, e.g. num_images=\'{"train": 500, "val": 50}\' width=320',
    )


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Separate ``train.*`` overrides (trainer options) from spec overrides."""
    from fnl_core.spec import parse_override

    spec_overrides: list[str] = []
    train_options: dict[str, Any] = {}
    for text in overrides:
        if text.startswith("train."):
            train_options.update(parse_override(text[len("train.") :]))
        else:
            spec_overrides.append(text)
    return spec_overrides, train_options


def train_config(args: argparse.Namespace, options: dict[str, Any], default_iters: int) -> Any:
    from fnl_detector.train.config import TrainConfig

    explicit = {
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": args.device,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "eval_period": getattr(args, "eval_period", None),
        "max_minutes": getattr(args, "minutes", None),
    }
    explicit = {k: v for k, v in explicit.items() if v is not None}
    return TrainConfig.scaled(args.iters or default_iters, **{**explicit, **options})


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file (.json/.yaml) or preset name")
    parser.add_argument(
        "--data", required=True, help="toy | coco:PATH (any registered dataset, name[:root])"
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, metrics)")
    add_common_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--eval-period", type=int, help="evaluate every N iterations (0: at end)")
    parser.add_argument("--minutes", type=float, help="training time budget (fits --iters to it)")
    parser.add_argument("--train-split", help="default: train")
    parser.add_argument("--val-split", help="held-out split (toy: val, coco: minival); '' = none")
    parser.add_argument(
        "--surface", help="registered body surface for GPS (toy data: toy; coco: needs smpl)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    from fnl_detector.spec import load_spec
    from fnl_detector.train import distributed as dist_utils
    from fnl_detector.train.evaluate import require_evaluator
    from fnl_detector.train.loop import Trainer, select_device
    from fnl_detector.train.sources import parse_data

    spec_overrides, train_options = split_overrides(args.overrides)
    spec = load_spec(args.spec, spec_overrides)
    config = train_config(args, train_options, default_iters=130_000)
    source = parse_data(
        args.data, args.data_options, args.train_split, args.val_split, args.surface
    )
    if source.val_split:  # fnl-eval is optional: fail now, not after training
        require_evaluator(source.surface, purpose="fnl train's evaluation")
    info = dist_utils.from_env()
    dist_utils.init(info, select_device(config.device, info.local_rank))
    # rank 0 generates / indexes the data first; the others then read the cached files
    if not info.is_main:
        dist_utils.barrier()
    train_set = source.build(source.train_split)
    eval_set = source.build(source.val_split) if source.val_split else None
    if info.is_main:
        dist_utils.barrier()
    if eval_set is not None and source.surface is None:
        print("fnl train: no --surface given for this dataset; GPS AP will not be computed")
    trainer = Trainer(
        config,
        train_set,
        args.out,
        spec=spec,
        eval_set=eval_set,
        surface=source.surface,
        resume=args.resume,
        progress=not args.no_progress,
    )
    summary = trainer.train()
    if info.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "eval"}, indent=2))
        if summary.get("eval"):
            print(format_eval(summary["eval"]))
    dist_utils.shutdown()
    return 0


def format_eval(result: dict[str, Any]) -> str:
    """One line per metric family: AP, AP50, AP75 (percent)."""
    lines = [
        f"evaluation at iteration {result.get('iteration')} "
        f"({result.get('num_images')} images, {result.get('num_detections')} detections)"
    ]
    for name in ("bbox", "segm", "gps", "gpsm"):
        stats = result.get(name)
        if isinstance(stats, dict):
            lines.append(
                f"  {name:5s} AP {100 * stats.get('AP', 0):5.1f}  "
                f"AP50 {100 * stats.get('AP50', 0):5.1f}  "
                f"AP75 {100 * stats.get('AP75', 0):5.1f}"
            )
    return "\n".join(lines)


command = Command(
    help="train a detector (spec or preset) on a dataset; checkpoints, logs, evaluation",
    configure=_configure,
    run=_run,
)
