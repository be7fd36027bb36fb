"""Qualified component names in specs, and the provenance record of a spec's parts."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from fnl_core import registry
from fnl_core.groups import NECKS, SPECS
from fnl_core.spec import Component, ComponentConfig


class PanA(ComponentConfig):
    type: Literal["pan"] = "pan"
    channels: int = 8


class PanB(ComponentConfig):
    type: Literal["pan"] = "pan"
    layers: int = 1


class AcmeFpn(ComponentConfig):
    type: Literal["acme.fpn"] = "acme.fpn"
    channels: int = 8


class Holder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    neck: Component(NECKS)
    spare: Component(NECKS) | None = None


class Dist:
    def __init__(self, name: str, version: str) -> None:
        self.metadata = {"Name": name}
        self.version = version


@pytest.fixture
def clashing_necks(monkeypatch):
    points = [
        ("pan", "PanA", Dist("plugin-a", "1.0")),
        ("pan", "PanB", Dist("plugin-b", "2.0")),
        ("acme.fpn", "AcmeFpn", Dist("acme-fnl", "0.3")),
    ]

    real = registry.entry_points

    def fake(group):
        if group != NECKS:
            return real(group=group)
        out = []
        for name, attr, dist in points:
            ep = EntryPoint(name, f"{__name__}:{attr}", group)
            object.__setattr__(ep, "dist", dist)
            out.append(ep)
        return out

    monkeypatch.setattr(registry, "entry_points", fake)


def test_ambiguous_name_in_a_spec_lists_the_qualified_names(clashing_necks):
    with pytest.raises(ValidationError) as info:
        Holder.model_validate({"neck": {"type": "pan"}})
    assert "name one exactly: 'plugin-a:pan' or 'plugin-b:pan'" in str(info.value)


def test_qualified_name_resolves_exactly_and_survives_a_round_trip(clashing_necks):
    spec = Holder.model_validate({"neck": {"type": "plugin-b:pan", "layers": 3}})
    assert isinstance(spec.neck, PanB) and spec.neck.layers == 3
    dumped = spec.model_dump(mode="json")
    assert dumped["neck"] == {"type": "plugin-b:pan", "layers": 3}
    again = Holder.model_validate_json(spec.model_dump_json())
    assert isinstance(again.neck, PanB)
    with pytest.raises(ValidationError, match=r"neck\.layers"):
        Holder.model_validate({"neck": {"type": "plugin-a:pan", "layers": 3}})


def test_short_vendor_name_is_stored_under_its_full_name(clashing_necks):
    spec = Holder.model_validate({"neck": {"type": "fpn", "channels": 4}})
    assert isinstance(spec.neck, AcmeFpn)
    assert spec.model_dump()["neck"] == {"type": "acme.fpn", "channels": 4}


def test_provenance_records_distribution_and_version_per_part(clashing_necks):
    data = {"neck": {"type": "plugin-b:pan"}, "spare": {"type": "fpn"}}
    with registry.registered(SPECS, "test_holder", Holder):
        record = registry.provenance(data, "test_holder")
        assert record == {
            "neck": {"name": "pan", "distribution": "plugin-b", "version": "2.0"},
            "spare": {"name": "acme.fpn", "distribution": "acme-fnl", "version": "0.3"},
        }
        assert registry.provenance({"neck": {"type": "acme.fpn"}}, "test_holder") == {
            "neck": {"name": "acme.fpn", "distribution": "acme-fnl", "version": "0.3"}
        }


def test_fnl_list_shows_clashing_names_qualified(clashing_necks, capsys):
    import json

    from fnl_core.cli import main

    assert main(["list", "necks"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line.split()[2] for line in out.splitlines()[2:] if line.strip()}
    assert rows["plugin-a:pan"] == "plugin-a" and rows["plugin-b:pan"] == "plugin-b"
    assert rows["acme.fpn"] == "acme-fnl"  # unique names stay short
    assert "provided by several packages" in out
    assert main(["list", "necks", "--json"]) == 0
    listed = {i["qualified_name"] for i in json.loads(capsys.readouterr().out)}
    assert listed == {"plugin-a:pan", "plugin-b:pan", "acme-fnl:acme.fpn"}
