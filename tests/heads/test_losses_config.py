"""ChartLossConfig: defaults, registry entry, validation, build."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from fnl_core import groups, registry
from fnl_core.spec import resolve_component
from fnl_heads.loss_config import ChartLossConfig


def test_defaults_are_the_fnl_reference_weights():
    cfg = ChartLossConfig()
    assert cfg.type == "chart"
    assert (cfg.index_weight, cfg.part_weight, cfg.point_weight) == (2.0, 0.3, 0.1)
    assert cfg.smooth_l1_beta == 1.0
    assert cfg.coarse_channels is None


def test_registered_under_densepose_losses():
    assert registry.get(groups.DENSEPOSE_LOSSES, "chart") is ChartLossConfig
    cfg = resolve_component("densepose_losses", {"type": "chart", "index_weight": 5.0})
    assert isinstance(cfg, ChartLossConfig)
    assert cfg.index_weight == 5.0
    assert ChartLossConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize(
    "options",
    [
        {"index_weight": -1.0},
        {"part_weight": -0.1},
        {"point_weight": -0.1},
        {"smooth_l1_beta": -1.0},
        {"coarse_channels": 3},
        {"heatmap_size": 64},
        {"type": "chart_conf"},
    ],
)
def test_invalid_options_are_rejected(options):
    with pytest.raises(ValidationError):
        ChartLossConfig.model_validate({"type": "chart", **options})


def test_build_passes_options_to_the_module():
    import torch

    loss = ChartLossConfig(index_weight=5.0, part_weight=1.0, point_weight=0.01, coarse_channels=2)
    module = loss.build(heatmap_size=64)
    assert isinstance(module, torch.nn.Module)
    assert module.heatmap_size == 64
    assert (module.index_weight, module.part_weight, module.point_weight) == (5.0, 1.0, 0.01)
    assert module.coarse_channels == 2


def test_config_module_does_not_import_torch():
    code = "import sys, fnl_heads.loss_config; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
