"""``fnl train``: train a detector spec or preset on a registered dataset.

Single process: ``fnl train mobile_parsing_rcnn_b --data toy --out runs/b --iters 2000``.
Several GPUs / nodes: ``torchrun --nproc-per-node 8 $(which fnl) train ...`` (see
docs/training.md). Heavy imports happen inside ``run`` so ``fnl --help`` stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fnl_core.command import Command
from fnl_core.errors import InputError
from fnl_detector.commands import (
    add_overrides_argument,
    load_spec_early,
    non_negative_int,
    positive_float,
    positive_int,
)

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it (SIGTERM: 143).
EXIT_INTERRUPTED = 130

RECIPES = ("auto", "cpu-toy", "paper")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``fnl train`` and ``fnl demo``."""
    parser.add_argument(
        "--iters", type=positive_int, help="optimiser steps (steps/warm-up scale with it)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, help="images per step over all processes"
    )
    parser.add_argument(
        "--lr", type=positive_float, help="base learning rate (paper: 0.002 at batch 16)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    parser.add_argument("--seed", type=non_negative_int, default=None, help="default 0")
    parser.add_argument(
        "--num-workers", type=non_negative_int, default=None, help="data-loading processes"
    )
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


def explicit_options(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Trainer options the user gave (command-line flags, then ``train.*`` overrides)."""
    explicit = {
        "iters": getattr(args, "iters", None),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": args.device,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "eval_period": getattr(args, "eval_period", None),
        "max_minutes": getattr(args, "minutes", None),
    }
    return {**{k: v for k, v in explicit.items() if v is not None}, **options}


def train_config(
    args: argparse.Namespace,
    options: dict[str, Any],
    default_iters: int | None,
    recipe_options: dict[str, Any] | None = None,
    schedule: str = "s1x",
) -> Any:
    """The reference ``schedule`` scaled to ``--iters`` (else ``default_iters``, else its own
    length), then the recipe's trainer options, then what the user set explicitly."""
    from fnl_detector.train.config import SCHEDULES, TrainConfig

    given = explicit_options(args, options)
    iters = given.pop("iters", default_iters or SCHEDULES[schedule][0])
    return TrainConfig.scaled(iters, schedule, **{**(recipe_options or {}), **given})


def choose_recipe(choice: str, data: str, device: str | None) -> str:
    """``auto``: ``cpu-toy`` for toy data on a CPU (no CUDA, or ``--device cpu``), else
    ``paper``. Imports torch only when it must ask about CUDA."""
    if choice != "auto":
        return choice
    if data.partition(":")[0] != "toy" or device == "cuda":
        return "paper"
    if device == "cpu":
        return "cpu-toy"
    import torch

    return "paper" if torch.cuda.is_available() else "cpu-toy"


def recipe_line(
    recipe: str, choice: str, config: Any, spec: Any, init_weights: str | None = None
) -> str:
    """The one line printed at the start of a run: which recipe and its key settings."""
    sizes = "/".join(str(v) for v in spec.input.min_size_train)
    steps = f"{config.max_minutes:g} min" if config.max_minutes else f"{config.iters} steps"
    common = f"{sizes} px, batch {config.batch_size}, lr {config.lr:g}, {steps}"
    if recipe == "cpu-toy":
        why = " (chosen for toy data on a CPU)" if choice == "auto" else ""
        start = f"from {init_weights}" if init_weights else "from scratch"
        return (
            f"fnl train: recipe cpu-toy{why}: {start}, trainable BN, {common}; "
            "--recipe paper for the spec's own settings"
        )
    return f"fnl train: recipe paper (the spec's own settings): {common}"


def initial_model(spec: Any, weights: Path, seed: int, verbose: bool) -> Any:
    """The spec's detector with ``weights`` loaded (strict: every tensor must fit)."""
    from fnl_detector import build_detector
    from fnl_detector.loading import load_weights
    from fnl_detector.train.rng import seed_all

    seed_all(seed)
    model = build_detector(spec)
    load_weights(model, weights)
    if verbose:
        print(f"fnl train: starting from the weights in {weights}")
    return model


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file (.json/.yaml) or preset name")
    parser.add_argument(
        "--data", required=True, help="toy | coco:PATH (any registered dataset, name[:root])"
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, metrics)")
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default="auto",
        help="cpu-toy: the settings that train on a CPU in minutes (fnl_detector.train.recipes; "
        "from scratch, trainable BN, 240 px, batch 2, lr 0.02, 2000 steps); paper: the spec's "
        "own (batch 16, lr 0.002, its reference schedule: 130k or 390k steps); auto "
        "(default): cpu-toy for toy data on a CPU, else paper. --set, --batch-size, --lr, "
        "--iters override either",
    )
    add_common_arguments(parser)
    run = parser.add_mutually_exclusive_group()
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its saved spec and "
        "trainer options",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="delete the run already in --out and start anew"
    )
    parser.add_argument(
        "--init-weights",
        metavar="PATH",
        help="start from these weights instead of the spec's initialisation (fine-tuning or a "
        "longer schedule from a trained model): FnL .safetensors or a reference .pth/.pkl; the "
        "optimizer, schedule and data order start fresh. Not with --resume",
    )
    parser.add_argument(
        "--eval-period", type=non_negative_int, help="evaluate every N iterations (0: at end)"
    )
    parser.add_argument(
        "--minutes", type=positive_float, help="training time budget (fits --iters to it)"
    )
    parser.add_argument("--train-split", help="default: train")
    parser.add_argument("--val-split", help="held-out split (toy: val, coco: minival); '' = none")
    parser.add_argument(
        "--surface", help="registered body surface for GPS (toy data: toy; coco: needs smpl)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _early_checks(args: argparse.Namespace, spec_overrides: list[str]) -> None:
    """Everything that can be checked without torch: the run folder and the spec(s)."""
    from fnl_core.cli import CliError
    from fnl_core.outputs import check_output_dir
    from fnl_detector.train.rundir import existing_run_files

    out = Path(args.out)
    check_output_dir(out)  # a path that cannot be written fails now, in one line
    if args.resume:
        if not (out / "checkpoints").is_dir():
            raise CliError(f"--resume: {out} holds no run to resume (no checkpoints/ folder)")
        return
    found = existing_run_files(out) if os.environ.get("RANK", "0") == "0" else []
    if found and not args.overwrite:  # only rank 0 checks: it writes the run files
        raise CliError(
            f"--out {out} already holds a run ({', '.join(found)}); continue it with --resume, "
            "pick a new --out, or replace it with --overwrite"
        )
    load_spec_early(args.spec, spec_overrides)
    if args.recipe in ("auto", "cpu-toy") and args.data.partition(":")[0] == "toy":
        cpu_toy_spec(args.spec, spec_overrides)


def cpu_toy_spec(spec: Any, spec_overrides: list[str]) -> tuple[Any, list[str]]:
    """The spec with the cpu-toy recipe's overrides that its components have (then the user's
    ``--set``), and the recipe overrides it skipped (keys the chosen components lack, such as
    ``backbone.pretrained`` of a third-party backbone). No torch import."""
    from fnl_detector.spec import load_spec
    from fnl_detector.train.recipes import TOY_CPU_SPEC_OVERRIDES, applicable_overrides

    own = load_spec(spec, spec_overrides).to_dict()
    kept, skipped = applicable_overrides(own, TOY_CPU_SPEC_OVERRIDES)
    return load_spec(spec, kept + spec_overrides), skipped


def resumed_spec(run_dir: Path, spec_overrides: list[str]) -> Any:
    """The spec saved in ``run_dir``; ``--set`` overrides may only repeat what it holds."""
    from fnl_core.cli import CliError
    from fnl_detector.spec import load_spec
    from fnl_detector.train.rundir import SPEC_FILE

    path = run_dir / SPEC_FILE
    if not path.is_file():
        raise CliError(f"--resume: {path} is missing; the run's spec cannot be restored")
    saved = load_spec(path)
    spec = load_spec(path, spec_overrides)
    if spec.to_dict() != saved.to_dict():
        changed = _changed_keys(saved.to_dict(), spec.to_dict())
        raise CliError(
            f"--resume: --set changes the run's spec ({', '.join(changed)}; saved in {path}); "
            "resume without it, or start a new run with --out"
        )
    return saved


def resumed_config(run_dir: Path, given: dict[str, Any]) -> Any:
    """The trainer options saved in ``run_dir`` updated with what was given now."""
    from fnl_core.cli import CliError
    from fnl_detector.train.config import TrainConfig
    from fnl_detector.train.rundir import CONFIG_FILE

    path = run_dir / CONFIG_FILE
    saved = TrainConfig.model_validate_json(path.read_text()) if path.is_file() else TrainConfig()
    for key, flag in (("iters", "--iters"), ("max_minutes", "--minutes")):
        if key in given and given[key] != getattr(saved, key):
            raise CliError(
                f"--resume continues the run's schedule ({key}={getattr(saved, key)} in {path}); "
                f"{flag} {given[key]} cannot change it: resume without {flag}, or start a new run"
            )
    return TrainConfig.model_validate({**saved.model_dump(), **given})


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [c for k in keys for c in _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _run(args: argparse.Namespace) -> int:
    spec_overrides, train_options = split_overrides(args.overrides)
    _early_checks(args, spec_overrides)  # fails before torch is imported

    from fnl_detector.loading import select_device
    from fnl_detector.spec import load_spec
    from fnl_detector.train import distributed as dist_utils
    from fnl_detector.train.evaluate import require_evaluator
    from fnl_detector.train.loop import Trainer, TrainingInterrupted
    from fnl_detector.train.recipes import TOY_CPU_ITERS, TOY_CPU_TRAIN_OPTIONS
    from fnl_detector.train.sources import parse_data

    out = Path(args.out)
    info = dist_utils.from_env()
    if args.init_weights:
        if args.resume:
            raise InputError("--init-weights starts a new run; --resume continues one: pick one")
        if not Path(args.init_weights).is_file():
            raise InputError(f"--init-weights {args.init_weights}: no such file")
    # --data and --data-set are checked before the recipe is chosen and announced
    source = parse_data(
        args.data, args.data_options, args.train_split, args.val_split, args.surface
    )
    if source.val_split:  # fnl-eval is optional: fail now, not after training
        require_evaluator(source.surface, purpose="fnl train's evaluation")
    if args.resume:
        spec = resumed_spec(out, spec_overrides)
        config = resumed_config(out, explicit_options(args, train_options))
        if info.is_main:
            print(f"fnl train: resuming {out} with its saved spec and trainer options")
    else:
        recipe = choose_recipe(args.recipe, args.data, args.device)
        skipped: list[str] = []
        if recipe == "cpu-toy":
            spec, skipped = cpu_toy_spec(args.spec, spec_overrides)
            config = train_config(args, train_options, TOY_CPU_ITERS, TOY_CPU_TRAIN_OPTIONS)
        else:
            spec = load_spec(args.spec, spec_overrides)
            config = train_config(args, train_options, None, schedule=spec.schedule)
        if info.is_main:
            print(recipe_line(recipe, args.recipe, config, spec, args.init_weights))
            if skipped:
                print(
                    f"fnl train: recipe {recipe}: skipped {', '.join(skipped)} (not options "
                    "of this spec's components)"
                )
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
    model = None
    if args.init_weights:
        model = initial_model(spec, Path(args.init_weights), config.seed, info.is_main)
    trainer = Trainer(
        config,
        train_set,
        out,
        model=model,
        spec=spec,
        eval_set=eval_set,
        surface=source.surface,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    try:
        summary = trainer.train()
    except TrainingInterrupted as stop:
        if info.is_main:
            print(interrupted_message(stop), file=sys.stderr)
        dist_utils.shutdown()
        return interrupted_status(stop)
    if info.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "eval"}, indent=2))
        if summary.get("eval"):
            print(format_eval(summary["eval"]))
    dist_utils.shutdown()
    return 0


def interrupted_message(stop: Any) -> str:
    """The line printed when a :class:`~fnl_detector.train.loop.TrainingInterrupted` ends a run."""
    import signal

    name = signal.Signals(stop.signum).name
    where = f"checkpoint {stop.checkpoint}" if stop.checkpoint else "no checkpoint"
    return (
        f"fnl train: interrupted at iteration {stop.iteration}; {where}; continue with the "
        f"same command and --resume ({name})"
    )


def interrupted_status(stop: Any) -> int:
    """Exit status after an interruption: 128 + the signal number, as shells report it (130
    after Ctrl-C, 143 after SIGTERM)."""
    return 128 + int(getattr(stop, "signum", EXIT_INTERRUPTED - 128))


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
