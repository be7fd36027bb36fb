"""Entry-point group names: public API shared by every fnl package and by plugins.

A plugin advertises a component by adding an entry point to one of these groups in its own
``pyproject.toml``; the entry point names a pydantic config class (see :mod:`fnl_core.spec`).
"""

from __future__ import annotations

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

#: Every group the registry knows, including the CLI's subcommand group.
ALL_GROUPS: dict[str, str] = {**COMPONENT_GROUPS, COMMANDS: "fnl-core"}


def normalize_group(group: str) -> str:
    """Accept ``"necks"`` or ``"fnl.necks"``; return the full group name."""
    full = group if group.startswith("fnl.") else f"fnl.{group}"
    if full not in ALL_GROUPS:
        known = ", ".join(g.removeprefix("fnl.") for g in ALL_GROUPS)
        raise ValueError(f"unknown component group {group!r}; known groups: {known}")
    return full
