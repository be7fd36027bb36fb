"""fnl_core.spec: registry-resolved component fields, error paths, schema, files, overrides."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fnl_core import registry
from fnl_core.groups import NECKS
from fnl_core.spec import (
    Component,
    ComponentConfig,
    SpecFileError,
    deep_merge,
    format_validation_error,
    parse_override,
    read_spec_file,
    spec_json_schema,
)


class TinyNeck(ComponentConfig):
    type: Literal["tiny_neck"] = "tiny_neck"
    out_channels: int = Field(64, gt=0)
    upsample: Literal["nearest", "bilinear"] = "nearest"

    def build(self):
        return ("tiny", self.out_channels)


class OtherNeck(ComponentConfig):
    type: Literal["other_neck"] = "other_neck"
    layers: int = 1


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    neck: Component(NECKS)
    extra_neck: Component(NECKS) | None = None


@pytest.fixture
def necks():
    with (
        registry.registered(NECKS, "tiny_neck", TinyNeck),
        registry.registered(NECKS, "other_neck", OtherNeck),
    ):
        yield


def test_component_field_is_validated_by_its_own_config(necks):
    spec = Envelope.model_validate({"neck": {"type": "tiny_neck", "out_channels": 32}})
    assert isinstance(spec.neck, TinyNeck)
    assert spec.neck.build() == ("tiny", 32)


def test_errors_carry_the_whole_path(necks):
    with pytest.raises(ValidationError) as info:
        Envelope.model_validate({"neck": {"type": "tiny_neck", "out_channels": 0}})
    assert format_validation_error(info.value) == (
        "neck.out_channels: Input should be greater than 0"
    )


def test_misspelled_option_is_rejected_naming_its_path(necks):
    with pytest.raises(ValidationError) as info:
        Envelope.model_validate({"neck": {"type": "tiny_neck", "out_chanels": 8}})
    assert "neck.out_chanels: Extra inputs are not permitted" in format_validation_error(info.value)


def test_unknown_type_names_the_group_and_installed_names(necks):
    with pytest.raises(ValidationError) as info:
        Envelope.model_validate({"neck": {"type": "tiny_nek"}})
    text = format_validation_error(info.value)
    assert text.startswith("neck: ")
    assert "unknown fnl.necks component 'tiny_nek'" in text
    assert "did you mean 'tiny_neck'" in text


def test_missing_type_is_explained(necks):
    with pytest.raises(ValidationError, match='needs a "type"'):
        Envelope.model_validate({"neck": {"out_channels": 3}})


def test_round_trip_keeps_subclass_options(necks):
    spec = Envelope.model_validate(
        {"neck": {"type": "tiny_neck", "out_channels": 16}, "extra_neck": {"type": "other_neck"}}
    )
    dumped = spec.model_dump(mode="json")
    assert dumped["neck"] == {"type": "tiny_neck", "out_channels": 16, "upsample": "nearest"}
    assert Envelope.model_validate(json.loads(json.dumps(dumped))) == spec


def test_schema_lists_every_registered_component(necks):
    schema = json.dumps(spec_json_schema(Envelope))
    assert "tiny_neck" in schema
    assert "other_neck" in schema
    assert "out_channels" in schema


def test_read_spec_file_json_and_errors(tmp_path):
    good = tmp_path / "s.json"
    good.write_text('{"neck": {"type": "x"}}')
    assert read_spec_file(good) == {"neck": {"type": "x"}}
    bad = tmp_path / "bad.json"
    bad.write_text('{"neck": }')
    with pytest.raises(SpecFileError, match="line 1, column 10"):
        read_spec_file(bad)
    with pytest.raises(SpecFileError, match="does not exist"):
        read_spec_file(tmp_path / "missing.json")
    arr = tmp_path / "arr.json"
    arr.write_text("[1]")
    with pytest.raises(SpecFileError, match="must be a JSON object"):
        read_spec_file(arr)


def test_read_spec_file_yaml(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "s.yaml"
    f.write_text("neck:\n  type: x\n  out_channels: 3\n")
    assert read_spec_file(f) == {"neck": {"type": "x", "out_channels": 3}}


def test_deep_merge_replaces_component_when_type_changes():
    base = {"neck": {"type": "bifpn", "out_channels": 64}, "test": {"nms": 0.5, "k": 100}}
    assert deep_merge(base, {"test": {"nms": 0.3}}) == {
        "neck": {"type": "bifpn", "out_channels": 64},
        "test": {"nms": 0.3, "k": 100},
    }
    assert deep_merge(base, {"neck": {"type": "fpn"}})["neck"] == {"type": "fpn"}
    assert deep_merge(base, {"neck": {"out_channels": 88}})["neck"]["out_channels"] == 88


def test_parse_override():
    assert parse_override("neck.out_channels=64") == {"neck": {"out_channels": 64}}
    assert parse_override("input.min_size_train=[240, 320]") == {
        "input": {"min_size_train": [240, 320]}
    }
    assert parse_override("backbone.model_name=spnasnet_100") == {
        "backbone": {"model_name": "spnasnet_100"}
    }
    with pytest.raises(ValueError, match=r"dotted\.key=value"):
        parse_override("nothing")


def test_schema_skips_a_broken_plugin_with_a_warning(necks, monkeypatch):
    real_get = registry.get

    def flaky_get(group, name):
        if name == "other_neck":
            raise registry.PluginLoadError("other_neck from 'broken-dist' failed to load")
        return real_get(group, name)

    monkeypatch.setattr(registry, "get", flaky_get)
    with pytest.warns(UserWarning, match="broken-dist"):
        schema = json.dumps(spec_json_schema(Envelope))
    assert "tiny_neck" in schema
    assert "other_neck" not in schema
