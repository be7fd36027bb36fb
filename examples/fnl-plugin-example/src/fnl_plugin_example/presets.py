"""The plugin's presets: spec files in ``preset_specs/``, advertised under ``fnl.presets``."""

from __future__ import annotations

from fnl_core.presets import PresetFile

tiny_convnet_b = PresetFile(__name__, "preset_specs/example.tiny_convnet_b.json")
