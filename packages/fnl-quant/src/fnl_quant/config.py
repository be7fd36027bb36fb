"""Config classes of the built-in quantizers (entry points of ``fnl.quantizers``).

This module does not import torch; ``build`` imports the implementation.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fnl_core.groups import QUANTIZERS
from fnl_core.spec import ComponentConfig

#: The dense parts of an FnL detector (``DensePoseRCNN``), by attribute path. Proposal
#: selection, RoI pooling and box decoding sit between them and always run in float.
DETECTOR_PARTS = [
    "backbone",
    "neck",
    "proposal_generator.rpn_head",
    "roi_heads.box_head",
    "roi_heads.box_predictor",
    "roi_heads.densepose_head",
    "roi_heads.densepose_predictor",
]

Backend = Literal["x86", "fbgemm", "qnnpack"]


class _QuantizerConfig(ComponentConfig):
    group: ClassVar[str] = QUANTIZERS

    backend: Backend = Field(
        "x86",
        description="Quantized kernels: x86/fbgemm (x86 servers and desktops), qnnpack (ARM).",
    )
    parts: list[str] = Field(
        default_factory=lambda: list(DETECTOR_PARTS),
        min_length=1,
        description="Submodules to quantize, by attribute path ('' = the whole model).",
    )
    float_module_types: list[str] = Field(
        default_factory=lambda: ["FastNormalizedFusion"],
        description="Class names of modules kept float (BiFPN fast normalised fusion).",
    )
    float_modules: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of module paths kept float, e.g. 'neck.p2_out*'.",
    )
    float_pooling_branches: bool = Field(
        True, description="Keep image-pooling branches (ASPP's global pool → conv) float."
    )
    float_resampling: bool = Field(
        True,
        description="Run interpolation (BiFPN up-sampling, ASPP pooling broadcast) on "
        "dequantized tensors, as the paper; int8 resampling keeps its input's scale, which "
        "breaks a following concatenation (ASPP: 10 dB instead of 33 dB SQNR).",
    )

    def _common(self) -> dict[str, Any]:
        return dict(
            backend=self.backend,
            parts=self.parts,
            float_module_types=self.float_module_types,
            float_modules=self.float_modules,
            float_pooling_branches=self.float_pooling_branches,
            float_resampling=self.float_resampling,
        )


class PTQConfig(_QuantizerConfig):
    """Post-training static int8 quantization: per-channel int8 weights, activation ranges from
    a few calibration images (histogram observers), conv+BN(+ReLU) fused."""

    type: Literal["ptq"] = "ptq"
    num_calibration_images: int = Field(
        8, gt=0, description="Images whose activations set the int8 ranges."
    )

    def build(self) -> Any:
        from fnl_quant.quantizers import PostTrainingQuantizer

        return PostTrainingQuantizer(
            num_calibration_images=self.num_calibration_images, **self._common()
        )


class QATConfig(_QuantizerConfig):
    """Quantization-aware fine-tuning (paper §3.4): fake-quantized training with the model's
    own losses, BN statistics and then observers frozen, converted to int8 at the end."""

    type: Literal["qat"] = "qat"
    iterations: int = Field(100, gt=0, description="Fine-tuning iterations.")
    lr: float = Field(1e-4, gt=0, description="SGD learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(1e-4, ge=0, description="SGD weight decay.")
    freeze_bn_after: int = Field(
        50, ge=0, description="Iteration after which BatchNorm statistics stop updating."
    )
    freeze_observers_after: int = Field(
        80, ge=0, description="Iteration after which the int8 ranges stop updating."
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> QATConfig:
        if self.freeze_observers_after < self.freeze_bn_after:
            raise ValueError(
                f"freeze_observers_after ({self.freeze_observers_after}) must not come before "
                f"freeze_bn_after ({self.freeze_bn_after}): ranges observed before BN is frozen "
                "would not match the frozen model"
            )
        return self

    def build(self) -> Any:
        from fnl_quant.quantizers import QATQuantizer

        return QATQuantizer(
            iterations=self.iterations,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            freeze_bn_after=self.freeze_bn_after,
            freeze_observers_after=self.freeze_observers_after,
            **self._common(),
        )


__all__ = ["DETECTOR_PARTS", "PTQConfig", "QATConfig"]
