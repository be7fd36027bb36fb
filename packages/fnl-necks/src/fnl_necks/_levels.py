"""Choosing a neck's input features and naming its pyramid levels (no torch)."""

from __future__ import annotations

import math

from fnl_core.spec import ShapeSpec


def select_inputs(
    component: str, input_shape: dict[str, ShapeSpec], in_features: list[str] | None
) -> list[tuple[str, ShapeSpec, int]]:
    """The neck's inputs as ``(name, shape, level)`` sorted by stride, ``level = log2(stride)``.

    ``in_features`` picks a subset of ``input_shape`` (``None`` takes all). Strides must be
    powers of two that double from one input to the next, so that the levels are consecutive.
    """
    if not input_shape:
        raise ValueError(f"{component}: input_shape is empty; the backbone reported no features")
    names = list(input_shape) if in_features is None else list(in_features)
    missing = [n for n in names if n not in input_shape]
    if missing:
        raise ValueError(
            f"{component}: in_features {missing} are not backbone outputs; "
            f"available: {sorted(input_shape)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{component}: in_features {names} contains duplicates")
    chosen = sorted(((n, input_shape[n]) for n in names), key=lambda item: item[1].stride)
    out = []
    for name, shape in chosen:
        level = round(math.log2(shape.stride)) if shape.stride > 0 else -1
        if level < 1 or 2**level != shape.stride:
            raise ValueError(
                f"{component}: feature {name!r} has stride {shape.stride}; expected a power of 2"
            )
        if shape.channels <= 0:
            raise ValueError(f"{component}: feature {name!r} has {shape.channels} channels")
        out.append((name, shape, level))
    levels = [lv for _, _, lv in out]
    if levels != list(range(levels[0], levels[0] + len(levels))):
        strides = [s.stride for _, s, _ in out]
        raise ValueError(
            f"{component}: input strides {strides} must double from one feature to the next"
        )
    return out
