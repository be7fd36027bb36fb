"""FPN neck: shapes, parameter counts (paper_numbers §8), top-down wiring, tracing, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from fnl_core import registry
from fnl_core.spec import ShapeSpec, resolve_component
from fnl_necks.config import FPNConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning"),
    pytest.mark.filterwarnings("error::torch.jit.TracerWarning"),
]


def shapes(channels: list[int], first_level: int = 2) -> dict[str, ShapeSpec]:
    return {
        f"c{first_level + i}": ShapeSpec(c, 2 ** (first_level + i)) for i, c in enumerate(channels)
    }


def features(input_shape: dict[str, ShapeSpec], h: int = 64, w: int = 96, batch: int = 2):
    g = torch.Generator().manual_seed(0)
    return {
        n: torch.randn(batch, s.channels, -(-h // s.stride), -(-w // s.stride), generator=g)
        for n, s in input_shape.items()
    }


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


RESNET50 = shapes([256, 512, 1024, 2048])
SPNASNET_STAGES = shapes([24, 40, 80, 192])


def test_registered_under_fpn():
    assert registry.get("fnl.necks", "fpn") is FPNConfig
    cfg = resolve_component("fnl.necks", {"type": "fpn", "out_channels": 128})
    assert isinstance(cfg, FPNConfig) and cfg.out_channels == 128


@pytest.mark.parametrize(
    ("input_shape", "expected"), [(RESNET50, 3_344_384), (SPNASNET_STAGES, 2_447_360)]
)
def test_parameter_count_matches_paper(input_shape, expected):
    assert n_params(FPNConfig().build(input_shape)) == expected


def test_outputs_names_shapes_strides():
    torch.manual_seed(0)
    neck = FPNConfig(out_channels=16).build(SPNASNET_STAGES)
    assert neck.size_divisibility == 32
    spec = neck.output_shape()
    assert list(spec) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in spec.values()] == [4, 8, 16, 32, 64]
    assert all(s.channels == 16 for s in spec.values())
    out = neck(features(SPNASNET_STAGES))
    assert list(out) == list(spec)
    assert [tuple(t.shape) for t in out.values()] == [
        (2, 16, 16, 24),
        (2, 16, 8, 12),
        (2, 16, 4, 6),
        (2, 16, 2, 3),
        (2, 16, 1, 2),
    ]
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2], rtol=0, atol=0)


def test_state_dict_uses_detectron2_names():
    neck = FPNConfig().build(RESNET50)
    keys = set(neck.state_dict())
    for lv, cin in zip(range(2, 6), [256, 512, 1024, 2048]):
        assert neck.state_dict()[f"fpn_lateral{lv}.weight"].shape == (256, cin, 1, 1)
        assert f"fpn_output{lv}.bias" in keys
    assert len(keys) == 16


def test_top_down_path_matches_manual_computation():
    torch.manual_seed(0)
    neck = FPNConfig(out_channels=8).build(shapes([4, 6]))
    feats = features(shapes([4, 6]), h=32, w=32)
    out = neck(feats)
    top = neck.fpn_lateral3(feats["c3"])
    fine = neck.fpn_lateral2(feats["c2"]) + F.interpolate(top, scale_factor=2, mode="nearest")
    torch.testing.assert_close(out["p2"], neck.fpn_output2(fine))
    torch.testing.assert_close(out["p3"], neck.fpn_output3(top))


def test_in_features_subset_and_ignores_extra_inputs():
    input_shape = shapes([8, 16, 24, 32])
    neck = FPNConfig(out_channels=8, in_features=["c3", "c4", "c5"]).build(input_shape)
    out = neck(features(input_shape))
    assert list(out) == ["p3", "p4", "p5", "p6"]
    assert not any(k.startswith("fpn_lateral2") for k in neck.state_dict())


def test_odd_sizes_are_handled():
    input_shape = shapes([8, 16, 24, 32])
    sizes = {"c2": (25, 19), "c3": (13, 10), "c4": (7, 5), "c5": (4, 3)}
    feats = {n: torch.randn(1, input_shape[n].channels, *hw) for n, hw in sizes.items()}
    out = FPNConfig(out_channels=8).build(input_shape)(feats)
    assert [tuple(t.shape[-2:]) for t in out.values()] == [*sizes.values(), (2, 2)]


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    neck = FPNConfig(out_channels=8).build(SPNASNET_STAGES)
    sum(t.square().sum() for t in neck(features(SPNASNET_STAGES)).values()).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_traces_and_matches_eager():
    torch.manual_seed(0)
    neck = FPNConfig(out_channels=8).build(SPNASNET_STAGES).eval()
    feats = features(SPNASNET_STAGES)
    traced = torch.jit.trace(neck, (feats,), strict=False)
    other = features(SPNASNET_STAGES, h=128, w=64, batch=1)
    for x in (feats, other):
        expected, got = neck(x), traced(x)
        for k in expected:
            torch.testing.assert_close(got[k], expected[k])


@pytest.mark.parametrize(
    "options",
    [{"out_channels": 0}, {"out_channels": -4}, {"in_features": []}, {"upsample": "nearest"}],
)
def test_invalid_options_raise(options):
    with pytest.raises(ValidationError):
        FPNConfig(**options)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="c9"):
        FPNConfig(in_features=["c9"]).build(RESNET50)
    with pytest.raises(ValueError, match="double"):
        FPNConfig().build({"a": ShapeSpec(8, 4), "b": ShapeSpec(8, 16)})
    with pytest.raises(ValueError, match="power of 2"):
        FPNConfig().build({"a": ShapeSpec(8, 6)})
