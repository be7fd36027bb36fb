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

import numpy as np

from fnl_core.results import encode_array, encode_iuv, make_result
from fnl_detector.postprocess import (
    chart_confidences,
    confidence_keys,
    densepose_to_iuv,
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
    The IUV charts a :class:`~fnl_detector.Predictor` result already holds (``charts``) are
    used as they are.
    """
    import torch

    boxes = prediction["boxes"].detach().to(torch.float32).cpu()
    scores = prediction["scores"].detach().cpu().tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    if "embedding" in prediction["densepose"]:
        extras = detection_extras(prediction, embedder)
        return [
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": [float(b) for b in box],
                "score": float(score),
                **extra,
            }
            for box, score, extra in zip(xywh, scores, extras)
        ]
    charts = _iuv_charts(prediction)
    extras = detection_extras(prediction, charts=charts)
    out = []
    for box, score, iuv, extra in zip(xywh, scores, charts, extras):
        entry = make_result(image_id, box, score, iuv, category_id)
        entry.update(extra)
        out.append(entry)
    return out


def detection_extras(
    prediction: Mapping[str, Any], embedder: Any = None, charts: list[Any] | None = None
) -> list[dict[str, Any]]:
    """Per detection, what its result entry carries besides the IUV chart: ``confidences``
    (chart models that predict them), ``cse`` (CSE models, which need ``embedder``), or
    nothing (empty dicts). ``charts``: the IUV charts when the caller has them already."""
    import torch

    boxes = prediction["boxes"].detach().to(torch.float32).cpu()
    dp = {k: v.detach().cpu() for k, v in prediction["densepose"].items()}
    if "embedding" in dp:
        return _cse_extras(boxes, dp, embedder)
    if not confidence_keys(dp):
        return [{} for _ in range(len(boxes))]
    if charts is None:
        charts = _iuv_charts(prediction)
    labels = [torch.from_numpy(iuv[0]).long() for iuv in charts]
    return [
        {"confidences": {k: encode_array(v.float().numpy()) for k, v in conf.items()}}
        for conf in chart_confidences(boxes, dp, labels)
    ]


def _iuv_charts(prediction: Mapping[str, Any]) -> list[Any]:
    """The (3, h, w) uint8 IUV chart of each detection: the prediction's own, else computed."""
    import torch

    if prediction.get("charts") is not None:
        return [np.asarray(chart) for chart in prediction["charts"]]
    boxes = prediction["boxes"].detach().to(torch.float32).cpu()
    return densepose_to_iuv(
        boxes, {k: v.detach().cpu() for k, v in prediction["densepose"].items()}
    )


def _cse_extras(boxes, dp, embedder) -> list[dict[str, Any]]:
    import numpy as np

    mesh = embedder.mesh_names[0] if embedder is not None else None
    return [
        {
            "cse": {
                "mesh": mesh,
                "vertices": encode_array(vertices.numpy().astype(np.int32)),
                "mask": encode_array(mask.numpy().astype(np.uint8)),
            }
        }
        for vertices, mask in densepose_to_vertex_maps(boxes, dp, embedder, mesh)
    ]


__all__ = ["detection_extras", "encode_iuv", "to_coco_results"]
