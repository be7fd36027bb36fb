"""Chart predictor: outputs, resize rule, parameter counts (paper_numbers §8), tracing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from fnl_core import registry
from fnl_heads.config import ChartPredictorConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning"),
    pytest.mark.filterwarnings("error::torch.jit.TracerWarning"),
]

NAMES = {
    "coarse_segm": "ann_index_lowres",
    "fine_segm": "index_uv_lowres",
    "u": "u_lowres",
    "v": "v_lowres",
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_under_chart():
    assert registry.get("fnl.densepose_predictors", "chart") is ChartPredictorConfig


@pytest.mark.parametrize(
    ("channels", "coarse", "expected"),
    [(64, 15, 92_250), (64, 2, 78_925), (256, 15, 368_730), (512, 15, 737_370)],
)
def test_parameter_count_matches_paper(channels, coarse, expected):
    predictor = ChartPredictorConfig(coarse_channels=coarse).build(channels, heatmap_size=64)
    assert n_params(predictor) == expected


def test_layout_and_init():
    torch.manual_seed(0)
    predictor = ChartPredictorConfig().build(in_channels=64, heatmap_size=64)
    shapes = {k: tuple(v.shape) for k, v in predictor.state_dict().items()}
    assert shapes["ann_index_lowres.weight"] == (64, 15, 4, 4)
    for name in ("index_uv_lowres", "u_lowres", "v_lowres"):
        assert shapes[f"{name}.weight"] == (64, 25, 4, 4) and shapes[f"{name}.bias"] == (25,)
    deconv = predictor.u_lowres
    assert (deconv.stride, deconv.padding) == ((2, 2), (1, 1))
    assert deconv.bias.abs().sum() == 0
    # PyTorch's fan_out of an in×out×4×4 deconv weight is in·16
    assert deconv.weight.std().item() == pytest.approx((2 / (64 * 16)) ** 0.5, rel=0.05)


def test_outputs_at_heatmap_size_without_resize():
    torch.manual_seed(0)
    predictor = ChartPredictorConfig().build(in_channels=8, heatmap_size=64)
    x = torch.randn(3, 8, 32, 32)
    out = predictor(x)
    assert list(out) == ["coarse_segm", "fine_segm", "u", "v"]
    assert out["coarse_segm"].shape == (3, 15, 64, 64)
    for key in ("fine_segm", "u", "v"):
        assert out[key].shape == (3, 25, 64, 64)
    for key, name in NAMES.items():
        torch.testing.assert_close(out[key], getattr(predictor, name)(x), rtol=0, atol=0)


def test_bilinear_resize_when_deconv_size_differs():
    torch.manual_seed(0)
    predictor = ChartPredictorConfig(coarse_channels=2).build(in_channels=8, heatmap_size=56)
    x = torch.randn(2, 8, 14, 14)
    out = predictor(x)
    assert out["coarse_segm"].shape == (2, 2, 56, 56)
    expected = F.interpolate(predictor.v_lowres(x), size=(56, 56), mode="bilinear")
    torch.testing.assert_close(out["v"], expected)


@pytest.mark.parametrize(("roi", "heatmap"), [(16, 32), (14, 56)])
def test_gradients_and_tracing(roi, heatmap):
    torch.manual_seed(0)
    predictor = ChartPredictorConfig().build(in_channels=8, heatmap_size=heatmap)
    x = torch.randn(2, 8, roi, roi)
    sum(t.square().sum() for t in predictor(x).values()).backward()
    for name, p in predictor.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    traced = torch.jit.trace(predictor.eval(), (x,), strict=False)
    for other in (x, torch.randn(3, 8, 7, 7)):  # a traced graph stays right at other sizes
        expected = predictor(other)
        for key, value in traced(other).items():
            assert value.shape[-2:] == (heatmap, heatmap)
            torch.testing.assert_close(value, expected[key])


def test_empty_batch():
    predictor = ChartPredictorConfig().build(in_channels=8, heatmap_size=32)
    assert predictor(torch.zeros(0, 8, 16, 16))["u"].shape == (0, 25, 32, 32)


@pytest.mark.parametrize("options", [{"coarse_channels": 3}, {"heatmap_size": 64}])
def test_invalid_options_raise(options):
    with pytest.raises(ValidationError):
        ChartPredictorConfig(**options)
