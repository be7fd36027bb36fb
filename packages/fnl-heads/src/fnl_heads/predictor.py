"""DensePose chart predictor: four parallel transposed convs (k4, s2, p1) to the heatmap size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Fine segmentation / U / V channels: background + 24 charts.
NUM_FINE_CHANNELS = 25

#: Output key → parameter name (DensePose's ``*_lowres`` names).
_OUTPUTS = {
    "coarse_segm": "ann_index_lowres",
    "fine_segm": "index_uv_lowres",
    "u": "u_lowres",
    "v": "v_lowres",
}


class ChartPredictor(nn.Module):
    """Coarse/fine segmentation logits and U/V regressions at ``heatmap_size``.

    ``forward(Tensor[N, D, R, R])`` returns ``coarse_segm`` (N×K×S×S), ``fine_segm``, ``u``,
    ``v`` (N×25×S×S). Each deconv doubles R; the result is resized bilinearly
    (align_corners=False) to S only when 2R differs from S (paper: 32 → 64 = S, no resize).
    """

    def __init__(self, *, in_channels: int, heatmap_size: int, coarse_channels: int = 15) -> None:
        super().__init__()
        self.heatmap_size = heatmap_size
        channels = {"coarse_segm": coarse_channels}
        for key, name in _OUTPUTS.items():
            deconv = nn.ConvTranspose2d(
                in_channels, channels.get(key, NUM_FINE_CHANNELS), 4, stride=2, padding=1
            )
            nn.init.kaiming_normal_(deconv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(deconv.bias)
            self.add_module(name, deconv)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = self.heatmap_size
        # A traced graph must stay right for every input size, so tracing always records the
        # resize (exactly the identity when 2R == S); eager mode and torch.export, which knows
        # the static RoI size, skip it when it would be the identity.
        resize = torch.jit.is_tracing() or 2 * x.shape[-2] != size or 2 * x.shape[-1] != size
        out: dict[str, Tensor] = {}
        for key, name in _OUTPUTS.items():
            y = getattr(self, name)(x)
            if resize:
                y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False)
            out[key] = y
        return out


__all__ = ["NUM_FINE_CHANNELS", "ChartPredictor"]
