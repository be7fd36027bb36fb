"""``fnl eval`` end to end on small JSON files, and import hygiene (no torch).

The command object is driven directly (argparse + ``run``) so that these tests only depend on
fnl-eval and fnl-core; ``fnl_core.cli.main`` turns the exceptions checked here into one-line
messages with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from fnl_eval_fixtures import GridSurfaceConfig, gt_json, perfect_iuv, person

from fnl_core import registry
from fnl_core.groups import COMMANDS, SURFACES
from fnl_eval.cli import command, surface_spec
from fnl_eval.results import make_result


def _fnl_eval(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fnl eval")
    command.configure(parser)
    return command.run(parser.parse_args(argv))


@pytest.fixture
def files(tmp_path):
    anns = [person(1, 1, [20.0, 30.0, 90.0, 130.0]), person(2, 1, [140.0, 40.0, 70.0, 100.0])]
    res = [make_result(1, a["bbox"], 0.9, perfect_iuv(a)) for a in anns]
    (tmp_path / "gt.json").write_text(json.dumps(gt_json(anns)))
    (tmp_path / "res.json").write_text(json.dumps(res))
    return tmp_path


def test_eval_is_the_registered_command():
    assert registry.get(COMMANDS, "eval") is command


def test_fnl_eval_prints_tables_and_writes_metrics_json(files, capsys):
    out = files / "metrics" / "m.json"
    with registry.registered(SURFACES, "grid", GridSurfaceConfig):
        code = _fnl_eval("--gt", str(files / "gt.json"), "--results", str(files / "res.json"),
                         "--surface", "grid", "--out", str(out))  # fmt: skip
    assert code == 0
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["bbox", "segm", "gps", "gpsm"]
    assert metrics["gps"]["AP"] == pytest.approx(1.0)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "[gpsm]" in printed and "maxDets= 20" in printed and "maxDets=100" in printed


def test_fnl_eval_without_surface_computes_box_and_mask_only(files, capsys):
    assert _fnl_eval("--gt", str(files / "gt.json"), "--results", str(files / "res.json")) == 0
    captured = capsys.readouterr()
    assert "[bbox]" in captured.out and "[segm]" in captured.out and "[gps]" not in captured.out
    assert "no --surface" in captured.err


def test_fnl_eval_reports_unknown_surfaces_and_missing_files(files):
    args = ("--gt", str(files / "gt.json"), "--results", str(files / "res.json"))
    with pytest.raises(registry.UnknownComponentError, match=r"unknown fnl\.surfaces component"):
        _fnl_eval(*args, "--surface", "no_such_surface")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _fnl_eval("--gt", str(files / "nope.json"), "--results", str(files / "res.json"))
    with pytest.raises(ValueError, match="need a body surface"):
        _fnl_eval(*args, "--metrics", "gps")


def test_surface_argument_forms():
    assert surface_spec("toy") == {"type": "toy"}
    assert surface_spec("smpl:/data/smpl") == {"type": "smpl", "path": "/data/smpl"}
    assert surface_spec('{"type": "smpl", "path": "d"}') == {"type": "smpl", "path": "d"}
    with pytest.raises(ValueError, match="needs a name"):
        surface_spec(":x")


def test_fnl_eval_imports_without_torch():
    code = (
        "import sys, fnl_eval, fnl_eval.cli, fnl_eval.config, fnl_eval.evaluator, fnl_eval.smpl;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
