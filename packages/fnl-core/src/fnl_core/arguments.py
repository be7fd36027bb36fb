"""argparse types shared by every ``fnl`` command (no torch, no numpy).

They reject nonsense at parse time with a one-line message (``--iters 0`` is an error, not
"use the default").
"""

from __future__ import annotations

import argparse
import math
from typing import Any


def _number(text: str, kind: type, minimum: float, strict: bool) -> Any:
    bound = f"{'>' if strict else '>='} {minimum:g}"
    expected = f"{'an integer' if kind is int else 'a number'} {bound}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
    if value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    return _number(text, int, 0, strict=True)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, 0, strict=False)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, 0, strict=True)


def score_fraction(text: str) -> float:
    """argparse type: a score threshold in [0, 1]."""
    value = _number(text, float, 0, strict=False)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_min_score_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--min-score`` option of the commands that draw or keep detections (default 0.8);
    ``what`` says what keeps the detections above it."""
    parser.add_argument(
        "--min-score",
        type=score_fraction,
        default=0.8,
        help=f"{what} keep detections above this score, in [0, 1] (default 0.8)",
    )


__all__ = [
    "add_min_score_argument",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "score_fraction",
]
