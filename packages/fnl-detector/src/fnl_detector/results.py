"""Predictions to the DensePose-COCO results JSON read by fnl-eval (docs/evaluation.md).

One detection::

    {"image_id": 42, "category_id": 1, "bbox": [x, y, w, h], "score": 0.97,
     "densepose": {"uv_shape": [3, h, w], "uv_data": "<base64>"}}

``uv_data`` is base64 of the zlib-compressed bytes of the (3, h, w) uint8 IUV raster in C
order (:func:`fnl_detector.postprocess.densepose_to_iuv`). The format and its encoder live in
:mod:`fnl_core.results`, shared with fnl-eval; an integration test checks that fnl-eval reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fnl_core.results import encode_iuv, make_result
from fnl_detector.postprocess import densepose_to_iuv


def to_coco_results(
    image_id: int, prediction: Mapping[str, Any], category_id: int = 1
) -> list[dict[str, Any]]:
    """Result entries of one image's prediction (``boxes`` XYXY original frame, ``scores``,
    ``densepose`` head outputs), in score order as given."""
    import torch

    boxes = prediction["boxes"].detach().to(torch.float32).cpu()
    scores = prediction["scores"].detach().cpu().tolist()
    iuvs = densepose_to_iuv(
        boxes, {k: v.detach().cpu() for k, v in prediction["densepose"].items()}
    )
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    return [
        make_result(image_id, box, score, iuv, category_id)
        for box, score, iuv in zip(xywh, scores, iuvs)
    ]


__all__ = ["encode_iuv", "to_coco_results"]
