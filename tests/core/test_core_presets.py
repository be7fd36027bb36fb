"""fnl_core.presets.PresetFile: spec files shipped as package data of any package."""

from __future__ import annotations

import json
import sys

import pytest

from fnl_core.presets import PresetFile, PresetFileError, preset_folder


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A throw-away importable package ``fnl_fake_plugin`` with two preset files."""
    pkg = tmp_path / "fnl_fake_plugin"
    (pkg / "preset_specs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "presets.py").write_text(
        "from fnl_core.presets import PresetFile\n"
        "small = PresetFile(__name__, 'preset_specs/fake.small.json')\n"
    )
    small = {"preset": "some_base", "description": "a small one", "neck": {"type": "fpn"}}
    (pkg / "preset_specs" / "fake.small.json").write_text(json.dumps(small))
    (pkg / "preset_specs" / "broken.json").write_text("[1, 2]")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m.startswith("fnl_fake_plugin")]:
        del sys.modules[name]


def test_path_is_relative_to_the_module_that_names_it(plugin_package):
    from fnl_fake_plugin.presets import small

    data = small.load()
    assert data["neck"] == {"type": "fpn"}
    assert small.description == "a small one"
    data["neck"]["type"] = "changed"  # callers get a copy
    assert small.load()["neck"] == {"type": "fpn"}
    same = PresetFile("fnl_fake_plugin", "preset_specs/fake.small.json")  # package anchor
    assert same.load() == small.load()
    assert preset_folder("fnl_fake_plugin.presets", "preset_specs") == ["broken", "fake.small"]


def test_bad_files_give_one_line_errors(plugin_package, tmp_path):
    with pytest.raises(PresetFileError, match=r"'preset_specs/nope.json'.*does not exist"):
        PresetFile("fnl_fake_plugin", "preset_specs/nope.json").load()
    with pytest.raises(PresetFileError, match="expected a JSON object, got list"):
        PresetFile("fnl_fake_plugin", "preset_specs/broken.json").load()
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(PresetFileError, match="invalid JSON at line 1"):
        PresetFile(__name__, str(bad)).load()
    with pytest.raises(PresetFileError, match="does not exist"):
        preset_folder("fnl_fake_plugin", "no_such_folder")
