"""BiFPN neck (Mobile Parsing R-CNN B): graph, fusion, parameter counts, names, tracing, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from fnl_core import registry
from fnl_core.spec import ShapeSpec, resolve_component
from fnl_necks.bifpn import FastNormalizedFusion
from fnl_necks.config import BiFPNConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning"),
    pytest.mark.filterwarnings("error::torch.jit.TracerWarning"),
]

#: spnasnet_100 "expansion" features (docs/backbones.md, ``feature_location``).
EXPANSION = {f"c{lv}": ShapeSpec(c, 2**lv) for lv, c in zip(range(2, 6), [72, 120, 288, 1152])}
SMALL = {f"c{lv}": ShapeSpec(c, 2**lv) for lv, c in zip(range(2, 6), [6, 10, 12, 16])}

#: DensePoseFnL's BiFPN state-dict names (without the ``backbone.`` prefix).
BLOCKS = ["p4_tr", "p3_tr", "p2_out", "p3_out", "p4_out", "p5_out", "down_p2", "down_p3", "down_p4"]
FUSIONS = {"p4_tr": 2, "p3_tr": 2, "p2_out": 2, "p3_out": 3, "p4_out": 3, "p5_out": 2}


def features(input_shape, h=64, w=96, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(batch, s.channels, h // s.stride, w // s.stride, generator=g)
        for n, s in input_shape.items()
    }


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_under_bifpn():
    assert registry.get("fnl.necks", "bifpn") is BiFPNConfig
    cfg = resolve_component("fnl.necks", {"type": "bifpn"})
    assert (cfg.out_channels, cfg.num_layers, cfg.upsample, cfg.norm) == (64, 1, "nearest", "bn")


def test_parameter_count_matches_paper():
    assert n_params(BiFPNConfig().build(EXPANSION)) == 147_918


@pytest.mark.parametrize("channels", [64, 88])
def test_extra_layers_repeat_the_graph_without_laterals(channels):
    one = n_params(BiFPNConfig(out_channels=channels).build(EXPANSION))
    three = n_params(BiFPNConfig(out_channels=channels, num_layers=3).build(EXPANSION))
    per_layer = 9 * (9 * channels + channels**2 + 2 * channels) + 14
    assert three - one == 2 * per_layer


def test_state_dict_matches_reference_layout():
    sd = BiFPNConfig().build(EXPANSION).state_dict()
    expected = {}
    for lv, cin in zip(range(2, 6), [72, 120, 288, 1152]):
        expected[f"l{lv}.weight"] = (64, cin, 1, 1)
        expected[f"l{lv}.bias"] = (64,)
    for b in BLOCKS:
        expected[f"{b}.0.0.weight"] = (64, 1, 3, 3)
        expected[f"{b}.0.1.weight"] = (64, 64, 1, 1)
        for k in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{b}.1.{k}"] = (64,)
        expected[f"{b}.1.num_batches_tracked"] = ()
    for f, n in FUSIONS.items():
        expected[f"fuse_{f}.weight"] = (n,)
        expected[f"fuse_{f}.eps"] = ()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sd["fuse_p3_out.eps"].item() == pytest.approx(1e-4)


def test_blocks_are_separable_conv_bn_relu():
    neck = BiFPNConfig().build(EXPANSION)
    dw, pw = neck.p3_out[0]
    assert dw.groups == 64 and dw.bias is None and dw.stride == (1, 1)
    assert pw.kernel_size == (1, 1) and pw.bias is None
    assert neck.down_p2[0][0].stride == (2, 2)
    bn = neck.p3_out[1]
    assert type(bn) is nn.BatchNorm2d and bn.momentum == 0.03 and bn.eps == 1e-5
    assert isinstance(neck.p3_out[2], nn.ReLU)
    sync = BiFPNConfig(norm="sync_bn").build(EXPANSION)
    assert isinstance(sync.p2_out[1], nn.SyncBatchNorm)


def test_outputs_names_shapes_strides():
    neck = BiFPNConfig(out_channels=8).build(SMALL).eval()
    assert neck.size_divisibility == 32
    spec = neck.output_shape()
    assert {k: (s.channels, s.stride) for k, s in spec.items()} == {
        "p2": (8, 4),
        "p3": (8, 8),
        "p4": (8, 16),
        "p5": (8, 32),
        "p6": (8, 64),
    }
    out = neck(features(SMALL, h=128, w=160))
    assert list(out) == list(spec)
    assert [tuple(t.shape) for t in out.values()] == [
        (2, 8, 32, 40),
        (2, 8, 16, 20),
        (2, 8, 8, 10),
        (2, 8, 4, 5),
        (2, 8, 2, 3),
    ]
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2], rtol=0, atol=0)


def test_graph_matches_model_spec():
    """The f.3 graph written out by hand, with non-trivial fusion weights."""
    torch.manual_seed(0)
    neck = BiFPNConfig(out_channels=8).build(SMALL).eval()
    with torch.no_grad():
        for f in FUSIONS:
            getattr(neck, f"fuse_{f}").weight.uniform_(0.3, 1.5)
    feats = features(SMALL)
    m = neck

    def fuse(name, *xs):
        w = F.relu(getattr(m, f"fuse_{name}").weight)
        return sum(wi * x for wi, x in zip(w, xs)) / (w.sum() + 1e-4)

    def up(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    with torch.no_grad():
        l2, l3, l4, l5 = (getattr(m, f"l{i}")(feats[f"c{i}"]) for i in range(2, 6))
        p4_tr = m.p4_tr(fuse("p4_tr", l4, up(l5)))
        p3_tr = m.p3_tr(fuse("p3_tr", l3, up(p4_tr)))
        p2 = m.p2_out(fuse("p2_out", l2, up(p3_tr)))
        p3 = m.p3_out(fuse("p3_out", l3, p3_tr, m.down_p2(p2)))
        p4 = m.p4_out(fuse("p4_out", l4, p4_tr, m.down_p3(p3)))
        p5 = m.p5_out(fuse("p5_out", l5, m.down_p4(p4)))
        out = neck(feats)
    for name, ref in zip(["p2", "p3", "p4", "p5"], [p2, p3, p4, p5]):
        torch.testing.assert_close(out[name], ref, rtol=1e-5, atol=1e-6)


def test_fusion_uses_relu_weights():
    fusion = FastNormalizedFusion(2)
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([0.5, -0.25]))
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    out = fusion([a, b])
    torch.testing.assert_close(out, a * 0.5 / (0.5 + 1e-4))
    torch.testing.assert_close(fusion([a, b * 100]), out, rtol=0, atol=0)
    three = FastNormalizedFusion(3)
    torch.testing.assert_close(three([a, b, a]), (2 * a + b) / (3 + 1e-4))


def test_negative_fusion_weight_silences_an_input_in_the_neck():
    neck = BiFPNConfig(out_channels=8).build(SMALL).eval()
    with torch.no_grad():
        neck.fuse_p5_out.weight.copy_(torch.tensor([1.0, -0.25]))
    feats = features(SMALL)
    base = neck(feats)["p5"]
    with torch.no_grad():
        neck.down_p4[1].bias.add_(5.0)  # changes only the silenced input of p5
    torch.testing.assert_close(neck(feats)["p5"], base, rtol=0, atol=0)


def test_odd_sizes_upsample_to_the_finer_map():
    sizes = {"c2": (25, 19), "c3": (13, 10), "c4": (7, 5), "c5": (4, 3)}
    feats = {n: torch.randn(1, SMALL[n].channels, *hw) for n, hw in sizes.items()}
    out = BiFPNConfig(out_channels=8).build(SMALL).eval()(feats)
    assert [tuple(t.shape[-2:]) for t in out.values()] == [*sizes.values(), (2, 2)]


def test_bilinear_upsampling_option():
    torch.manual_seed(0)
    nearest = BiFPNConfig(out_channels=8).build(SMALL).eval()
    bilinear = BiFPNConfig(out_channels=8, upsample="bilinear").build(SMALL).eval()
    bilinear.load_state_dict(nearest.state_dict())
    feats = features(SMALL)
    a, b = nearest(feats), bilinear(feats)
    assert a["p2"].shape == b["p2"].shape
    assert not torch.allclose(a["p2"], b["p2"])


def test_in_features_selects_levels():
    shapes = {**SMALL, "c1": ShapeSpec(3, 2)}
    neck = BiFPNConfig(out_channels=8, in_features=["c3", "c4", "c5"]).build(shapes)
    assert list(neck.output_shape()) == ["p3", "p4", "p5", "p6"]
    assert n_params(neck) == 10 * 8 + 8 + 12 * 8 + 8 + 16 * 8 + 8 + 6 * (9 * 8 + 64 + 16) + 9
    out = neck(features(shapes))
    assert list(out) == ["p3", "p4", "p5", "p6"]


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    neck = BiFPNConfig(out_channels=8, num_layers=2).build(SMALL).train()
    out = neck(features(SMALL))
    sum(t.square().mean() for t in out.values()).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_traces_and_matches_eager_at_other_sizes():
    torch.manual_seed(0)
    neck = BiFPNConfig(out_channels=8).build(SMALL).eval()
    feats = features(SMALL)
    other = features(SMALL, h=128, w=64, batch=1, seed=1)
    traced = torch.jit.trace(neck, (feats,), strict=False)
    for x in (feats, other):
        expected = neck(x)
        for k, v in traced(x).items():
            torch.testing.assert_close(v, expected[k])


@pytest.mark.slow
def test_torch_export():
    torch.manual_seed(0)
    neck = BiFPNConfig(out_channels=8).build(SMALL).eval()
    feats = features(SMALL)
    exported = torch.export.export(neck, (feats,)).module()
    for k, v in exported(feats).items():
        torch.testing.assert_close(v, neck(feats)[k])


@pytest.mark.parametrize(
    "options",
    [
        {"out_channels": 0},
        {"num_layers": 0},
        {"upsample": "bicubic"},
        {"norm": "gn"},
        {"bn_momentum": 0},
        {"fusion_eps": -1},
        {"in_features": ["c5"]},
        {"unknown_option": 1},
    ],
)
def test_invalid_options_raise(options):
    with pytest.raises(ValidationError):
        BiFPNConfig(**options)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="c7"):
        BiFPNConfig(in_features=["c5", "c7"]).build(SMALL)
    with pytest.raises(ValueError, match="double"):
        BiFPNConfig().build({"a": ShapeSpec(8, 4), "b": ShapeSpec(8, 16)})
