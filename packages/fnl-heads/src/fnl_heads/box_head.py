"""Box heads: what runs between the 7×7 RoI pooler and the (detector-owned) box predictor."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from fnl_heads._init import msra_fill, xavier_fill


class FCBoxHead(nn.Module):
    """Flatten → ``num_fc`` × (Linear ``fc_dim`` + ReLU); paper baseline: 2 × 1024.

    ``forward(Tensor[N, C, R, R]) -> Tensor[N, fc_dim]``; layers are named ``fc1``, ``fc2``...
    """

    def __init__(
        self, *, in_channels: int, resolution: int, num_fc: int = 2, fc_dim: int = 1024
    ) -> None:
        super().__init__()
        self.num_fc = num_fc
        in_features = in_channels * resolution * resolution
        for i in range(1, num_fc + 1):
            fc = nn.Linear(in_features, fc_dim)
            xavier_fill(fc)
            self.add_module(f"fc{i}", fc)
            in_features = fc_dim
        self.out_features = fc_dim

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for i in range(1, self.num_fc + 1):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return x


class ConvBoxHead(nn.Module):
    """``num_convs`` × (conv 3×3 + ReLU), then flatten; no FC (Mobile Parsing R-CNN A/B).

    ``forward(Tensor[N, C, R, R]) -> Tensor[N, channels·R·R]`` (flattened in C, H, W order);
    layers are named ``conv1``, ``conv2``...
    """

    def __init__(
        self, *, in_channels: int, resolution: int, num_convs: int = 2, channels: int = 64
    ) -> None:
        super().__init__()
        self.num_convs = num_convs
        cin = in_channels
        for i in range(1, num_convs + 1):
            conv = nn.Conv2d(cin, channels, kernel_size=3, padding=1)
            msra_fill(conv)
            self.add_module(f"conv{i}", conv)
            cin = channels
        self.out_features = channels * resolution * resolution

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.num_convs + 1):
            x = F.relu(getattr(self, f"conv{i}")(x), inplace=True)
        return x.flatten(1)


__all__ = ["ConvBoxHead", "FCBoxHead"]
