"""The ``tiny_convnet`` module."""

from __future__ import annotations

import torch
from torch import nn

from fnl_core.spec import ShapeSpec


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyConvNet(nn.Module):
    """Stem (stride 4) and three stride-2 stages; returns ``c2``..``c5``."""

    def __init__(self, *, width: int = 16) -> None:
        super().__init__()
        chans = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(_conv_bn_relu(3, width, 2), _conv_bn_relu(width, width, 2))
        self.stages = nn.ModuleList([_conv_bn_relu(chans[i], chans[i + 1], 2) for i in range(3)])
        self._shapes = {f"c{i + 2}": ShapeSpec(c, 2 ** (i + 2)) for i, c in enumerate(chans)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {"c2": x}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[f"c{i + 3}"] = x
        return out
