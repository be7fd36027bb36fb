"""Config class of the ``timm`` backbone (entry point ``fnl.backbones: timm``).

This module does not import torch or timm; :meth:`TimmBackboneConfig.build` imports the
implementation (:mod:`fnl_backbones.timm_backbone`).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from fnl_core.groups import BACKBONES
from fnl_core.spec import ComponentConfig

#: Suffixes accepted for a local weights file given as ``pretrained``.
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
DEFAULT_OUT_INDICES = [1, 2, 3, 4]


def _unique_non_negative(field: str, values: list[int] | None) -> list[int] | None:
    if values is None:
        return None
    if any(v < 0 for v in values):
        raise ValueError(f"{field} must be non-negative indices, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"{field} must not repeat an index, got {values}")
    return sorted(values)


class TimmBackboneConfig(ComponentConfig):
    """Any timm CNN as a feature extractor: ``{"c2": ..., "c5": ...}`` named by stride.

    Two ways to pick features:

    * ``out_indices`` (default): indices into timm's ``feature_info`` of a ``features_only``
      model (one feature per stride; ``feature_location="expansion"`` takes EfficientNet-family
      features at the input of the last block's point-wise linear conv: Mobile B's BiFPN).
    * ``stages``: outputs of the given stages of the model's ``blocks`` (EfficientNet and
      MobileNetV3 families), e.g. ``[1, 2, 3, 5]`` for Mobile A's FPN inputs.
    """

    group: ClassVar[str] = BACKBONES
    type: Literal["timm"] = "timm"

    model_name: str = Field(
        min_length=1,
        description="timm model name (see timm.list_models), optionally with a weight tag "
        "('efficientnet_b0.ra_in1k').",
    )
    out_indices: list[int] = Field(
        default_factory=lambda: list(DEFAULT_OUT_INDICES),
        min_length=1,
        description="Indices into timm's feature_info (features_only); ignored when `stages` "
        "is set (then leave it at its default). For EfficientNet/ResNet families 1..4 are "
        "strides 4, 8, 16, 32.",
    )
    feature_location: Literal["", "expansion"] = Field(
        "",
        description="'' = timm's default (block outputs); 'expansion' = input of the last "
        "point-wise linear conv of each stride (EfficientNet/MobileNetV3 families only).",
    )
    stages: list[int] | None = Field(
        None,
        min_length=1,
        description="Take the outputs of these 0-based stages of the model's `blocks` instead "
        "of timm's feature_info (EfficientNet/MobileNetV3 families). Paper A: [1, 2, 3, 5]; "
        "MobileNetV3-Small: [0, 1, 2, 4].",
    )
    norm: Literal["frozen_bn", "bn", "sync_bn"] = Field(
        "frozen_bn",
        description="frozen_bn: BatchNorm statistics and affine values become fixed buffers "
        "(timm's fused activations are kept); bn: trainable BatchNorm; sync_bn: "
        "torch.nn.SyncBatchNorm (keeping fused activations).",
    )
    freeze_at: int | None = Field(
        None,
        ge=0,
        description="Freeze (requires_grad=False) the stem and the first N stages; 0 freezes "
        "nothing. null = the reference rule: stem and every stage up to the one that holds "
        "the stride-4 feature (spnasnet_100: 2, ResNet-50: 1, MobileNetV3-Small: 1).",
    )
    pretrained: bool | str = Field(
        False,
        description="false = random init; true = timm's ImageNet weights (downloads); a path "
        "= local weights file (.safetensors, or .pth/.pt/.bin read with weights_only=True) "
        "holding the timm model's state dict.",
    )
    bn_eps: float | None = Field(
        None, gt=0, description="BatchNorm eps; null = timm's (1e-3 for 'tf_' models)."
    )
    bn_momentum: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Momentum of trainable BatchNorm (PyTorch convention); null = 0.01 for "
        "'tf_' models, else timm's (0.1).",
    )
    prune: bool = Field(
        True,
        description="Drop the stages after the last one used (and any classifier head), so "
        "parameter counts follow the paper.",
    )
    stride_in_1x1: bool = Field(
        False,
        description="ResNet bottlenecks downsample in the first 1x1 conv instead of the 3x3 "
        "(detectron2's MSRA ResNets, STRIDE_IN_1X1); needed to run detectron2 ResNet weights.",
    )

    @field_validator("out_indices")
    @classmethod
    def _check_out_indices(cls, v: list[int]) -> list[int]:
        return _unique_non_negative("out_indices", v) or v

    @field_validator("stages")
    @classmethod
    def _check_stages(cls, v: list[int] | None) -> list[int] | None:
        return _unique_non_negative("stages", v)

    @field_validator("pretrained")
    @classmethod
    def _check_pretrained(cls, v: bool | str) -> bool | str:
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("pretrained must be true, false or a path to a weights file")
            if not v.lower().endswith(WEIGHTS_SUFFIXES):
                raise ValueError(
                    f"pretrained weights file {v!r} must end with one of "
                    f"{', '.join(WEIGHTS_SUFFIXES)}"
                )
        return v

    @model_validator(mode="after")
    def _check_feature_selection(self) -> TimmBackboneConfig:
        if self.stages is not None:
            if self.out_indices != DEFAULT_OUT_INDICES:
                raise ValueError(
                    "set either out_indices or stages, not both (out_indices is used only "
                    "without stages)"
                )
            if self.feature_location:
                raise ValueError(
                    "stages takes stage outputs; feature_location='expansion' works with "
                    "out_indices only"
                )
        return self

    def build(self) -> Any:
        from fnl_backbones.timm_backbone import TimmBackbone

        pretrained: bool | PurePath = self.pretrained
        if isinstance(pretrained, str):
            pretrained = PurePath(pretrained)
        return TimmBackbone(
            model_name=self.model_name,
            out_indices=self.out_indices,
            feature_location=self.feature_location,
            stages=self.stages,
            norm=self.norm,
            freeze_at=self.freeze_at,
            pretrained=pretrained,
            bn_eps=self.bn_eps,
            bn_momentum=self.bn_momentum,
            prune=self.prune,
            stride_in_1x1=self.stride_in_1x1,
        )
