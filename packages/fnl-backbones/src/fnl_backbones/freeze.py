"""Stem/stage layout of timm CNNs and freezing of the first stages.

A timm CNN is seen as ``stem -> stage 0 -> stage 1 -> ...``. The stages are found by the
containers timm families use (no family's internals are hard-coded beyond these names):

* ``blocks`` (EfficientNet, MobileNetV3, MixNet, MnasNet, FBNet...): ``blocks.0``, ``blocks.1``...
* ``stages`` (ConvNeXt, RegNet, CSPNet, ...): ``stages.0``, ``stages.1``...
* ``layer1``, ``layer2``... (ResNet family).

The stem is every top-level child registered before the first stage container (for example
``conv_stem`` + ``bn1``, or ``conv1`` + ``bn1`` + ``act1`` + ``maxpool``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fnl_backbones.norm import freeze_batch_norm


@dataclass(frozen=True)
class StageLayout:
    """Names (relative to the model) of the stem's top-level children and of the stages."""

    stem: tuple[str, ...]
    stages: tuple[str, ...]


def stage_layout(model: nn.Module) -> StageLayout | None:
    """The stem/stage layout of ``model``, or None when no known stage container is found."""
    children = [name for name, _ in model.named_children()]
    for container in ("blocks", "stages"):
        seq = getattr(model, container, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and container in children:
            stem = tuple(children[: children.index(container)])
            stages = tuple(f"{container}.{name}" for name, _ in seq.named_children())
            return StageLayout(stem, stages)
    layers = []
    i = 1
    while f"layer{i}" in children:
        layers.append(f"layer{i}")
        i += 1
    if layers:
        return StageLayout(tuple(children[: children.index("layer1")]), tuple(layers))
    return None


def stage_of(layout: StageLayout, module_name: str) -> int | None:
    """Index of the stage containing ``module_name`` (e.g. ``"blocks.1.2.conv_pwl"`` -> 1)."""
    for i, stage in enumerate(layout.stages):
        if module_name == stage or module_name.startswith(stage + "."):
            return i
    return None


def default_freeze_at(layout: StageLayout | None, feature_info: list[dict]) -> int:
    """The reference rule: freeze the stem and every stage up to the stride-4 feature's stage.

    ``feature_info`` is timm's full feature list of the model (all indices). DensePoseFnL reads
    the block index from feature 1's module name (``blocks.1.2.conv_pwl`` -> stem, blocks 0
    and 1 frozen); feature 1 is the stride-4 one for the paper backbones, so this looks the
    stride-4 feature up by its reduction. Returns 0 (nothing frozen) when the layout is unknown
    or the model has no stride-4 feature.
    """
    if layout is None:
        return 0
    for info in feature_info:
        if info.get("reduction") == 4:
            index = stage_of(layout, str(info.get("module", "")))
            return 0 if index is None else index + 1
    return 0


def freeze_stages(model: nn.Module, layout: StageLayout | None, freeze_at: int) -> list[str]:
    """Set ``requires_grad=False`` on the stem and the first ``freeze_at`` stages.

    BatchNorms inside the frozen part become frozen BatchNorms too (as detectron2 does), so
    their statistics stop updating whatever the backbone's ``norm`` option. Returns the names
    of the frozen top-level parts.
    """
    if freeze_at == 0:
        return []
    if layout is None:
        raise ValueError(
            f"freeze_at={freeze_at}: cannot find the stages of {type(model).__name__} "
            "(no `blocks`, `stages` or `layer1..` container); use freeze_at=0"
        )
    if freeze_at > len(layout.stages):
        raise ValueError(
            f"freeze_at={freeze_at} but the backbone has only {len(layout.stages)} stages "
            f"({', '.join(layout.stages)}); use 0..{len(layout.stages)}"
        )
    parts = [*layout.stem, *layout.stages[:freeze_at]]
    for name in parts:
        part = model.get_submodule(name)
        for p in part.parameters():
            p.requires_grad_(False)
        frozen = freeze_batch_norm(part)
        if frozen is not part:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, frozen)
    return parts


__all__ = ["StageLayout", "default_freeze_at", "freeze_stages", "stage_layout", "stage_of"]
