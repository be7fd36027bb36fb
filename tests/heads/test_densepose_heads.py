"""DensePose heads ("v1convx", "deeplab"): layout, parameter counts (paper_numbers §8), the
non-local block, tracing and options."""

from __future__ import annotations

import warnings

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from fnl_core import registry
from fnl_heads.config import DeepLabHeadConfig, V1ConvXHeadConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning"),
    pytest.mark.filterwarnings("error::torch.jit.TracerWarning"),
]

#: Paper parameter counts of the other Parsing R-CNN parts (paper_numbers §8): ResNet-50 body,
#: FPN 256, RPN 256, 2fc box head + predictor, chart predictor from 512 channels.
PARSING_RCNN_OTHER_PARTS = 23_454_912 + 3_344_384 + 593_935 + 13_901_830 + 737_370


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rois(channels: int, n: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_registered_names():
    assert registry.get("fnl.densepose_heads", "v1convx") is V1ConvXHeadConfig
    assert registry.get("fnl.densepose_heads", "deeplab") is DeepLabHeadConfig


def test_v1convx_matches_paper_baseline():
    head = V1ConvXHeadConfig().build(in_channels=256)
    assert n_params(head) == 17_698_816
    assert head.out_channels == 512
    assert [f"body_conv_fcn{i}.weight" for i in range(1, 9)] == [
        k for k in head.state_dict() if k.endswith("weight")
    ]
    assert all(p.abs().sum() == 0 for k, p in head.named_parameters() if k.endswith("bias"))
    # Kaiming normal, fan_out: std = sqrt(2 / (512 * 9))
    assert head.body_conv_fcn2.weight.std().item() == pytest.approx((2 / 4608) ** 0.5, rel=0.05)


def test_v1convx_forward():
    torch.manual_seed(0)
    head = V1ConvXHeadConfig(num_convs=2, channels=16).build(in_channels=8)
    x = rois(8)
    expected = torch.relu(head.body_conv_fcn2(torch.relu(head.body_conv_fcn1(x))))
    torch.testing.assert_close(head(x), expected)
    assert head(x).shape == (3, 16, 8, 8)


@pytest.mark.parametrize(("width", "expected"), [(64, 287_360), (256, 4_590_080)])
def test_deeplab_matches_mobile_parsing_rcnn(width, expected):
    head = DeepLabHeadConfig().build(in_channels=width)
    assert n_params(head) == expected
    assert head.out_channels == width


@pytest.mark.parametrize("nl_norm", ["bn", "gn"])
def test_deeplab_parsing_rcnn_total_matches_paper(nl_norm):
    cfg = DeepLabHeadConfig(aspp_channels=256, channels=512, non_local=True, non_local_norm=nl_norm)
    head = cfg.build(in_channels=256)
    assert n_params(head) + PARSING_RCNN_OTHER_PARTS == 54_555_951
    assert head.out_channels == 512


def test_deeplab_release_layout_of_fnl_parsing_rcnn():
    """FnL's 2022 Parsing R-CNN release: projection to the ASPP width, NL (GN) there."""
    cfg = DeepLabHeadConfig(aspp_channels=256, project_channels=256, channels=512, non_local=True)
    head = cfg.build(in_channels=256)
    assert n_params(head) + PARSING_RCNN_OTHER_PARTS == 52_653_999
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["ASPP.project.0.weight"] == (256, 1280, 1, 1)
    assert shapes["NLBlock.W.1.weight"] == (256,)
    assert shapes["body_conv_fcn1.weight"] == (512, 256, 3, 3)
    assert isinstance(head.NLBlock.W[1], nn.GroupNorm)


def test_deeplab_state_dict_matches_reference_names():
    shapes = {k: tuple(v.shape) for k, v in DeepLabHeadConfig().build(64).state_dict().items()}
    expected = {}
    for b, k in enumerate([1, 3, 3, 3]):
        expected[f"ASPP.convs.{b}.0.weight"] = (64, 64, k, k)
        expected[f"ASPP.convs.{b}.0.bias"] = (64,)
    expected["ASPP.convs.4.1.weight"] = (64, 64, 1, 1)
    expected["ASPP.convs.4.1.bias"] = (64,)
    expected["ASPP.project.0.weight"] = (64, 320, 1, 1)
    expected["ASPP.project.0.bias"] = (64,)
    for i in range(1, 5):
        expected[f"body_conv_fcn{i}.weight"] = (64, 64, 3, 3)
        expected[f"body_conv_fcn{i}.bias"] = (64,)
    assert shapes == expected


def test_deeplab_aspp_branches():
    head = DeepLabHeadConfig(dilations=[2, 3]).build(16)
    convs = [branch[0] for branch in head.ASPP.convs[:-1]]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2), (3, 3)]
    assert [c.padding for c in convs] == [(0, 0), (2, 2), (3, 3)]
    assert head.ASPP.project[0].in_channels == 4 * 16
    default = DeepLabHeadConfig().build(16)
    assert [b[0].dilation[0] for b in default.ASPP.convs[1:4]] == [6, 12, 18]


