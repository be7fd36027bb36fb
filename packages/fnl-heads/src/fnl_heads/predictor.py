"""DensePose chart predictor: parallel transposed convs (k4, s2, p1) to the heatmap size.

The base outputs are coarse segmentation (K channels), fine segmentation, U and V (25 each).
Optional confidence outputs follow DensePose's ``DensePoseChartWithConfidencePredictor``:

* UV confidence ``iid_iso`` adds ``sigma_2`` (25); ``indep_aniso`` adds ``sigma_2``,
  ``kappa_u`` and ``kappa_v`` (25 each). They are raw deconv outputs: DensePose applies
  softplus + epsilon to ``sigma_2`` only inside its training loss.
* Segmentation confidence adds ``fine_segm_confidence`` and ``coarse_segm_confidence`` (1 channel
  each, ``softplus(x) + epsilon``) and **rescales the logits**: the returned ``fine_segm`` and
  ``coarse_segm`` are the raw logits times their confidence, and everything downstream uses them.
"""

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
#: UV confidence type → its extra outputs (25 channels each).
UV_CONFIDENCE_OUTPUTS = {
    "": (),
    "iid_iso": ("sigma_2",),
    "indep_aniso": ("sigma_2", "kappa_u", "kappa_v"),
}
#: Segmentation confidence outputs (1 channel each).
SEGM_CONFIDENCE_OUTPUTS = ("fine_segm_confidence", "coarse_segm_confidence")


def _deconv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    deconv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)
    nn.init.kaiming_normal_(deconv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(deconv.bias)
    return deconv


class _UpsamplingPredictor(nn.Module):
    """Shared by the chart and CSE predictors: named deconvs, resized to ``heatmap_size``."""

    heatmap_size: int

    def _upsample(self, x: Tensor, names: dict[str, str]) -> dict[str, Tensor]:
        size = self.heatmap_size
        # A traced graph must stay right for every input size, so tracing always records the
        # resize (exactly the identity when 2R == S); eager mode and torch.export, which knows
        # the static RoI size, skip it when it would be the identity.
        resize = torch.jit.is_tracing() or 2 * x.shape[-2] != size or 2 * x.shape[-1] != size
        out: dict[str, Tensor] = {}
        for key, name in names.items():
            y = getattr(self, name)(x)
            if resize:
                y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False)
            out[key] = y
        return out


class ChartPredictor(_UpsamplingPredictor):
    """Coarse/fine segmentation logits and U/V regressions at ``heatmap_size`` [+ confidences].

    ``forward(Tensor[N, D, R, R])`` returns ``coarse_segm`` (N×K×S×S), ``fine_segm``, ``u``,
    ``v`` (N×25×S×S) and the confidence outputs that are enabled (module docstring). Each deconv
    doubles R; the result is resized bilinearly (align_corners=False) to S only when 2R differs
    from S (paper: 32 → 64 = S, no resize; detectron2: 28 → 56 → 112).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        heatmap_size: int,
        coarse_channels: int = 15,
        uv_confidence: str = "",
        segm_confidence: bool = False,
        segm_confidence_epsilon: float = 0.01,
    ) -> None:
        super().__init__()
        if uv_confidence not in UV_CONFIDENCE_OUTPUTS:
            raise ValueError(
                f"ChartPredictor: unknown uv_confidence {uv_confidence!r}; expected one of "
                f"{sorted(UV_CONFIDENCE_OUTPUTS)}"
            )
        self.heatmap_size = heatmap_size
        self.segm_confidence = segm_confidence
        self.segm_confidence_epsilon = segm_confidence_epsilon
        self.names = dict(_OUTPUTS)
        channels = {"coarse_segm": coarse_channels}
        for key in UV_CONFIDENCE_OUTPUTS[uv_confidence]:
            self.names[key] = f"{key}_lowres"
        if segm_confidence:
            for key in SEGM_CONFIDENCE_OUTPUTS:
                self.names[key] = f"{key}_lowres"
                channels[key] = 1
        for key, name in self.names.items():
            self.add_module(name, _deconv(in_channels, channels.get(key, NUM_FINE_CHANNELS)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = self._upsample(x, self.names)
        if self.segm_confidence:
            eps = self.segm_confidence_epsilon
            for key in ("fine_segm", "coarse_segm"):
                confidence = F.softplus(out[f"{key}_confidence"]) + eps
                out[f"{key}_confidence"] = confidence
                out[key] = out[key] * confidence
        return out


class EmbeddingPredictor(_UpsamplingPredictor):
    """Continuous surface embeddings (CSE): ``coarse_segm`` (N×K×S×S logits) and ``embedding``
    (N×E×S×S, raw, not normalised), DensePose's ``DensePoseEmbeddingPredictor``."""

    def __init__(
        self, *, in_channels: int, heatmap_size: int, embed_size: int = 16, coarse_channels: int = 2
    ) -> None:
        super().__init__()
        self.heatmap_size = heatmap_size
        self.embed_size = embed_size
        self.names = {"coarse_segm": "coarse_segm_lowres", "embedding": "embed_lowres"}
        self.coarse_segm_lowres = _deconv(in_channels, coarse_channels)
        self.embed_lowres = _deconv(in_channels, embed_size)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self._upsample(x, self.names)


__all__ = [
    "NUM_FINE_CHANNELS",
    "SEGM_CONFIDENCE_OUTPUTS",
    "UV_CONFIDENCE_OUTPUTS",
    "ChartPredictor",
    "EmbeddingPredictor",
]
