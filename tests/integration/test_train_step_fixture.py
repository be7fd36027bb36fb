"""FnL's training step equals the reference's (``train-step-reference`` fixture).

Runs ``scripts/check_train_step.py`` on the shared fixture (found at ``$FNL_FIXTURES`` or
``<repo>/../shared/fixtures``; skipped when absent): FnL's data path, model and losses with the
reference's random samples replayed, for the main file and the DensePose IoU 0.5 variant.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_train_step.py"


def _fixture() -> Path:
    env = os.environ.get("FNL_FIXTURES")
    root = Path(env) if env else REPO.parent / "shared" / "fixtures"
    return root / "train-step-reference"


FIXTURE = _fixture()
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "outputs.npz").is_file(),
    reason=f"train-step fixture not found at {FIXTURE} (set FNL_FIXTURES)",
)


def _checker():
    spec = importlib.util.spec_from_file_location("check_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@needs_fixture
def test_the_checker_passes_on_the_shared_fixture():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(FIXTURE)], capture_output=True, text=True, timeout=600
    )
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert lines[-1].startswith("train step train-step-reference: OK")
    assert any("(DensePose IoU 0.5 variant)" in line for line in lines)
    for loss in ("loss_cls", "loss_rpn_loc", "loss_densepose_S", "dp gradient u"):
        assert sum(loss in line for line in lines) == 2  # main run and variant


@needs_fixture
def test_the_checker_fails_on_another_convention(monkeypatch, capsys):
    """A different U/V point weight (a convention the checker exists to catch) is a FAIL."""
    checker = _checker()
    original = checker.spec_overrides
    monkeypatch.setattr(
        checker,
        "spec_overrides",
        lambda cfg, dp_iou=None: [*original(cfg, dp_iou), "densepose.loss.point_weight=0.01"],
    )
    assert checker.main([str(FIXTURE)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("train step train-step-reference: FAIL")
    assert "loss_densepose_U" in lines[-1] and "loss_cls" not in lines[-1]


def test_the_checker_refuses_a_folder_without_the_files(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "missing settings.json" in out.stderr
