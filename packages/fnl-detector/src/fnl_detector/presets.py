"""Presets: spec files shipped as package data and advertised under ``fnl.presets``.

Each entry point names a :class:`Preset` attribute of this module
(``mobile_parsing_rcnn_b = "fnl_detector.presets:mobile_parsing_rcnn_b"``); the attribute is
created on first access from ``preset_specs/<name>.json``. A preset file may itself start from
another preset (``{"preset": "mobile_parsing_rcnn_b", ...}``). Presets set
``backbone.pretrained`` to false so that nothing downloads by surprise; for training, start from
ImageNet weights with ``--set backbone.pretrained=true``.

Plugins can ship presets too: an entry point naming any :class:`Preset` (or an object with a
``load() -> dict`` method) under ``fnl.presets``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fnl_core import groups, registry

_SPEC_DIR = "preset_specs"


@dataclass(frozen=True)
class Preset:
    """A named spec file. ``path`` is absolute, or relative to this package's preset folder."""

    name: str
    path: str
    description: str = ""
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def load(self) -> dict[str, Any]:
        """The preset's spec data (a fresh copy; may contain a ``"preset"`` key)."""
        if "data" not in self._cache:
            self._cache["data"] = json.loads(self._read())
        return copy.deepcopy(self._cache["data"])

    def _read(self) -> str:
        p = Path(self.path)
        if p.is_absolute():
            return p.read_text(encoding="utf-8")
        return resources.files("fnl_detector").joinpath(_SPEC_DIR, self.path).read_text("utf-8")


def builtin_preset_names() -> list[str]:
    """Names of the preset files shipped in this package."""
    folder = resources.files("fnl_detector").joinpath(_SPEC_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def _builtin(name: str) -> Preset:
    data = json.loads(
        resources.files("fnl_detector").joinpath(_SPEC_DIR, f"{name}.json").read_text("utf-8")
    )
    return Preset(name, f"{name}.json", data.get("description", ""))


_instances: dict[str, Preset] = {}


def __getattr__(name: str) -> Preset:
    """Entry points load ``fnl_detector.presets:<name>``: build that preset object lazily."""
    if name.startswith("_") or name not in builtin_preset_names():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _instances:
        _instances[name] = _builtin(name)
    return _instances[name]


def get_preset(name: str) -> Preset:
    """The preset registered as ``name`` under ``fnl.presets``."""
    obj = registry.get(groups.PRESETS, name)
    if not callable(getattr(obj, "load", None)):
        raise TypeError(f"fnl.presets entry {name!r} is {obj!r}, which has no load() method")
    return obj


__all__ = ["Preset", "builtin_preset_names", "get_preset"]
