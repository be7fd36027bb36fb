"""Optional packages missing: commands stop early with one line naming what to install.

Each test makes one optional part unavailable in-process (its distribution's entry points
hidden from the registry, or its module made unimportable) and runs the real command.
"""

from __future__ import annotations

import sys

import pytest

from fnl_core import registry
from fnl_core.cli import main
from fnl_core.command import Command
from fnl_core.groups import COMMANDS


@pytest.fixture
def hide_distributions(monkeypatch):
    """Call with distribution names: their entry points vanish from the registry."""

    def hide(*dists: str) -> None:
        real = registry.entry_points

        def visible(group):
            return [ep for ep in real(group=group) if ep.dist.metadata["Name"] not in dists]

        monkeypatch.setattr(registry, "entry_points", lambda group: visible(group))

    return hide


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_train_without_fnl_eval_fails_before_step_one(hide_distributions, capsys, tmp_path):
    hide_distributions("fnl-eval")
    out = tmp_path / "run"
    argv = ["train", "mobile_parsing_rcnn_b", "--data", "toy", "--out", str(out), "--iters", "2"]
    err = _one_line_error(capsys, argv)
    assert "fnl.evaluators component 'densepose_coco', which is not installed" in err
    assert "pip install 'fnl-detector[eval]'" in err
    assert not out.exists()


def test_train_without_its_dataset_fails_before_step_one(hide_distributions, capsys, tmp_path):
    hide_distributions("fnl-data")
    out = tmp_path / "run"
    argv = ["train", "mobile_parsing_rcnn_b", "--data", "toy", "--out", str(out), "--iters", "2"]
    err = _one_line_error(capsys, argv)
    assert "unknown fnl.datasets component 'toy'" in err
    assert "come with the fnl-data package" in err
    assert not out.exists()


def test_quantize_without_fnl_quant(hide_distributions, capsys, tmp_path, monkeypatch):
    argv = [
        "quantize",
        "mobile_parsing_rcnn_b",
        "--weights",
        "w.safetensors",
        "--method",
        "ptq",
        "--out",
        str(tmp_path),
    ]
    hide_distributions("fnl-quant")
    err = _one_line_error(capsys, argv)
    assert "fnl quantize needs the fnl.quantizers component 'ptq'" in err
    assert "pip install 'fnl-detector[quant]'" in err

    monkeypatch.undo()  # quantizers listed again, but the module cannot be imported
    monkeypatch.setitem(sys.modules, "fnl_quant.artifact", None)
    err = _one_line_error(capsys, argv)
    assert "fnl quantize needs the Python package 'fnl_quant.artifact'" in err
    assert "pip install 'fnl-detector[quant]'" in err


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_export_without_onnx_or_onnxruntime(module, monkeypatch):
    from fnl_detector.export import require_export_deps

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(registry.MissingDependencyError) as info:
        require_export_deps()
    assert f"({module} is missing)" in str(info.value)
    assert "pip install 'fnl-detector[export]'" in str(info.value)


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_predict_without_onnx_or_onnxruntime_runs_pytorch(
    module, monkeypatch, tmp_path, capsys, recwarn
):
    """The default backend needs no extra: without the export packages it is PyTorch, chosen
    up front (not a failed export falling back with a warning)."""
    import numpy as np
    import torch
    from PIL import Image

    from fnl_detector.build import build_detector
    from fnl_detector.spec import load_spec
    from fnl_detector.weights import save_weights

    monkeypatch.setitem(sys.modules, module, None)
    sets = ["input.min_size_test=96", "input.max_size_test=128", "test.score_thresh=0"]
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(build_detector(load_spec("mobile_parsing_rcnn_b", sets)).state_dict(), weights)
    Image.fromarray(np.full((80, 100, 3), 128, np.uint8)).save(tmp_path / "x.png")
    argv = ["predict", str(tmp_path / "x.png"), "--spec", "mobile_parsing_rcnn_b", "--weights"]
    argv += [str(weights), "--out", str(tmp_path / "out"), "--no-progress", "--set", *sets]
    assert main(argv) == 0
    assert "network run by torch" in capsys.readouterr().out
    assert not [w for w in recwarn if "backend auto" in str(w.message)]


def test_cli_prints_a_missing_dependency_in_one_line(capsys):
    def run(args):
        registry.require_module("fnl_no_such_module", purpose="fnl needs-x", extra="fnl-x[y]")

    command = Command(help="test", configure=lambda parser: None, run=run)
    with registry.registered(COMMANDS, "needs-x", command):
        err = _one_line_error(capsys, ["needs-x"])
    assert err == (
        "fnl needs-x: error: fnl needs-x needs the Python package 'fnl_no_such_module', which is "
        "not installed; install it with: pip install 'fnl-x[y]'"
    )
