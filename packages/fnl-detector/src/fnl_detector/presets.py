"""fnl-detector's presets: the spec files in ``preset_specs/``, advertised under ``fnl.presets``.

They use the same route as any plugin (:class:`fnl_core.presets.PresetFile`, see
docs/plugins.md): each entry point names an attribute of this module
(``mobile_parsing_rcnn_b = "fnl_detector.presets:mobile_parsing_rcnn_b"``), and the attribute is
a :class:`~fnl_core.presets.PresetFile` for ``preset_specs/<name>.json``, created on first
access. Presets set ``backbone.pretrained`` to false so that nothing downloads by surprise; for
training, start from ImageNet weights with ``--set backbone.pretrained=true``.
"""

from __future__ import annotations

from typing import Any

from fnl_core import groups, registry
from fnl_core.presets import PresetFile, preset_folder

_SPEC_DIR = "preset_specs"


def builtin_preset_names() -> list[str]:
    """Names of the preset files shipped in this package."""
    return preset_folder(__name__, _SPEC_DIR)


_instances: dict[str, PresetFile] = {}


def __getattr__(name: str) -> PresetFile:
    """Entry points load ``fnl_detector.presets:<name>``: the preset object, made on first use."""
    if name.startswith("_") or name not in builtin_preset_names():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _instances:
        _instances[name] = PresetFile(__name__, f"{_SPEC_DIR}/{name}.json")
    return _instances[name]


def get_preset(name: str) -> Any:
    """The preset registered as ``name`` under ``fnl.presets`` (an object with ``load()``)."""
    obj = registry.get(groups.PRESETS, name)
    if not callable(getattr(obj, "load", None)):
        raise TypeError(f"fnl.presets entry {name!r} is {obj!r}, which has no load() method")
    return obj


__all__ = ["builtin_preset_names", "get_preset"]
