"""Box heads ("2fc", "conv"): outputs, parameter counts (paper_numbers §8), tracing, options."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fnl_core import registry
from fnl_heads.config import ConvBoxHeadConfig, FCBoxHeadConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning"),
    pytest.mark.filterwarnings("error::torch.jit.TracerWarning"),
]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def predictor_params(in_features: int) -> int:
    """The detector's box predictor: Linear(in, 2) + Linear(in, 4) (docs/components.md)."""
    return in_features * 2 + 2 + in_features * 4 + 4


def test_registered_names():
    assert registry.get("fnl.box_heads", "2fc") is FCBoxHeadConfig
    assert registry.get("fnl.box_heads", "conv") is ConvBoxHeadConfig


def test_fc_head_parameter_count_matches_paper():
    head = FCBoxHeadConfig().build(in_channels=256, resolution=7)
    assert head.out_features == 1024
    assert n_params(head) == 12544 * 1024 + 1024 + 1024 * 1024 + 1024
    assert n_params(head) + predictor_params(head.out_features) == 13_901_830
    assert set(head.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


@pytest.mark.parametrize(
    ("channels", "head_only", "with_predictor"),
    [
        (64, 73_856, 92_678),
        (256, 1_180_160, 1_255_430),
    ],
)
def test_conv_head_parameter_count_matches_paper(channels, head_only, with_predictor):
    head = ConvBoxHeadConfig(channels=channels).build(in_channels=channels, resolution=7)
    assert head.out_features == channels * 49
    assert n_params(head) == head_only
    assert n_params(head) + predictor_params(head.out_features) == with_predictor
    assert set(head.state_dict()) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}


def test_conv_head_channels_default_to_input():
    head = ConvBoxHeadConfig().build(in_channels=24, resolution=7)
    assert head.out_features == 24 * 49 and head.conv2.out_channels == 24


def test_fc_head_forward():
    torch.manual_seed(0)
    head = FCBoxHeadConfig(fc_dim=32).build(in_channels=4, resolution=7)
    x = torch.randn(5, 4, 7, 7)
    out = head(x)
    assert out.shape == (5, 32) and (out >= 0).all()
    expected = torch.relu(head.fc2(torch.relu(head.fc1(x.flatten(1)))))
    torch.testing.assert_close(out, expected)
    assert head.fc1.bias.abs().sum() == 0


def test_conv_head_forward_flattens_c_h_w():
    torch.manual_seed(0)
    head = ConvBoxHeadConfig(channels=8, num_convs=3).build(in_channels=4, resolution=7)
    x = torch.randn(5, 4, 7, 7)
    out = head(x)
    assert out.shape == (5, 8 * 49) == (5, head.out_features)
    y = x
    for conv in (head.conv1, head.conv2, head.conv3):
        y = torch.relu(conv(y))
    torch.testing.assert_close(out, y.reshape(5, -1))


@pytest.mark.parametrize("config", [FCBoxHeadConfig(fc_dim=16), ConvBoxHeadConfig(channels=8)])
def test_empty_batch(config):
    head = config.build(in_channels=4, resolution=7)
    assert head(torch.zeros(0, 4, 7, 7)).shape == (0, head.out_features)


@pytest.mark.parametrize("config", [FCBoxHeadConfig(fc_dim=16), ConvBoxHeadConfig(channels=8)])
def test_gradients_and_tracing(config):
    torch.manual_seed(0)
    head = config.build(in_channels=4, resolution=7)
    x = torch.randn(6, 4, 7, 7)
    head(x).square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    traced = torch.jit.trace(head.eval(), (x,))
    other = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(traced(other), head(other))


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (FCBoxHeadConfig, {"fc_dim": 0}),
        (FCBoxHeadConfig, {"num_fc": 0}),
        (ConvBoxHeadConfig, {"channels": 0}),
        (ConvBoxHeadConfig, {"num_convs": 0}),
        (ConvBoxHeadConfig, {"conv_dim": 64}),
    ],
)
def test_invalid_options_raise(cls, options):
    with pytest.raises(ValidationError):
        cls(**options)
