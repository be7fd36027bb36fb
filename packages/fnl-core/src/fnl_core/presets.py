"""Presets: spec files shipped as package data and advertised under ``fnl.presets``.

A package ships a preset in three steps (see docs/plugins.md):

1. the JSON spec file inside the package, e.g. ``src/acme_fnl/preset_specs/acme.small.json``;
2. a module attribute naming it, relative to that module's folder::

       # src/acme_fnl/presets.py
       from fnl_core.presets import PresetFile

       small = PresetFile(__name__, "preset_specs/acme.small.json")

3. an entry point: ``[project.entry-points."fnl.presets"]`` ``"acme.small" =
   "acme_fnl.presets:small"``.

Only fnl-core is needed for this, not fnl-detector. A preset file may itself start from another
preset (``{"preset": "mobile_parsing_rcnn_b", "backbone": {...}}``). Any object with a
``load() -> dict`` method works as an ``fnl.presets`` entry too (tests register such objects
in-process).
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from importlib import import_module, resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any


class PresetFileError(ValueError):
    """A preset's spec file is missing or is not a JSON object."""


@dataclass(frozen=True)
class PresetFile:
    """A spec file shipped as package data.

    ``anchor`` is a module or package name (a module's own ``__name__`` is the usual choice);
    a relative ``path`` is looked up in the folder holding that module, through
    :mod:`importlib.resources`, so it also works from wheels and zip files. An absolute ``path``
    is read as is (handy in tests and notebooks).
    """

    anchor: str
    path: str
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def _resource(self) -> Traversable | Path:
        if Path(self.path).is_absolute():
            return Path(self.path)
        module = sys.modules.get(self.anchor) or import_module(self.anchor)
        package = self.anchor if hasattr(module, "__path__") else module.__package__
        if not package:
            raise PresetFileError(
                f"preset anchor {self.anchor!r} is a top-level module; use a package name"
            )
        return resources.files(package).joinpath(*Path(self.path).parts)

    @property
    def location(self) -> str:
        """Where the file is, for messages."""
        return str(self._resource())

    def load(self) -> dict[str, Any]:
        """The preset's spec data (a fresh copy; may contain a ``"preset"`` key)."""
        if "data" not in self._cache:
            resource = self._resource()
            if not resource.is_file():
                raise PresetFileError(
                    f"preset file {self.path!r} (anchored at {self.anchor}) does not exist: "
                    f"{resource}"
                )
            try:
                data = json.loads(resource.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise PresetFileError(
                    f"preset file {resource}: invalid JSON at line {exc.lineno}, "
                    f"column {exc.colno}: {exc.msg}"
                ) from exc
            if not isinstance(data, dict):
                raise PresetFileError(
                    f"preset file {resource}: expected a JSON object, got {type(data).__name__}"
                )
            self._cache["data"] = data
        return copy.deepcopy(self._cache["data"])

    @property
    def description(self) -> str:
        """The file's ``"description"`` field (empty when it has none)."""
        return str(self.load().get("description", ""))


def preset_folder(anchor: str, folder: str) -> list[str]:
    """Names (file stems) of the ``*.json`` files in ``folder`` next to module ``anchor``."""
    probe = PresetFile(anchor, folder)
    root = probe._resource()
    if not root.is_dir():
        raise PresetFileError(f"preset folder {folder!r} (anchored at {anchor}) does not exist")
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


__all__ = ["PresetFile", "PresetFileError", "preset_folder"]
