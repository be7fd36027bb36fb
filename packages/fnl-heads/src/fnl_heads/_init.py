"""Weight initialisers shared by the heads."""

from __future__ import annotations

from torch import nn


def msra_fill(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU gain) weight, zero bias (detectron2's ``c2_msra_fill``)."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def xavier_fill(module: nn.Module) -> None:
    """Caffe2 "xavier" fill (uniform, fan_in, gain 1) and zero bias, as ``c2_xavier_fill``."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
