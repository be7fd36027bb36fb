"""Registry entries of fnl-eval: the SMPL surface and the DensePose-COCO evaluator.

Kept free of numpy/scipy/pycocotools imports so that listing components and printing schemas
stays fast; the implementations are imported inside ``build``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from fnl_core.groups import EVALUATORS, SURFACES
from fnl_core.spec import ComponentConfig

MetricName = Literal["bbox", "segm", "gps", "gpsm", "dp_segm"]


class SMPLSurfaceConfig(ComponentConfig):
    """The SMPL body surface of the DensePose evaluator, read from local data files."""

    type: Literal["smpl"] = "smpl"
    group: ClassVar[str] = SURFACES

    path: Path = Field(
        description="folder holding SMPL_subdiv.mat, SMPL_SUBDIV_TRANSFORM.mat and "
        "Pdist_matrix.pkl (https://dl.fbaipublicfiles.com/densepose/data/)"
    )

    def build(self) -> Any:
        from fnl_eval.smpl import SMPLSurface

        return SMPLSurface.from_folder(self.path)


class DensePoseEvaluatorConfig(ComponentConfig):
    """Box AP, mask AP, GPS AP and GPSm AP of DensePose-COCO results (docs/evaluation.md)."""

    type: Literal["densepose_coco"] = "densepose_coco"
    group: ClassVar[str] = EVALUATORS

    metrics: list[MetricName] = Field(
        default_factory=lambda: ["bbox", "segm", "gps", "gpsm"],
        min_length=1,
        description="bbox and segm: COCO box / mask AP; gps, gpsm: DensePose GPS / GPSm AP "
        "(need a surface); dp_segm: DensePose mask-IoU AP (maxDets 20, pass-2 rescue)",
    )
    ignore_thr_bb: float = Field(
        0.7, gt=0, le=1, description="ignore-region share of a box above which it is dropped"
    )
    ignore_thr_uv: float = Field(
        0.9,
        gt=0,
        le=1,
        description="ignore-region share of a DensePose mask above which it is dropped",
    )
    rescue_box_iou: float = Field(
        0.8, gt=0, le=1, description="box IoU of the second matching pass (non-DensePose GT)"
    )

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"metrics must not repeat a name, got {value}")
        return value

    def build(self, surface: Any | None = None) -> Any:
        """An evaluator with ``evaluate(gt_json, results) -> {metric: {stat: value}}``."""
        from fnl_eval.evaluator import DensePoseEvaluator

        return DensePoseEvaluator(
            surface=surface,
            metrics=self.metrics,
            ignore_thr_bb=self.ignore_thr_bb,
            ignore_thr_uv=self.ignore_thr_uv,
            rescue_box_iou=self.rescue_box_iou,
        )
