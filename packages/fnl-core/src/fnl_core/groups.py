"""Entry-point group names: public API shared by every fnl package and by plugins.

A plugin advertises a component by adding an entry point to one of these groups in its own
``pyproject.toml``; the entry point names a pydantic config class (see :mod:`fnl_core.spec`).
A spec field holding a component carries its group as :class:`ComponentGroup` metadata
(``Component(group)`` in :mod:`fnl_core.spec`); :func:`component_group_of` reads it back, for
the spec's schema and for :func:`fnl_core.registry.provenance`. Standard library only.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

BACKBONES = "fnl.backbones"
NECKS = "fnl.necks"
RPN_HEADS = "fnl.rpn_heads"
BOX_HEADS = "fnl.box_heads"
DENSEPOSE_HEADS = "fnl.densepose_heads"
DENSEPOSE_PREDICTORS = "fnl.densepose_predictors"
DENSEPOSE_LOSSES = "fnl.densepose_losses"
DENSEPOSE_DECODERS = "fnl.densepose_decoders"
DENSEPOSE_EMBEDDERS = "fnl.densepose_embedders"
QUANTIZERS = "fnl.quantizers"
SURFACES = "fnl.surfaces"
EVALUATORS = "fnl.evaluators"
DATASETS = "fnl.datasets"
PRESETS = "fnl.presets"
SPECS = "fnl.specs"
MODELS = "fnl.models"
COMMANDS = "fnl.commands"
#: ``fnl eval --model``: predicting a dataset split with a model and scoring it, provided by the
#: package that runs models (fnl-detector's ``detector`` entry), so that fnl-eval needs none.
MODEL_EVALUATION = "fnl.model_evaluation"

#: Component groups, in the order ``fnl list`` shows them, with the fnl package that ships
#: the built-in entries of each (used in error messages).
COMPONENT_GROUPS: dict[str, str] = {
    BACKBONES: "fnl-backbones",
    NECKS: "fnl-necks",
    RPN_HEADS: "fnl-heads",
    BOX_HEADS: "fnl-heads",
    DENSEPOSE_HEADS: "fnl-heads",
    DENSEPOSE_PREDICTORS: "fnl-heads",
    DENSEPOSE_LOSSES: "fnl-heads",
    DENSEPOSE_DECODERS: "fnl-heads",
    DENSEPOSE_EMBEDDERS: "fnl-heads",
    QUANTIZERS: "fnl-quant",
    SURFACES: "fnl-eval",
    EVALUATORS: "fnl-eval",
    DATASETS: "fnl-data",
    PRESETS: "fnl-detector",
    SPECS: "fnl-detector",
    MODELS: "fnl-detector",
}

#: Every group the registry knows, including the CLI's subcommand group and the hooks.
ALL_GROUPS: dict[str, str] = {
    **COMPONENT_GROUPS,
    COMMANDS: "fnl-core",
    MODEL_EVALUATION: "fnl-detector",
}


def normalize_group(group: str) -> str:
    """Accept ``"necks"`` or ``"fnl.necks"``; return the full group name."""
    full = group if group.startswith("fnl.") else f"fnl.{group}"
    if full not in ALL_GROUPS:
        known = ", ".join(g.removeprefix("fnl.") for g in ALL_GROUPS)
        raise ValueError(f"unknown component group {group!r}; known groups: {known}")
    return full


@dataclass(frozen=True)
class ComponentGroup:
    """Field metadata marking a spec field as a component resolved through ``group``."""

    group: str


def annotation_group(annotation: Any) -> tuple[str | None, bool]:
    """(group, optional) if ``annotation`` is ``Component(g)`` or ``Component(g) | None``."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        for meta in typing.get_args(annotation)[1:]:
            if isinstance(meta, ComponentGroup):
                return meta.group, False
        return None, False
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        args = typing.get_args(annotation)
        if type(None) in args:
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1:
                group, _ = annotation_group(inner[0])
                return group, group is not None
    return None, False


def component_group_of(field: FieldInfo) -> str | None:
    """The registry group of a spec field declared ``Component(group)`` (optional or not)."""
    group, _ = annotation_group(field.annotation)
    if group is None:
        for meta in field.metadata:
            if isinstance(meta, ComponentGroup):
                return meta.group
    return group
