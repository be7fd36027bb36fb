"""Config classes of the built-in RPN, box and DensePose heads and the chart predictor.

This module does not import torch; each ``build`` imports its implementation. (The DensePose
loss configs live in :mod:`fnl_heads.loss_config`.)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fnl_core.groups import (
    BOX_HEADS,
    DENSEPOSE_DECODERS,
    DENSEPOSE_EMBEDDERS,
    DENSEPOSE_HEADS,
    DENSEPOSE_PREDICTORS,
    RPN_HEADS,
)
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
    """Parallel deconvs (k4, s2, p1): coarse segm (K), fine segm, U, V (25 each), plus the
    optional confidences of DensePose's ``DensePoseChartWithConfidencePredictor``."""

    group: ClassVar[str] = DENSEPOSE_PREDICTORS
    type: Literal["chart"] = "chart"
    coarse_channels: Literal[15, 2] = Field(
        15, description="Coarse segmentation classes: 15 (background + 14 parts) or 2 (bg/fg)."
    )
    uv_confidence: Literal["", "iid_iso", "indep_aniso"] = Field(
        "",
        description="UV confidence: '' none; 'iid_iso' adds sigma_2 (WC1 models); "
        "'indep_aniso' adds sigma_2, kappa_u, kappa_v (WC2 models). Raw outputs.",
    )
    segm_confidence: bool = Field(
        False,
        description="Segmentation confidence (the 'M' models): adds fine/coarse_segm_confidence "
        "= softplus(.) + epsilon and multiplies the fine/coarse logits by them.",
    )
    segm_confidence_epsilon: float = Field(
        0.01, gt=0, description="Epsilon added to the segmentation confidences."
    )

    def build(self, in_channels: int, heatmap_size: int) -> Any:
        from fnl_heads.predictor import ChartPredictor

        return ChartPredictor(
            in_channels=in_channels,
            heatmap_size=heatmap_size,
            coarse_channels=self.coarse_channels,
            uv_confidence=self.uv_confidence,
            segm_confidence=self.segm_confidence,
            segm_confidence_epsilon=self.segm_confidence_epsilon,
        )


class EmbeddingPredictorConfig(ComponentConfig):
    """CSE predictor: deconvs to coarse segmentation (K) and per-pixel embeddings (E).

    Pair it with a ``densepose.embedder`` (the mesh vertex embeddings) to get closest vertices.
    """

    group: ClassVar[str] = DENSEPOSE_PREDICTORS
    type: Literal["cse"] = "cse"
    embed_size: int = Field(16, gt=0, description="Embedding dimension E (d2 CSE.EMBED_SIZE).")
    coarse_channels: int = Field(2, ge=2, description="Coarse segmentation classes.")

    def build(self, in_channels: int, heatmap_size: int) -> Any:
        from fnl_heads.predictor import EmbeddingPredictor

        return EmbeddingPredictor(
            in_channels=in_channels,
            heatmap_size=heatmap_size,
            embed_size=self.embed_size,
            coarse_channels=self.coarse_channels,
        )


class FPNDecoderConfig(ComponentConfig):
    """DensePose FPN feature decoder (detectron2 ``DECODER_ON``): every pooler level merged
    into one map at ``common_stride``, which the DensePose pooler then reads."""

    group: ClassVar[str] = DENSEPOSE_DECODERS
    type: Literal["fpn"] = "fpn"
    conv_dims: int = Field(256, gt=0, description="Width of the per-level convs.")
    num_classes: int = Field(256, gt=0, description="Output channels (DECODER_NUM_CLASSES).")
    common_stride: int = Field(4, gt=0, description="Output stride (DECODER_COMMON_STRIDE).")
    norm: Literal["", "gn"] = Field("", description="'' (convs with bias) or 'gn'.")

    def build(self, input_shape: dict[str, Any]) -> Any:
        """``input_shape``: level name → ShapeSpec (channels, stride), finest first."""
        from fnl_heads.decoder import DensePoseDecoder

        if self.norm == "gn" and self.conv_dims % _GN_GROUPS:
            raise ValueError(
                f"densepose.decoder 'fpn': conv_dims = {self.conv_dims} must be a multiple of "
                f"{_GN_GROUPS} for GroupNorm({_GN_GROUPS})"
            )
        return DensePoseDecoder(
            in_features=list(input_shape),
            in_channels=[s.channels for s in input_shape.values()],
            strides=[s.stride for s in input_shape.values()],
            conv_dims=self.conv_dims,
            num_classes=self.num_classes,
            common_stride=self.common_stride,
            norm=self.norm,
        )


class VertexFeatureEmbedderConfig(ComponentConfig):
    """CSE mesh vertex embeddings = normalize(features [V, F] @ embeddings [F, E]); the
    features are a buffer filled from the checkpoint (DensePose ``vertex_feature``)."""

    group: ClassVar[str] = DENSEPOSE_EMBEDDERS
    type: Literal["vertex_feature"] = "vertex_feature"
    mesh_name: str = Field("smpl_27554", min_length=1, description="Mesh name (key suffix).")
    num_vertices: int = Field(27554, gt=0)
    feature_dim: int = Field(256, gt=0)

    def build(self, embed_size: int) -> Any:
        from fnl_heads.cse import MeshEmbedder, VertexFeatureEmbedder

        embedder = VertexFeatureEmbedder(
            num_vertices=self.num_vertices, feature_dim=self.feature_dim, embed_dim=embed_size
        )
        return MeshEmbedder({self.mesh_name: embedder})


class VertexDirectEmbedderConfig(ComponentConfig):
    """CSE mesh vertex embeddings learned directly: normalize(embeddings [V, E])
    (DensePose ``vertex_direct``)."""

    group: ClassVar[str] = DENSEPOSE_EMBEDDERS
    type: Literal["vertex_direct"] = "vertex_direct"
    mesh_name: str = Field("smpl_27554", min_length=1, description="Mesh name (key suffix).")
    num_vertices: int = Field(27554, gt=0)

    def build(self, embed_size: int) -> Any:
        from fnl_heads.cse import MeshEmbedder, VertexDirectEmbedder

        embedder = VertexDirectEmbedder(num_vertices=self.num_vertices, embed_dim=embed_size)
        return MeshEmbedder({self.mesh_name: embedder})


__all__ = [
    "ChartPredictorConfig",
    "ConvBoxHeadConfig",
    "DeepLabHeadConfig",
    "EmbeddingPredictorConfig",
    "FCBoxHeadConfig",
    "FPNDecoderConfig",
    "StandardRPNHeadConfig",
    "V1ConvXHeadConfig",
    "VertexDirectEmbedderConfig",
    "VertexFeatureEmbedderConfig",
]
