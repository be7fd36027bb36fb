"""Predictions to the DensePose-COCO results JSON read by fnl-eval (docs/evaluation.md).

One detection::

    {"image_id": 42, "category_id": 1, "bbox": [x, y, w, h], "score": 0.97,
     "densepose": {"uv_shape": [3, h, w], "uv_data": "<base64>"}}

``uv_data`` is base64 of the zlib-compressed bytes of the (3, h, w) uint8 IUV raster in C
order (:func:`fnl_detector.postprocess.densepose_to_iuv`). Confidence models add
``confidences`` and CSE models give ``cse`` instead of ``densepose`` (see :mod:`fnl_core.results`
and docs/evaluation.md). The format and its encoders live in :mod:`fnl_core.results`, shared
with fnl-eval; an integration test checks that fnl-eval reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fnl_core.results import encode_array, encode_iuv, make_result
from fnl_detector.postprocess import (
    chart_confidences,
    densepose_to_charts,
    densepose_to_vertex_maps,
)


def to_coco_results(
    image_id: int,
    prediction: Mapping[str, Any],
    category_id: int = 1,
    embedder: Any = None,
) -> list[dict[str, Any]]:
    """Result entries of one image's prediction (``boxes`` XYXY original frame, ``scores``,
    ``densepose`` head outputs), in score order as given.

    Chart models give ``densepose`` (the IUV raster) and, when the model predicts them,
    ``confidences``. CSE models (``densepose`` outputs with ``embedding``) need ``embedder``
    (``model.roi_heads.embedder``) and give ``cse`` (closest-vertex map and mask) instead.
    """
    import torch

    boxes = prediction["boxes"].detach().to(torch.float32).cpu()
    scores = prediction["scores"].detach().cpu().tolist()
    dp = {k: v.detach().cpu() for k, v in prediction["densepose"].items()}
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    if "embedding" in dp:
        return _cse_results(image_id, boxes, xywh, scores, dp, category_id, embedder)
    charts = densepose_to_charts(boxes, dp)
    confidences = chart_confidences(boxes, dp, [labels for labels, _ in charts])
    out = []
    for box, score, (labels, uv), conf in zip(xywh, scores, charts, confidences):
        quant = (uv * 255.0).clamp(0, 255).to(torch.uint8)
        iuv = torch.cat([labels[None].to(torch.uint8), quant]).numpy()
        entry = make_result(image_id, box, score, iuv, category_id)
        if conf:
            entry["confidences"] = {k: encode_array(v.float().numpy()) for k, v in conf.items()}
        out.append(entry)
    return out


def _cse_results(image_id, boxes, xywh, scores, dp, category_id, embedder) -> list[dict[str, Any]]:
    import numpy as np

    mesh = embedder.mesh_names[0] if embedder is not None else None
    maps = densepose_to_vertex_maps(boxes, dp, embedder, mesh)
    out = []
    for box, score, (vertices, mask) in zip(xywh, scores, maps):
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": [float(b) for b in box],
                "score": float(score),
                "cse": {
                    "mesh": mesh,
                    "vertices": encode_array(vertices.numpy().astype(np.int32)),
                    "mask": encode_array(mask.numpy().astype(np.uint8)),
                },
            }
        )
    return out


__all__ = ["encode_iuv", "to_coco_results"]
