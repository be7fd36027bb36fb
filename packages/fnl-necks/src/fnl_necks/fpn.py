"""Feature Pyramid Network (Lin et al. 2017) with a max-pool P6, as in detectron2's FPN.

Parameter names follow detectron2 (``fpn_lateral{l}``, ``fpn_output{l}``) so its checkpoints
map one-to-one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from fnl_core.spec import ShapeSpec


class FPN(nn.Module):
    """Top-down pyramid: ``P_l = conv3x3(lateral_l(C_l) + up2(top-down_{l+1}))``, plus P6.

    Args:
        in_features: names of the input features, ordered by stride (finest first).
        in_channels: channel count of each input feature.
        in_strides: stride of each input feature; consecutive strides must double.
        out_channels: channels of every output level.

    ``forward(features)`` takes the backbone's feature dict (extra entries are ignored) and
    returns ``{"p{l}": Tensor[B, out_channels, H/2^l, W/2^l]}`` ordered from the finest level
    to ``p{top+1}``, the max-pool (kernel 1, stride 2) of the coarsest output.
    """

    def __init__(
        self,
        *,
        in_features: list[str],
        in_channels: list[int],
        in_strides: list[int],
        out_channels: int,
    ) -> None:
        super().__init__()
        if not (len(in_features) == len(in_channels) == len(in_strides) >= 1):
            raise ValueError("FPN: in_features, in_channels and in_strides need equal lengths")
        self.in_features = list(in_features)
        self.levels = [int(s).bit_length() - 1 for s in in_strides]
        self.out_channels = out_channels
        for level, cin in zip(self.levels, in_channels):
            lateral = nn.Conv2d(cin, out_channels, kernel_size=1)
            output = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
            for conv in (lateral, output):
                nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's "c2 xavier" fill
                nn.init.zeros_(conv.bias)
            self.add_module(f"fpn_lateral{level}", lateral)
            self.add_module(f"fpn_output{level}", output)
        self._out_strides = {f"p{lv}": 2**lv for lv in [*self.levels, self.levels[-1] + 1]}
        self.size_divisibility = int(in_strides[-1])

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(self.out_channels, s) for n, s in self._out_strides.items()}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        inputs = [features[name] for name in self.in_features]
        outs: list[Tensor] = []
        top_down: Tensor | None = None
        for level, x in zip(reversed(self.levels), reversed(inputs)):
            lateral = getattr(self, f"fpn_lateral{level}")(x)
            if top_down is not None:
                lateral = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            top_down = lateral
            outs.insert(0, getattr(self, f"fpn_output{level}")(lateral))
        outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return dict(zip(self._out_strides, outs))


__all__ = ["FPN"]
