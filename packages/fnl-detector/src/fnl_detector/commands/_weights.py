"""The ``--model NAME`` / ``--weights PATH`` / ``--spec SPEC`` options of the commands that run
a model, and the model they choose (:func:`fnl_detector.loading.resolve_model`). Nothing here
imports torch.
"""

from __future__ import annotations

import argparse
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


__all__ = ["add_model_arguments", "model_from_args"]
