"""Config classes of the built-in RPN, box and DensePose heads and the chart predictor.

This module does not import torch; each ``build`` imports its implementation. (The DensePose
loss configs live in :mod:`fnl_heads.loss_config`.)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fnl_core.groups import BOX_HEADS, DENSEPOSE_HEADS, DENSEPOSE_PREDICTORS, RPN_HEADS
from fnl_core.spec import ComponentConfig

_GN_GROUPS = 32


class StandardRPNHeadConfig(ComponentConfig):
    """RPN head shared by all levels: conv 3×3 C→C + ReLU, 1×1 to A logits and 4A deltas."""

    group: ClassVar[str] = RPN_HEADS
    type: Literal["standard"] = "standard"

    def build(self, in_channels: int, num_anchors: int) -> Any:
        from fnl_heads.rpn import StandardRPNHead

        return StandardRPNHead(in_channels=in_channels, num_anchors=num_anchors)


class FCBoxHeadConfig(ComponentConfig):
    """Flatten → ``num_fc`` fully connected layers with ReLU (DensePose R-CNN, Parsing R-CNN)."""

    group: ClassVar[str] = BOX_HEADS
    type: Literal["2fc"] = "2fc"
    num_fc: int = Field(2, ge=1, description="Number of fully connected layers.")
    fc_dim: int = Field(1024, gt=0, description="Width of each fully connected layer.")

    def build(self, in_channels: int, resolution: int) -> Any:
        from fnl_heads.box_head import FCBoxHead

        return FCBoxHead(
            in_channels=in_channels, resolution=resolution, num_fc=self.num_fc, fc_dim=self.fc_dim
        )


class ConvBoxHeadConfig(ComponentConfig):
    """``num_convs`` × (conv 3×3 + ReLU), flattened, no FC (Mobile Parsing R-CNN A/B)."""

    group: ClassVar[str] = BOX_HEADS
    type: Literal["conv"] = "conv"
    num_convs: int = Field(2, ge=1, description="Number of 3×3 convs.")
    channels: int | None = Field(
        None, gt=0, description="Conv width; null = the pooled features' channels (paper)."
    )

    def build(self, in_channels: int, resolution: int) -> Any:
        from fnl_heads.box_head import ConvBoxHead

        return ConvBoxHead(
            in_channels=in_channels,
            resolution=resolution,
            num_convs=self.num_convs,
            channels=self.channels or in_channels,
        )


class V1ConvXHeadConfig(ComponentConfig):
    """DensePose R-CNN baseline head: ``num_convs`` × (conv k×k + ReLU), default 8 × 3×3 × 512."""

    group: ClassVar[str] = DENSEPOSE_HEADS
    type: Literal["v1convx"] = "v1convx"
    num_convs: int = Field(8, ge=1, description="Number of stacked convs.")
    channels: int = Field(512, gt=0, description="Width of each conv.")
    kernel_size: int = Field(3, ge=1, description="Conv kernel size (odd).")

    @model_validator(mode="after")
    def _odd_kernel(self) -> V1ConvXHeadConfig:
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd to keep the RoI size, got {self.kernel_size}"
            )
        return self

    def build(self, in_channels: int) -> Any:
        from fnl_heads.densepose_head import V1ConvXHead

        return V1ConvXHead(
            in_channels=in_channels,
            num_convs=self.num_convs,
            channels=self.channels,
            kernel_size=self.kernel_size,
        )


class DeepLabHeadConfig(ComponentConfig):
    """Parsing R-CNN head: ASPP (1×1, dilated 3×3s, image pooling) → 1×1 projection
    [→ non-local block] → ``num_convs`` × conv 3×3, ReLU after every conv.

    Paper settings: Mobile B 64/64, Mobile A 256/256, no non-local; Parsing R-CNN ASPP 256,
    head 512 with a non-local block (BN). Null widths take the pooled features' channels.
    """

    group: ClassVar[str] = DENSEPOSE_HEADS
    type: Literal["deeplab"] = "deeplab"
    aspp_channels: int | None = Field(
        None, gt=0, description="Width of each ASPP branch; null = input channels."
    )
    channels: int | None = Field(
        None, gt=0, description="Width of the stacked convs (head output); null = input channels."
    )
    project_channels: int | None = Field(
        None,
        gt=0,
        description=(
            "Output of the ASPP projection, where the non-local block runs; null = `channels` "
            "(paper). The 2022 FnL Parsing R-CNN release projects to the ASPP width instead."
        ),
    )
    num_convs: int = Field(4, ge=0, description="Number of stacked 3×3 convs after the ASPP.")
    dilations: list[int] = Field(
        [6, 12, 18], min_length=1, description="Dilations of the ASPP 3×3 branches."
    )
    non_local: bool = Field(False, description="Insert a non-local block after the ASPP.")
    non_local_norm: Literal["bn", "gn"] = Field(
        "gn",
        description="Norm inside the non-local block's output conv: 'bn' (FnL paper code) or "
        "'gn' (detectron2 / FnL release); same parameter count.",
    )
    norm: Literal["", "gn"] = Field(
        "",
        description="'' = convs with bias and no norm (FnL); 'gn' = GroupNorm(32), no bias "
        "(detectron2's DeepLab head).",
    )

    @model_validator(mode="after")
    def _positive_dilations(self) -> DeepLabHeadConfig:
        if any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations must all be >= 1, got {self.dilations}")
        return self

    def widths(self, in_channels: int) -> tuple[int, int, int]:
        """(aspp_channels, project_channels, channels) resolved for ``in_channels``."""
        channels = self.channels or in_channels
        return (self.aspp_channels or in_channels, self.project_channels or channels, channels)

    def build(self, in_channels: int) -> Any:
        from fnl_heads.densepose_head import DeepLabHead

        aspp, project, channels = self.widths(in_channels)
        grouped = {"aspp_channels": aspp, "channels": channels} if self.norm == "gn" else {}
        if self.non_local and self.non_local_norm == "gn":
            grouped["project_channels"] = project
        for name, width in grouped.items():
            if width % _GN_GROUPS:
                raise ValueError(
                    f"densepose_head 'deeplab': {name} = {width} must be a multiple of "
                    f"{_GN_GROUPS} for GroupNorm({_GN_GROUPS})"
                )
        return DeepLabHead(
            in_channels=in_channels,
            aspp_channels=aspp,
            project_channels=project,
            channels=channels,
            num_convs=self.num_convs,
            dilations=self.dilations,
            non_local=self.non_local,
            non_local_norm=self.non_local_norm,
            norm=self.norm,
        )


class ChartPredictorConfig(ComponentConfig):
    """Four parallel deconvs (k4, s2, p1): coarse segm (K), fine segm, U, V (25 each)."""

    group: ClassVar[str] = DENSEPOSE_PREDICTORS
    type: Literal["chart"] = "chart"
    coarse_channels: Literal[15, 2] = Field(
        15, description="Coarse segmentation classes: 15 (background + 14 parts) or 2 (bg/fg)."
    )

    def build(self, in_channels: int, heatmap_size: int) -> Any:
        from fnl_heads.predictor import ChartPredictor

        return ChartPredictor(
            in_channels=in_channels,
            heatmap_size=heatmap_size,
            coarse_channels=self.coarse_channels,
        )


__all__ = [
    "ChartPredictorConfig",
    "ConvBoxHeadConfig",
    "DeepLabHeadConfig",
    "FCBoxHeadConfig",
    "StandardRPNHeadConfig",
    "V1ConvXHeadConfig",
]
