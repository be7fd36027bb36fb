"""``fnl validate`` and the spec check every torch command runs before importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fnl_core.cli import main as fnl


def _fnl_fresh(args: list[str]) -> tuple[int, str, list[str]]:
    """``fnl ARGS`` in a fresh interpreter; (exit code, stderr, which of torch/timm it imported)."""
    code = (
        "import sys\n"
        "from fnl_core.cli import main\n"
        f"rc = main({args!r})\n"
        "print('imported:', *(m for m in ('torch', 'timm') if m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = done.stdout.strip().splitlines()[-1]
    return done.returncode, done.stderr, last.split()[1:]


def test_validate_lists_the_components(capsys):
    assert fnl(["validate", "mobile_parsing_rcnn_b", "--set", "neck.out_channels=96"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mobile_parsing_rcnn_b: valid (7 components)")
    assert "neck" in out and "bifpn" in out and "fnl-necks" in out


def test_validate_json_is_the_resolved_spec(capsys, tmp_path):
    assert fnl(["validate", "mobile_parsing_rcnn_b", "--json", "--set", "test.nms_thresh=0.3"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["test"]["nms_thresh"] == 0.3
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert fnl(["validate", str(path)]) == 0  # a saved spec validates too


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "mobile_parsing_rcnn_b"],
        ["info", "mobile_parsing_rcnn_b"],
        ["bench", "mobile_parsing_rcnn_b"],
        ["export", "mobile_parsing_rcnn_b", "--out", "{tmp}/e"],
        ["convert", "{tmp}/x.pth", "--spec", "mobile_parsing_rcnn_b",
         "--out", "{tmp}/x.safetensors"],
        ["quantize", "mobile_parsing_rcnn_b", "--weights", "{tmp}/w.safetensors",
         "--out", "{tmp}/q"],
        ["predict", "{tmp}", "--weights", "{tmp}/w.safetensors", "--spec", "mobile_parsing_rcnn_b",
         "--out", "{tmp}/p"],
    ],
    ids=lambda a: a[0],
)  # fmt: skip
def test_spec_typos_fail_before_torch_is_imported(tmp_path, args):
    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "x.pth").write_bytes(b"")
    args = [a.format(tmp=tmp_path) for a in args] + ["--set", "backbone.nrom=bn"]
    rc, err, imported = _fnl_fresh(args)
    assert rc == 2, err
    assert "backbone.nrom: Extra inputs are not permitted" in err
    assert imported == [], f"imported {imported} before reporting the spec error"


def test_info_reports_progress_on_stderr_and_keeps_stdout_json(capsys):
    assert fnl(["info", "mobile_parsing_rcnn_b", "--json", "--no-flops"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["params"]["total"] > 0
    assert captured.err.startswith("fnl info: building mobile_parsing_rcnn_b...")
