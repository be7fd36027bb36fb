"""The torch modules behind the stand-in components of :mod:`detector_standins`.

Kept apart so that registering the stand-ins (their pydantic configs) imports no torch: the
validation-before-torch tests register them in a fresh interpreter.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from fnl_core.spec import ShapeSpec


class TinyBackbone(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        chans = [3, width, width, 2 * width, 2 * width, 4 * width]
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[k], chans[k + 1], 3, stride=2, padding=1) for k in range(5)
        )
        self.bn = nn.BatchNorm2d(width)

    def output_shape(self) -> dict[str, ShapeSpec]:
        w = self.convs[0].out_channels
        return {
            "c2": ShapeSpec(w, 4),
            "c3": ShapeSpec(2 * w, 8),
            "c4": ShapeSpec(2 * w, 16),
            "c5": ShapeSpec(4 * w, 32),
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = {}
        x = F.relu(self.bn(self.convs[0](x)))
        for k, conv in enumerate(self.convs[1:], start=2):
            x = F.relu(conv(x))
            out[f"c{k}"] = x
        return out


class TinyNeck(nn.Module):
    size_divisibility = 32

    def __init__(self, input_shape: dict[str, ShapeSpec], channels: int) -> None:
        super().__init__()
        self.names = list(input_shape)
        self.lateral = nn.ModuleList(
            nn.Conv2d(s.channels, channels, 1) for s in input_shape.values()
        )
        self.channels = channels

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f"p{k}": ShapeSpec(self.channels, 2**k) for k in range(2, 7)}

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        outs = [lat(feats[n]) for n, lat in zip(self.names, self.lateral)]
        for k in range(len(outs) - 2, -1, -1):
            outs[k] = outs[k] + F.interpolate(outs[k + 1], size=outs[k].shape[-2:])
        outs.append(F.max_pool2d(outs[-1], 1, 2))
        return {f"p{k + 2}": o for k, o in enumerate(outs)}


class TinyRPNHead(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for m in (self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        hs = [F.relu(self.conv(f)) for f in feats]
        return [self.objectness_logits(h) for h in hs], [self.anchor_deltas(h) for h in hs]


class TinyBoxHead(nn.Module):
    def __init__(self, in_channels: int, resolution: int, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * resolution**2, dim)
        self.out_features = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc(x.flatten(1)))


class TinyDPHead(nn.Module):
    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


class TinyPredictor(nn.Module):
    def __init__(self, in_channels: int, heatmap_size: int) -> None:
        super().__init__()
        self.size = heatmap_size
        self.heads = nn.ModuleDict(
            {
                k: nn.Conv2d(in_channels, c, 1)
                for k, c in (("coarse_segm", 15), ("fine_segm", 25), ("u", 25), ("v", 25))
            }
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {
            k: F.interpolate(h(x), size=(self.size, self.size), mode="bilinear")
            for k, h in self.heads.items()
        }


class TinyLoss:
    """Point losses at the nearest heatmap cell of each point, coarse CE on ``masks``."""

    def __init__(self, heatmap_size: int) -> None:
        self.size = heatmap_size
        self.calls: list[Any] = []

    def __call__(self, outputs: dict[str, Tensor], targets: Any) -> dict[str, Tensor]:
        self.calls.append(targets)
        s = self.size
        n = targets.point_roi
        gx = targets.gt_boxes[n, 0] + targets.point_xy[:, 0] / 256 * (
            targets.gt_boxes[n, 2] - targets.gt_boxes[n, 0]
        )
        gy = targets.gt_boxes[n, 1] + targets.point_xy[:, 1] / 256 * (
            targets.gt_boxes[n, 3] - targets.gt_boxes[n, 1]
        )
        p = targets.proposals[n]
        j = ((gx - p[:, 0]) / (p[:, 2] - p[:, 0]) * s).long().clamp(0, s - 1)
        i = ((gy - p[:, 1]) / (p[:, 3] - p[:, 1]) * s).long().clamp(0, s - 1)
        fine = outputs["fine_segm"][n, :, i, j]
        ch = targets.point_i
        coarse_t = F.interpolate(targets.masks[:, None].float(), size=(s, s)).long()[:, 0]
        return {
            "loss_densepose_I": F.cross_entropy(fine, ch),
            "loss_densepose_U": (outputs["u"][n, ch, i, j] - targets.point_u).abs().sum() * 0.1,
            "loss_densepose_V": (outputs["v"][n, ch, i, j] - targets.point_v).abs().sum() * 0.1,
            "loss_densepose_S": F.cross_entropy(outputs["coarse_segm"], coarse_t),
        }