def test_deeplab_forward_matches_manual_computation():
    torch.manual_seed(0)
    head = DeepLabHeadConfig(aspp_channels=8, channels=12, num_convs=2).build(in_channels=4)
    x = rois(4)
    a = head.ASPP
    branches = [torch.relu(a.convs[b][0](x)) for b in range(4)]
    pooled = torch.relu(a.convs[4][1](x.mean(dim=(2, 3), keepdim=True)))
    branches.append(pooled.expand(-1, -1, 8, 8))
    y = torch.relu(a.project[0](torch.cat(branches, dim=1)))
    y = torch.relu(head.body_conv_fcn2(torch.relu(head.body_conv_fcn1(y))))
    out = head(x)
    assert out.shape == (3, 12, 8, 8) and head.out_channels == 12
    torch.testing.assert_close(out, y)


@pytest.mark.parametrize("nl_norm", ["bn", "gn"])
def test_non_local_block_starts_as_identity_and_learns(nl_norm):
    torch.manual_seed(0)
    cfg = DeepLabHeadConfig(channels=32, num_convs=1, non_local=True, non_local_norm=nl_norm)
    head = cfg.build(in_channels=32).eval()
    block = head.NLBlock
    norm_type = nn.BatchNorm2d if nl_norm == "bn" else nn.GroupNorm
    assert isinstance(block.W[1], norm_type)
    assert block.W[1].weight.abs().sum() == 0 and block.W[1].bias.abs().sum() == 0
    assert block.theta.out_channels == 16
    x = rois(32)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    with torch.no_grad():
        block.W[1].weight.fill_(1.0)
    assert not torch.allclose(block(x), x)
    # embedded Gaussian with 2x2 max-pooled keys/values, written out
    theta = block.theta(x).flatten(2)
    phi, g = block.phi(x).flatten(2), block.g(x).flatten(2)
    attention = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)
    y = (attention @ g.transpose(1, 2)).transpose(1, 2).reshape(3, 16, 8, 8)
    torch.testing.assert_close(block(x), block.W(y) + x)


def test_group_norm_variant():
    head = DeepLabHeadConfig(norm="gn", channels=32, num_convs=2).build(in_channels=32)
    assert head.ASPP.convs[0][0].bias is None and isinstance(head.ASPP.convs[0][1], nn.GroupNorm)
    assert head.body_conv_fcn1.bias is None and isinstance(head.body_conv_fcn1.norm, nn.GroupNorm)
    assert head(rois(32)).shape == (3, 32, 8, 8)
    with pytest.raises(ValueError, match="multiple of 32"):
        DeepLabHeadConfig(norm="gn").build(in_channels=48)


@pytest.mark.parametrize(
    "config",
    [
        V1ConvXHeadConfig(num_convs=2, channels=8),
        DeepLabHeadConfig(aspp_channels=8, channels=8, num_convs=2),
        DeepLabHeadConfig(channels=32, num_convs=1, non_local=True, non_local_norm="bn"),
        DeepLabHeadConfig(channels=32, num_convs=1, non_local=True, norm="gn"),
    ],
)
def test_gradients_tracing_and_empty_batch(config):
    torch.manual_seed(0)
    head = config.build(in_channels=32)
    if getattr(head, "NLBlock", None) is not None:
        with torch.no_grad():  # the zero-initialised norm blocks gradients into the block
            head.NLBlock.W[1].weight.fill_(0.5)
    x = rois(32, n=4)
    head(x).square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    head.eval()
    with warnings.catch_warnings():
        if any(isinstance(m, nn.GroupNorm) for m in head.modules()):
            # F.group_norm checks its input size in Python (it only rejects 1 value per group)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(head, (x,))
    other = rois(32, n=2, size=16)
    torch.testing.assert_close(traced(other), head(other))
    assert head(torch.zeros(0, 32, 8, 8)).shape == (0, head.out_channels, 8, 8)


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (V1ConvXHeadConfig, {"channels": 0}),
        (V1ConvXHeadConfig, {"num_convs": 0}),
        (V1ConvXHeadConfig, {"kernel_size": 4}),
        (DeepLabHeadConfig, {"channels": 0}),
        (DeepLabHeadConfig, {"aspp_channels": -1}),
        (DeepLabHeadConfig, {"num_convs": -1}),
        (DeepLabHeadConfig, {"dilations": []}),
        (DeepLabHeadConfig, {"dilations": [6, 0]}),
        (DeepLabHeadConfig, {"norm": "bn"}),
        (DeepLabHeadConfig, {"non_local_norm": "syncbn"}),
        (DeepLabHeadConfig, {"nonlocal": True}),
    ],
)
def test_invalid_options_raise(cls, options):
    with pytest.raises(ValidationError):
        cls(**options)
