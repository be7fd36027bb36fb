"""RPN head shared across pyramid levels (detectron2 ``StandardRPNHead`` layout)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class StandardRPNHead(nn.Module):
    """conv 3×3 C→C + ReLU, then 1×1 convs to ``A`` objectness logits and ``4A`` box deltas.

    ``forward(features)`` takes one map per level and returns ``(objectness, deltas)``: lists
    of ``Tensor[B, A, H, W]`` and ``Tensor[B, 4A, H, W]`` (torchvision ``RPNHead`` convention;
    delta channels ``4a..4a+3`` are ``(dx, dy, dw, dh)`` of anchor ``a``).
    """

    def __init__(self, *, in_channels: int, num_anchors: int, box_dim: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * box_dim, kernel_size=1)
        for conv in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        objectness: list[Tensor] = []
        deltas: list[Tensor] = []
        for x in features:
            t = F.relu(self.conv(x), inplace=True)
            objectness.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return objectness, deltas


__all__ = ["StandardRPNHead"]
