"""Config of the chart-based DensePose losses (entry point ``fnl.densepose_losses: chart``).

The defaults are the weights of the legacy / Caffe2 / FnL chart configs (docs/model.md,
'Losses'). The weight names follow detectron2's keys, which are easy to mix up:
``index_weight`` weighs the *coarse* segmentation loss, ``part_weight`` the *fine* chart index
at the points.

No torch at module level: ``fnl list`` / ``fnl schema`` import this module.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from fnl_core import groups
from fnl_core.spec import ComponentConfig


class ChartLossConfig(ComponentConfig):
    """DensePose chart losses: U/V smooth-L1 and fine-index CE at the annotated points, coarse
    segmentation CE on the dp_masks resampled into each proposal (detectron2 behaviour)."""

    group: ClassVar[str] = groups.DENSEPOSE_LOSSES

    type: Literal["chart"] = "chart"
    index_weight: float = Field(
        2.0,
        ge=0,
        description="Weight of the coarse segmentation loss loss_densepose_S "
        "(d2 INDEX_WEIGHTS; FnL 2.0, d2 new default 5.0).",
    )
    part_weight: float = Field(
        0.3,
        ge=0,
        description="Weight of the fine chart-index cross-entropy at the points "
        "loss_densepose_I (d2 PART_WEIGHTS; FnL 0.3, d2 new default 1.0).",
    )
    point_weight: float = Field(
        0.1,
        ge=0,
        description="Weight of the U and V smooth-L1 losses loss_densepose_U/V "
        "(d2 POINT_REGRESSION_WEIGHTS; FnL 0.1, d2 new default 0.01). These losses are SUMMED "
        "over the points of the batch: the reference ran 2 images per process, so a step over "
        "B images in one process matches it with point_weight × 2/B.",
    )
    smooth_l1_beta: float = Field(
        1.0,
        ge=0,
        description="Beta of the smooth-L1 U/V loss (PyTorch default 1.0, as in the reference).",
    )
    coarse_channels: Literal[2, 15] | None = Field(
        None,
        description="Coarse segmentation channels K: 15 (background + 14 parts) or 2 "
        "(background/foreground, targets = label > 0). None: taken from the predictor output; "
        "when set, the output must have this many channels.",
    )

    uv_confidence: Literal["", "iid_iso", "indep_aniso"] = Field(
        "",
        description="'' = smooth-L1 U/V losses; 'iid_iso' / 'indep_aniso' = one Gaussian "
        "negative log-likelihood loss_densepose_UV that also trains the predictor's sigma_2 "
        "(and kappa_u/v); set it to the predictor's uv_confidence (DensePose WC models).",
    )
    uv_confidence_epsilon: float = Field(
        0.01, gt=0, description="Lower bound added to softplus(sigma_2) (UV_CONFIDENCE.EPSILON)."
    )

    def build(self, heatmap_size: int) -> Any:
        """The loss module; ``heatmap_size`` is the predictor's output size S (HEATMAP_SIZE)."""
        from fnl_heads.losses import ChartDensePoseLoss

        return ChartDensePoseLoss(
            heatmap_size=heatmap_size,
            index_weight=self.index_weight,
            part_weight=self.part_weight,
            point_weight=self.point_weight,
            smooth_l1_beta=self.smooth_l1_beta,
            coarse_channels=self.coarse_channels,
            uv_confidence=self.uv_confidence,
            uv_confidence_epsilon=self.uv_confidence_epsilon,
        )


__all__ = ["ChartLossConfig"]
