"""``fnl validate`` and the spec check every torch command runs before importing torch.

Each test runs on a spec made of the in-process stand-ins (what an isolated fnl-detector has)
and, where fnl-backbones, fnl-necks and fnl-heads are installed, on the ``mobile_parsing_rcnn_b``
preset (whose component configs must not import torch or timm either).
"""

from __future__ import annotations

import json

import pytest
from detector_standins import fnl_fresh, missing_zoo, standins, write_tiny_spec

from fnl_core.cli import main as fnl

PRESET = "mobile_parsing_rcnn_b"


def _preset_or_skip() -> str:
    if missing := missing_zoo():
        pytest.skip(f"the {PRESET} preset needs {', '.join(missing)} (not installed here)")
    return PRESET


@pytest.fixture(params=["stand-ins", "preset"])
def spec(request, tmp_path):
    """A spec argument: a stand-in spec file (stand-ins registered) or the preset's name."""
    if request.param == "preset":
        yield _preset_or_skip()
        return
    with standins():
        yield write_tiny_spec(tmp_path / "tiny.json")


def test_validate_lists_the_components(capsys, tmp_path):
    with standins():
        path = write_tiny_spec(tmp_path / "tiny.json")
        assert fnl(["validate", path, "--set", "neck.channels=24"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: valid (7 components)")
    assert "neck" in out and "tiny_neck" in out and "<in-process>" in out
    with standins():  # the override is checked too
        assert fnl(["validate", path, "--set", "neck.channels=0"]) == 2
    assert "neck.channels" in capsys.readouterr().err


def test_validate_lists_the_preset_components(capsys):
    preset = _preset_or_skip()
    assert fnl(["validate", preset, "--set", "neck.out_channels=96"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{preset}: valid (7 components)")
    assert "neck" in out and "bifpn" in out and "fnl-necks" in out


def test_validate_json_is_the_resolved_spec(capsys, tmp_path, spec):
    assert fnl(["validate", spec, "--json", "--set", "test.nms_thresh=0.3"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["test"]["nms_thresh"] == 0.3
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(resolved))
    assert fnl(["validate", str(path), "--json"]) == 0  # a saved spec validates too...
    assert json.loads(capsys.readouterr().out) == resolved  # ...to itself


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "{spec}"],
        ["info", "{spec}"],
        ["bench", "{spec}"],
        ["export", "{spec}", "--out", "{tmp}/e"],
        ["convert", "{tmp}/x.pth", "--spec", "{spec}", "--out", "{tmp}/x.safetensors"],
        ["quantize", "{spec}", "--weights", "{tmp}/w.safetensors", "--out", "{tmp}/q"],
        ["predict", "{tmp}", "--weights", "{tmp}/w.safetensors", "--spec", "{spec}",
         "--out", "{tmp}/p"],
    ],
    ids=lambda a: a[0],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["stand-ins", "preset"])
def test_spec_typos_fail_before_torch_is_imported(tmp_path, args, kind):
    spec = _preset_or_skip() if kind == "preset" else write_tiny_spec(tmp_path / "tiny.json")
    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "x.pth").write_bytes(b"")
    args = [a.format(tmp=tmp_path, spec=spec) for a in args] + ["--set", "backbone.nrom=bn"]
    rc, err, imported = fnl_fresh(args, standins=kind == "stand-ins")
    assert rc == 2, err
    assert "backbone.nrom: Extra inputs are not permitted" in err
    assert imported == [], f"imported {imported} before reporting the spec error"


def test_a_valid_stand_in_spec_passes_the_early_check_without_torch(tmp_path):
    """The stand-ins themselves import no torch: the typo test above checks the command."""
    rc, err, imported = fnl_fresh(["validate", write_tiny_spec(tmp_path / "t.json")], standins=True)
    assert rc == 0, err
    assert imported == []


def test_info_reports_progress_on_stderr_and_keeps_stdout_json(capsys, spec):
    assert fnl(["info", spec, "--json", "--no-flops"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["params"]["total"] > 0
    assert captured.err.startswith(f"fnl info: building {spec}...")
