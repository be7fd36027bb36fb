"""fnl-detector's named models: model cards advertised under ``fnl.models`` (no torch).

``zoo.json`` holds the released reference models (detectron2's DensePose model zoo and
DensePoseFnL's checkpoints), copied from their pages with the source named per entry; other
``<name>.json`` files in this folder are cards of models whose weights ship in this folder
(``mobile_parsing_rcnn_b_toy``). Entry points name module attributes
(``densepose_rcnn_r_50_fpn_s1x = "fnl_detector.model_zoo:densepose_rcnn_r_50_fpn_s1x"``),
created on first access.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from fnl_core.models import ModelCard, ModelCardError

_ZOO_FILE = "zoo.json"


@cache
def _zoo_entries() -> dict[str, dict]:
    text = resources.files(__name__).joinpath(_ZOO_FILE).read_text(encoding="utf-8")
    return {entry["name"]: entry for entry in json.loads(text)["models"]}


def _card_files() -> list[str]:
    folder = resources.files(__name__)
    return sorted(
        p.name for p in folder.iterdir() if p.name.endswith(".json") and p.name != _ZOO_FILE
    )


def builtin_model_names() -> list[str]:
    """Names of every card shipped in this package (zoo entries and card files)."""
    return sorted({*_zoo_entries(), *(f[: -len(".json")] for f in _card_files())})


@cache
def card(name: str) -> ModelCard:
    """The shipped card called ``name``."""
    if f"{name}.json" in _card_files():
        return ModelCard.from_resource(__name__, f"{name}.json")
    entry = _zoo_entries().get(name)
    if entry is None:
        raise ModelCardError(f"fnl_detector.model_zoo has no card named {name!r}")
    data = {"package": __name__, "dataset": "coco", **entry}  # the zoo: DensePose-COCO models
    return ModelCard.validated(data, f"{__name__}/{_ZOO_FILE}:{name}")


def __getattr__(name: str) -> ModelCard:
    """Entry points load ``fnl_detector.model_zoo:<name>``: the card, built lazily."""
    if name.startswith("_") or name not in builtin_model_names():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return card(name)


__all__ = ["builtin_model_names", "card"]
