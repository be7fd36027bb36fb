"""``fnl convert CHECKPOINT --from detectron2 --spec SPEC --out WEIGHTS.safetensors``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fnl_core.command import Command
from fnl_detector.commands import add_overrides_argument, check_spec_arguments, progress

_FORMATS = ("detectron2",)  # = fnl_detector.convert.SOURCE_FORMATS (kept light: no import)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="reference checkpoint: detectron2/DensePoseFnL .pth, detectron2 model-zoo .pkl",
    )
    parser.add_argument(
        "--from",
        dest="source_format",
        choices=_FORMATS,
        default="detectron2",
        help="checkpoint layout (DensePoseFnL writes detectron2's); default detectron2",
    )
    parser.add_argument(
        "--spec", required=True, help="the spec the weights are for: a preset name or spec file"
    )
    add_overrides_argument(
        parser, "override a spec field, e.g. --set input.format=BGR (repeatable)"
    )
    parser.add_argument("--out", required=True, help="output weights file (.safetensors)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the --out file if it exists"
    )


def _run(args: argparse.Namespace) -> int:
    if not args.out.endswith(".safetensors"):
        print(f"fnl convert: --out {args.out!r} must end with .safetensors", file=sys.stderr)
        return 2
    if not Path(args.checkpoint).is_file():  # before torch is imported (seconds)
        kind = "is not a file" if Path(args.checkpoint).exists() else "does not exist"
        print(f"fnl convert: checkpoint {args.checkpoint} {kind}", file=sys.stderr)
        return 2
    check_spec_arguments(args)  # a spec typo fails before torch is imported
    from fnl_core.outputs import check_output_file

    check_output_file(args.out, overwrite=args.overwrite)
    from fnl_detector.convert import ConversionError, convert_checkpoint

    progress("convert", f"reading {args.checkpoint} and building {args.spec}...")
    try:
        mapping = convert_checkpoint(
            args.checkpoint,
            args.spec,
            args.out,
            overrides=args.overrides,
            source_format=args.source_format,
        )
    except ConversionError as exc:
        print(f"fnl convert: {args.checkpoint}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {mapping.summary()}")
    return 0


command = Command(
    help="convert a detectron2 / DensePoseFnL checkpoint to FnL weights (.safetensors)",
    configure=_configure,
    run=_run,
    description="Maps every tensor of a reference checkpoint onto the model built from --spec "
    "(detectron2 names -> FnL names, shapes checked) and writes the model's weights as "
    "safetensors, with the resolved spec in the file's metadata. Fails, listing missing, "
    "unexpected and mis-shaped keys, when the checkpoint does not fit the spec. .pkl files are "
    "read without running code (numpy arrays only).",
)
