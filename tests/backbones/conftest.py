"""Shared backbones for tests/backbones: built once per module (random init, no download)."""

from __future__ import annotations

import pytest
import torch

from fnl_backbones.timm_backbone import TimmBackbone


def _build(seed: int = 0, **kwargs) -> TimmBackbone:
    torch.manual_seed(seed)
    return TimmBackbone(**kwargs)


def _randomize_batch_norm(module: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine values, so that a dropped BN or act shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.fixture
def build():
    """``build(seed=0, **TimmBackbone kwargs)``: a backbone built under a fixed seed."""
    return _build


@pytest.fixture
def randomize_batch_norm():
    """``randomize_batch_norm(module)``: random BN statistics and affine values."""
    return _randomize_batch_norm


@pytest.fixture(scope="module")
def mobile_b() -> TimmBackbone:
    """Mobile B's backbone: spnasnet_100 expansion features, frozen BN, reference freezing."""
    return _build(model_name="spnasnet_100", feature_location="expansion").eval()
