"""Standard RPN head: shapes, parameter counts (paper_numbers §8), init, tracing, options."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fnl_core import registry
from fnl_core.spec import resolve_component
from fnl_heads.config import StandardRPNHeadConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning"),
    pytest.mark.filterwarnings("error::torch.jit.TracerWarning"),
]


def levels(channels: int, batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, channels, 32 // 2**i, 48 // 2**i, generator=g) for i in range(5)]


def test_registered_under_standard():
    assert registry.get("fnl.rpn_heads", "standard") is StandardRPNHeadConfig
    assert isinstance(resolve_component("rpn_heads", {"type": "standard"}), StandardRPNHeadConfig)


@pytest.mark.parametrize(("channels", "expected"), [(64, 37_903), (256, 593_935)])
def test_parameter_count_matches_paper(channels, expected):
    head = StandardRPNHeadConfig().build(in_channels=channels, num_anchors=3)
    assert sum(p.numel() for p in head.parameters()) == expected


def test_names_and_init_follow_detectron2():
    torch.manual_seed(0)
    head = StandardRPNHeadConfig().build(64, 3)
    sd = head.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "conv.weight": (64, 64, 3, 3),
        "conv.bias": (64,),
        "objectness_logits.weight": (3, 64, 1, 1),
        "objectness_logits.bias": (3,),
        "anchor_deltas.weight": (12, 64, 1, 1),
        "anchor_deltas.bias": (12,),
    }
    assert sd["conv.weight"].std().item() == pytest.approx(0.01, rel=0.05)
    assert all(sd[k].abs().sum() == 0 for k in sd if k.endswith("bias"))


def test_outputs_per_level():
    torch.manual_seed(0)
    head = StandardRPNHeadConfig().build(16, 3)
    feats = levels(16)
    objectness, deltas = head(feats)
    assert len(objectness) == len(deltas) == 5
    for x, o, d in zip(feats, objectness, deltas):
        assert o.shape == (2, 3, *x.shape[-2:])
        assert d.shape == (2, 12, *x.shape[-2:])
    hidden = torch.relu(head.conv(feats[2]))
    torch.testing.assert_close(objectness[2], head.objectness_logits(hidden))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    head = StandardRPNHeadConfig().build(8, 3)
    objectness, deltas = head(levels(8))
    (sum(o.sum() for o in objectness) + sum(d.square().sum() for d in deltas)).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_traces():
    torch.manual_seed(0)
    head = StandardRPNHeadConfig().build(8, 3).eval()
    feats = levels(8)
    traced = torch.jit.trace(head, (feats,), strict=False)  # list outputs
    for a, b in zip(traced(feats), head(feats)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_unknown_option_raises():
    with pytest.raises(ValidationError):
        StandardRPNHeadConfig(conv_dims=[64])
