"""fnl_core.registry: listing without importing, lazy loading, in-process registration, errors."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from fnl_core import registry
from fnl_core.groups import BACKBONES, COMMANDS, NECKS


class FakeDist:
    """Stands in for an importlib.metadata Distribution in entry-point tests."""

    def __init__(self, name: str, version: str = "1.0") -> None:
        self.metadata = {"Name": name}
        self.version = version


def fake_entry_points(points):
    """Patch target for ``registry.entry_points`` returning the given (ep, dist) pairs."""

    def _eps(group):
        out = []
        for ep_group, name, value, dist in points:
            if ep_group == group:
                ep = EntryPoint(name, value, group)
                object.__setattr__(ep, "dist", dist)
                out.append(ep)
        return out

    return _eps


def test_core_commands_are_listed_with_their_distribution():
    infos = {i.name: i for i in registry.entries(COMMANDS)}
    assert infos["list"].distribution == "fnl-core"
    assert infos["list"].target == "fnl_core.commands.list:command"


def test_listing_does_not_import_the_component(monkeypatch):
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points([(NECKS, "lazy", "fnl_no_such_module:Thing", FakeDist("lazy-dist"))]),
    )
    infos = registry.entries(NECKS)
    assert [(i.name, i.distribution, i.version) for i in infos] == [("lazy", "lazy-dist", "1.0")]
    assert "fnl_no_such_module" not in sys.modules


def test_broken_plugin_names_its_distribution_and_chains_the_error(monkeypatch):
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points([(NECKS, "broken", "fnl_no_such_module:Thing", FakeDist("broken-dist"))]),
    )
    with pytest.raises(registry.PluginLoadError, match="broken-dist") as info:
        registry.get(NECKS, "broken")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_same_name_from_two_distributions_is_an_error_naming_both(monkeypatch):
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points(
            [
                (NECKS, "dup", "json:dumps", FakeDist("dist-a")),
                (NECKS, "dup", "json:loads", FakeDist("dist-b")),
            ]
        ),
    )
    with pytest.raises(registry.AmbiguousComponentError, match="dist-a, dist-b") as info:
        registry.get(NECKS, "dup")
    assert "name one exactly: 'dist-a:dup' or 'dist-b:dup'" in str(info.value)
    assert [i.distribution for i in registry.entries(NECKS)] == ["dist-a", "dist-b"]
    # the way out: a distribution-qualified name resolves exactly (any spelling of the dist)
    import json

    assert registry.get(NECKS, "dist-b:dup") is json.loads
    assert registry.get(NECKS, "Dist_A:dup") is json.dumps
    assert registry.resolve(NECKS, "dist-b:dup").qualified_name == "dist-b:dup"
    with pytest.raises(registry.UnknownComponentError, match="'dist-c:dup'"):
        registry.get(NECKS, "dist-c:dup")


def test_vendor_names_resolve_by_their_short_name_unless_ambiguous(monkeypatch):
    points = [
        (NECKS, "acme.pan", "json:dumps", FakeDist("acme-fnl")),
        (NECKS, "acme.fpn", "json:loads", FakeDist("acme-fnl")),
        (NECKS, "other.pan", "json:loads", FakeDist("other-fnl")),
    ]
    monkeypatch.setattr(registry, "entry_points", fake_entry_points(points))
    import json

    assert registry.get(NECKS, "fpn") is json.loads
    assert registry.resolve(NECKS, "fpn").name == "acme.fpn"
    assert registry.get(NECKS, "acme.pan") is json.dumps
    with pytest.raises(registry.AmbiguousComponentError) as info:
        registry.get(NECKS, "pan")
    msg = str(info.value)
    assert "acme.pan (acme-fnl), other.pan (other-fnl)" in msg
    assert "name one exactly: 'acme.pan' or 'other.pan'" in msg


def test_require_names_what_to_install(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", fake_entry_points([]))
    with pytest.raises(registry.MissingComponentError) as info:
        registry.require(
            "evaluators", "densepose_coco", purpose="fnl train", extra="fnl-detector[eval]"
        )
    msg = str(info.value)
    assert "\n" not in msg
    assert "fnl train needs the fnl.evaluators component 'densepose_coco'" in msg
    assert "(no fnl.evaluators component is installed)" in msg
    assert "pip install 'fnl-detector[eval]'" in msg
    with pytest.raises(registry.MissingComponentError, match="install fnl-data"):
        registry.require("datasets", "toy", purpose="fnl train")


def test_require_module_names_the_extra():
    assert registry.require_module("json", purpose="x", extra="y").dumps
    with pytest.raises(registry.MissingDependencyError) as info:
        registry.require_module(
            "fnl_no_such_module.sub", purpose="fnl quantize", extra="fnl-detector[quant]"
        )
    msg = str(info.value)
    assert "fnl quantize needs the Python package 'fnl_no_such_module'" in msg
    assert "pip install 'fnl-detector[quant]'" in msg
    assert isinstance(info.value, ImportError) and isinstance(info.value, ValueError)


def test_loading_is_lazy_and_cached(monkeypatch):
    monkeypatch.setattr(
        registry, "entry_points", fake_entry_points([(NECKS, "j", "json:dumps", FakeDist("d"))])
    )
    import json

    assert registry.get(NECKS, "j") is json.dumps
    assert registry.get(NECKS, "j") is registry.get(NECKS, "j")


def test_unknown_name_lists_installed_close_matches_and_provider(monkeypatch):
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points([(NECKS, "bifpn", "json:dumps", FakeDist("fnl-necks"))]),
    )
    with pytest.raises(registry.UnknownComponentError) as info:
        registry.get(NECKS, "bifnp")
    msg = str(info.value)
    assert "fnl.necks" in msg
    assert "did you mean 'bifpn'" in msg
    assert "bifpn (fnl-necks)" in msg
    assert "come with the fnl-necks package" in msg


def test_register_in_process_and_context_manager():
    marker = object()
    with registry.registered(BACKBONES, "test_marker", marker):
        assert registry.get(BACKBONES, "test_marker") is marker
        names = registry.names(BACKBONES)
        assert "test_marker" in names
        # Re-registering the same object is a no-op (re-run notebook cells).
        registry.register(BACKBONES, "test_marker", marker)
        with pytest.raises(registry.RegistryError, match="already registered"):
            registry.register(BACKBONES, "test_marker", object())
        other = object()
        registry.register(BACKBONES, "test_marker", other, override=True)
        assert registry.get(BACKBONES, "test_marker") is other
    with pytest.raises(registry.UnknownComponentError):
        registry.get(BACKBONES, "test_marker")


def test_registered_restores_a_previous_in_process_entry():
    first, second = object(), object()
    registry.register(BACKBONES, "test_restore", first)
    try:
        with registry.registered(BACKBONES, "test_restore", second):
            assert registry.get(BACKBONES, "test_restore") is second
        assert registry.get(BACKBONES, "test_restore") is first
    finally:
        registry.unregister(BACKBONES, "test_restore")


def test_taking_an_installed_name_needs_override(monkeypatch):
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points([(NECKS, "fpn", "json:dumps", FakeDist("fnl-necks"))]),
    )
    with pytest.raises(registry.RegistryError, match="already provided by fnl-necks"):
        registry.register(NECKS, "fpn", object())
    mine = object()
    with registry.registered(NECKS, "fpn", mine, override=True):
        assert registry.get(NECKS, "fpn") is mine
        assert [i.distribution for i in registry.entries(NECKS)] == [registry.IN_PROCESS]


def test_unregister_unknown_and_unknown_group_raise():
    with pytest.raises(registry.RegistryError, match="not registered"):
        registry.unregister(BACKBONES, "never_registered")
    with pytest.raises(ValueError, match="unknown component group"):
        registry.entries("nonsense")


def test_short_group_names_are_accepted():
    assert registry.entries("commands") == registry.entries(COMMANDS)


def test_fnl_help_and_list_do_not_import_torch():
    code = (
        "import sys, io, contextlib\n"
        "from fnl_core.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    main(['list'])\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'usage: fnl' in buf.getvalue(), buf.getvalue()\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_broken_command_plugin_does_not_hide_the_others(monkeypatch, capsys):
    from fnl_core import cli
    from fnl_core.command import Command

    def bad_configure(parser):
        raise RuntimeError("boom")

    broken = Command(help="broken", configure=bad_configure, run=lambda a: 0)
    with registry.registered(COMMANDS, "zz_broken", broken):
        parser = cli.build_parser()
    err = capsys.readouterr().err
    assert "command 'zz_broken' from <in-process> failed" in err
    assert "RuntimeError: boom" in err
    assert "list" in parser.format_help()


def test_entry_point_scans_are_cached_until_refresh(monkeypatch):
    calls = []
    points = [(NECKS, "cached", "json:dumps", FakeDist("cache-dist"))]
    fake = fake_entry_points(points)

    def counting(group):
        calls.append(group)
        return fake(group)

    monkeypatch.setattr(registry, "entry_points", counting)
    assert registry.names(NECKS) == ["cached"]
    assert registry.resolve(NECKS, "cached").distribution == "cache-dist"
    assert calls == [NECKS]
    points.append((NECKS, "later", "json:loads", FakeDist("cache-dist")))
    assert registry.names(NECKS) == ["cached"]  # installed meanwhile: not seen yet
    registry.refresh()
    assert registry.names(NECKS) == ["cached", "later"]
    assert calls == [NECKS, NECKS]
