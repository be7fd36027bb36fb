"""The ``--model NAME`` / ``--weights PATH`` / ``--spec SPEC`` options of the commands that run
a model, and the model they choose (:func:`fnl_detector.loading.resolve_model`). Nothing here
imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fnl_detector.loading import ResolvedModel, resolve_model


def add_model_arguments(
    parser: argparse.ArgumentParser, *, weights: bool = True, spec: bool = True
) -> None:
    """Add ``--model NAME`` and, unless the command has its own, ``--weights`` / ``--spec``."""
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="a named model (fnl list models): its spec and weights, downloaded into the cache "
        "on first use; with --weights PATH, the card's spec and your local copy of the weights",
    )
    if weights:
        parser.add_argument(
            "--weights",
            metavar="PATH",
            help="FnL .safetensors weights or a reference .pth/.pkl checkpoint (converted on load)",
        )
    if spec:
        parser.add_argument(
            "--spec",
            metavar="SPEC",
            help="spec file or preset (default: the spec stored in the weights file, or spec.json "
            "next to it)",
        )


def model_from_args(args: argparse.Namespace, **options: Any) -> ResolvedModel:
    """:func:`~fnl_detector.loading.resolve_model` of the command's ``--model``, ``--weights``
    and ``--spec`` (those it has); ``options``: ``require_weights``, ``progress``."""
    return resolve_model(
        model=getattr(args, "model", None),
        weights=getattr(args, "weights", None),
        spec=getattr(args, "spec", None),
        **options,
    )


def is_toy_data(path: Path) -> bool:
    """Whether ``path`` is an image of the generated toy-humans data (its files live in a
    ``toy/<settings>/`` folder of the cache, ``$FNL_CACHE_DIR/toy/...`` by default)."""
    return "toy" in Path(path).resolve().parts[:-1]


def warn_toy_only(args: argparse.Namespace, files: Sequence[Path], command: str) -> None:
    """One line on stderr when ``--model`` names a model that knows only the synthetic toy
    people (its card's ``dataset`` is ``toy``) and some inputs are not toy data."""
    name = getattr(args, "model", None)
    if not name:
        return
    from fnl_core.models import get_card

    if get_card(name).dataset != "toy":
        return
    other = [f for f in files if not is_toy_data(f)]
    if other:
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        print(
            f"fnl {command}: warning: {name} was trained on synthetic toy people only (its AP is "
            f"on toy data); on other images ({other[0]}{more}) its detections mean little: use "
            "a model trained on DensePose-COCO (fnl list models, dataset coco)",
            file=sys.stderr,
        )


__all__ = ["add_model_arguments", "is_toy_data", "model_from_args", "warn_toy_only"]
