"""Config classes of the built-in necks (entry points of ``fnl.necks``).

This module does not import torch; ``build`` imports the implementation.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from fnl_core.groups import NECKS
from fnl_core.spec import ComponentConfig, ShapeSpec
from fnl_necks._levels import select_inputs

_IN_FEATURES_DOC = (
    "Backbone features to use, by name (null = all of them); their strides must double from "
    "one to the next. Outputs are named p<log2(stride)>, plus one max-pooled level on top."
)


def _inputs(component: str, input_shape: dict[str, ShapeSpec], in_features: list[str] | None):
    chosen = select_inputs(component, input_shape, in_features)
    return dict(
        in_features=[n for n, _, _ in chosen],
        in_channels=[s.channels for _, s, _ in chosen],
        in_strides=[s.stride for _, s, _ in chosen],
    )


class FPNConfig(ComponentConfig):
    """Feature Pyramid Network: lateral 1×1 + output 3×3 convs, nearest ×2 top-down, P6 by
    max-pool (kernel 1, stride 2). Paper baseline / Parsing R-CNN / Mobile A: 256 channels."""

    group: ClassVar[str] = NECKS
    type: Literal["fpn"] = "fpn"
    out_channels: int = Field(256, gt=0, description="Channels of every output level.")
    in_features: list[str] | None = Field(None, min_length=1, description=_IN_FEATURES_DOC)

    def build(self, input_shape: dict[str, ShapeSpec]) -> Any:
        from fnl_necks.fpn import FPN

        return FPN(
            out_channels=self.out_channels, **_inputs("neck 'fpn'", input_shape, self.in_features)
        )


class BiFPNConfig(ComponentConfig):
    """BiFPN of Mobile Parsing R-CNN (B): separable conv blocks with BN, fast normalised
    fusion, top-down then bottom-up, P6 by max-pool. Paper: 64 channels, one layer."""

    group: ClassVar[str] = NECKS
    type: Literal["bifpn"] = "bifpn"
    out_channels: int = Field(64, gt=0, description="Channels of every output level.")
    in_features: list[str] | None = Field(None, min_length=2, description=_IN_FEATURES_DOC)
    num_layers: int = Field(
        1, ge=1, description="Stacked BiFPN layers; extra layers repeat on their own outputs."
    )
    upsample: Literal["nearest", "bilinear"] = Field(
        "nearest", description="Top-down up-sampling mode (bilinear uses align_corners=False)."
    )
    norm: Literal["bn", "sync_bn"] = Field(
        "bn", description="Norm of the conv blocks: BatchNorm2d or SyncBatchNorm (multi-GPU)."
    )
    bn_momentum: float = Field(0.03, gt=0, le=1, description="BatchNorm momentum (PyTorch).")
    bn_eps: float = Field(1e-5, gt=0, description="BatchNorm epsilon.")
    fusion_eps: float = Field(1e-4, gt=0, description="Epsilon of the fast normalised fusion.")

    def build(self, input_shape: dict[str, ShapeSpec]) -> Any:
        from fnl_necks.bifpn import BiFPN

        return BiFPN(
            out_channels=self.out_channels,
            num_layers=self.num_layers,
            upsample=self.upsample,
            norm=self.norm,
            bn_momentum=self.bn_momentum,
            bn_eps=self.bn_eps,
            fusion_eps=self.fusion_eps,
            **_inputs("neck 'bifpn'", input_shape, self.in_features),
        )


__all__ = ["BiFPNConfig", "FPNConfig"]
