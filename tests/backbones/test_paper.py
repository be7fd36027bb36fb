"""The paper's backbones: names exist in timm, channels, and parameter counts (paper §8)."""

from __future__ import annotations

import pytest
import timm
import torch

from fnl_backbones.config import TimmBackboneConfig
from fnl_backbones.norm import count_parameters
from fnl_backbones.paper import (
    A_HEADS_PARAMS,
    B_REST_PARAMS,
    MOBILE_B_BACKBONE,
    PAPER_BACKBONES,
    fpn256_params,
    paper_backbone,
)
from fnl_core.spec import ShapeSpec

# spnasnet_100 (A and B) and resnet50 are checked in test_timm_backbone.py
FAST = ("tf_mobilenetv3_small_100",)


def test_table_is_complete_and_names_exist():
    assert len(PAPER_BACKBONES) == 23
    names = [r.timm_name for r in PAPER_BACKBONES]
    assert len(set(names)) == 23
    for name in names:
        assert timm.is_model(name), name
    assert all(len(r.fpn_channels) == 4 and r.strides == (4, 8, 16, 32) for r in PAPER_BACKBONES)
    small = [r.timm_name for r in PAPER_BACKBONES if r.stages == (0, 1, 2, 4)]
    assert small == [
        "tf_mobilenetv3_small_100",
        "tf_mobilenetv3_small_075",
        "tf_mobilenetv3_small_minimal_100",
    ]


def test_lookup_by_paper_and_old_names():
    assert paper_backbone("mnasnet_a1").timm_name == "semnasnet_100"
    assert paper_backbone("MnasNet-B1").timm_name == "mnasnet_100"
    assert paper_backbone("spnasnet_100").fpn_channels == (24, 40, 80, 192)
    with pytest.raises(KeyError, match="known timm names"):
        paper_backbone("vgg16")


def test_recipe_reproduces_paper_totals():
    assert fpn256_params((24, 40, 80, 192)) == 2_447_360
    assert fpn256_params((256, 512, 1024, 2048)) == 3_344_384
    assert paper_backbone("spnasnet_100").detector_params_a == 11_346_855
    assert paper_backbone("resnet50").detector_params_a == 33_607_471
    assert A_HEADS_PARAMS == 6_808_175
    assert MOBILE_B_BACKBONE.backbone_params + B_REST_PARAMS == 3_349_621
    for rec in PAPER_BACKBONES:
        assert round(rec.detector_params_a / 1e6, 2) == rec.paper_params_m, rec.paper_name


def test_specs_validate():
    for rec in (*PAPER_BACKBONES, MOBILE_B_BACKBONE):
        cfg = TimmBackboneConfig.model_validate(rec.backbone_spec(pretrained="w.safetensors"))
        assert cfg.model_name == rec.timm_name and cfg.norm == "frozen_bn"
    assert MOBILE_B_BACKBONE.backbone_spec()["feature_location"] == "expansion"
    assert paper_backbone("tf_mobilenetv3_small_075").backbone_spec()["stages"] == [0, 1, 2, 4]


def _check_built(rec) -> None:
    bb = TimmBackboneConfig.model_validate(rec.backbone_spec()).build()
    assert bb.output_shape() == {
        f"c{level}": ShapeSpec(ch, 2**level) for level, ch in zip((2, 3, 4, 5), rec.fpn_channels)
    }
    assert count_parameters(bb) == rec.backbone_params
    with torch.inference_mode():
        out = bb.eval()(torch.randn(1, 3, 64, 64))
    for name, spec in bb.output_shape().items():
        assert out[name].shape == (1, spec.channels, 64 // spec.stride, 64 // spec.stride)


@pytest.mark.parametrize("name", FAST)
def test_paper_backbone_builds(name):
    _check_built(paper_backbone(name))


@pytest.mark.slow
@pytest.mark.parametrize(
    "rec", [*PAPER_BACKBONES, MOBILE_B_BACKBONE], ids=lambda r: r.paper_name.replace(" ", "_")
)
def test_every_paper_backbone_builds(rec):
    _check_built(rec)
