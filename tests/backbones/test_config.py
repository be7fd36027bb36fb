"""TimmBackboneConfig: validation, registry entry, light import, build."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from fnl_backbones.config import TimmBackboneConfig
from fnl_core import registry
from fnl_core.spec import ShapeSpec, resolve_component


def test_registered_under_timm():
    assert registry.get("fnl.backbones", "timm") is TimmBackboneConfig
    cfg = resolve_component("backbones", {"type": "timm", "model_name": "spnasnet_100"})
    assert isinstance(cfg, TimmBackboneConfig)
    assert cfg.out_indices == [1, 2, 3, 4]
    assert cfg.norm == "frozen_bn" and cfg.freeze_at is None and cfg.pretrained is False


def test_config_import_does_not_import_torch():
    code = (
        "import sys, fnl_backbones, fnl_backbones.config, fnl_backbones.paper; "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_round_trip_json():
    cfg = TimmBackboneConfig(model_name="spnasnet_100", stages=[5, 1, 3, 2], pretrained="w.pth")
    assert cfg.stages == [1, 2, 3, 5]
    again = TimmBackboneConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"out_indices": [-1, 2]}, "non-negative"),
        ({"out_indices": [1, 1]}, "repeat"),
        ({"out_indices": []}, "at least 1"),
        ({"stages": [1, 2], "out_indices": [1, 2]}, "either out_indices or stages"),
        ({"stages": [1, 2], "feature_location": "expansion"}, "out_indices only"),
        ({"feature_location": "bottleneck"}, "feature_location"),
        ({"norm": "gn"}, "norm"),
        ({"freeze_at": -1}, "freeze_at"),
        ({"pretrained": "weights.npz"}, ".safetensors"),
        ({"pretrained": " "}, "pretrained"),
        ({"bn_momentum": 0}, "bn_momentum"),
        ({"bn_eps": -1e-3}, "bn_eps"),
        ({"out_channels": 64}, "out_channels"),
        ({"model_name": ""}, "model_name"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValidationError, match=message):
        TimmBackboneConfig.model_validate({"model_name": "spnasnet_100", **options})


def test_build_returns_backbone_with_contract():
    cfg = TimmBackboneConfig(model_name="tf_mobilenetv3_small_minimal_100", stages=[0, 1, 2, 4])
    bb = cfg.build()
    assert bb.output_shape() == {
        "c2": ShapeSpec(16, 4),
        "c3": ShapeSpec(24, 8),
        "c4": ShapeSpec(40, 16),
        "c5": ShapeSpec(96, 32),
    }
