"""DensePose FPN feature decoder (detectron2 DensePose ``ROI_DENSEPOSE_HEAD.DECODER_ON``).

A Panoptic-FPN style semantic head: each input level goes through ``max(1, log2(stride /
common_stride))`` rounds of conv 3×3 (+ norm) + ReLU, each followed by a ×2 bilinear upsampling
while the level is coarser than ``common_stride``; the levels are summed and a 1×1 conv
projects to ``num_classes`` channels. The DensePose pooler then reads this single map at
``common_stride``. Names follow detectron2 (``p2.0``, ``p4.2``, ``predictor``).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from fnl_heads._init import msra_fill


class _ConvNormReLU(nn.Conv2d):
    """detectron2 ``Conv2d`` with ``norm`` and ReLU: conv → [norm] → ReLU."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(cin, cout, 3, padding=1, bias=not norm)
        self.norm = nn.GroupNorm(32, cout) if norm == "gn" else None
        msra_fill(self)

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return x.relu_()


class DensePoseDecoder(nn.Module):
    """Merge FPN levels into one map at ``common_stride``.

    Args:
        in_features: level names, finest first (``["p2", "p3", "p4", "p5"]``).
        in_channels: channels of each level (all equal in an FPN).
        strides: stride of each level.
        conv_dims: width of the per-level convs.
        num_classes: output channels (detectron2 ``DECODER_NUM_CLASSES``, 256).
        common_stride: output stride (4).
        norm: ``""`` (convs with bias) or ``"gn"`` (GroupNorm(32)).

    ``forward(list[Tensor])`` takes the levels in ``in_features`` order.
    """

    def __init__(
        self,
        *,
        in_features: list[str],
        in_channels: list[int],
        strides: list[int],
        conv_dims: int = 256,
        num_classes: int = 256,
        common_stride: int = 4,
        norm: str = "",
    ) -> None:
        super().__init__()
        if norm not in ("", "gn"):
            raise ValueError(f"DensePoseDecoder: unknown norm {norm!r}; expected '' or 'gn'")
        if not (len(in_features) == len(in_channels) == len(strides)) or not in_features:
            raise ValueError(
                "DensePoseDecoder: in_features, in_channels and strides must have the same "
                f"non-zero length, got {len(in_features)}, {len(in_channels)}, {len(strides)}"
            )
        self.in_features = list(in_features)
        self.common_stride = common_stride
        for name, channels, stride in zip(in_features, in_channels, strides):
            if stride < common_stride:
                raise ValueError(
                    f"DensePoseDecoder: level {name} has stride {stride}, finer than the "
                    f"common stride {common_stride}"
                )
            ops: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(common_stride)))):
                ops.append(_ConvNormReLU(channels if k == 0 else conv_dims, conv_dims, norm))
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(name, nn.Sequential(*ops))
        self.predictor = nn.Conv2d(conv_dims, num_classes, kernel_size=1)
        msra_fill(self.predictor)
        self.out_channels = num_classes

    def forward(self, features: list[Tensor]) -> Tensor:
        x = getattr(self, self.in_features[0])(features[0])
        for name, feature in zip(self.in_features[1:], features[1:]):
            x = x + getattr(self, name)(feature)
        return self.predictor(x)


__all__ = ["DensePoseDecoder"]
