"""Resolve ``--data toy|coco:PATH`` into registered dataset configs, splits and a surface.

Datasets and surfaces come from the ``fnl.datasets`` / ``fnl.surfaces`` registry groups; nothing
here imports a data or evaluation package by name. No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fnl_core import groups, registry
from fnl_core.spec import deep_merge, format_validation_error, parse_override


@dataclass
class DataSource:
    """A dataset config (validated by its registered class) and what to do with it."""

    config: Any
    train_split: str
    val_split: str | None
    surface: str | None

    def build(self, split: str) -> Any:
        return self.config.build(split=split)


_DEFAULTS = {
    "toy": {"train_split": "train", "val_split": "val", "surface": "toy"},
    "coco": {"train_split": "train", "val_split": "minival", "surface": None},
}


def parse_data(
    text: str,
    options: list[str] | None = None,
    train_split: str | None = None,
    val_split: str | None = None,
    surface: str | None = None,
) -> DataSource:
    """``toy`` or ``coco:PATH`` (any registered dataset name, optionally ``name:root``).

    ``options`` are ``key=value`` strings for the dataset config (values parsed as JSON).
    """
    name, _, root = text.partition(":")
    cls = registry.get(groups.DATASETS, name)
    data: dict[str, Any] = {}
    if root:
        if "root" not in getattr(cls, "model_fields", {}):
            raise ValueError(f"--data {text}: dataset {name!r} takes no root path")
        data["root"] = root
    for opt in options or []:
        data = deep_merge(data, parse_override(opt))
    try:
        config = cls.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc).replace("\n", "; ")
        hint = ""
        if options:
            hint = (
                " (--data-set values are JSON: quote keys and strings, e.g. "
                "num_images='{\"train\": 40}')"
            )
        raise ValueError(f"--data {text}: invalid dataset options: {problems}{hint}") from None
    defaults = _DEFAULTS.get(name, {"train_split": "train", "val_split": None, "surface": None})
    return DataSource(
        config=config,
        train_split=train_split or defaults["train_split"],
        val_split=val_split if val_split is not None else defaults["val_split"],
        surface=surface if surface is not None else defaults["surface"],
    )
