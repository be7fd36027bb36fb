"""Predictions to the DensePose-COCO results JSON read by fnl-eval (docs/evaluation.md).

One detection::

    {"image_id": 42, "category_id": 1, "bbox": [x, y, w, h], "score": 0.97,
     "densepose": {"uv_shape": [3, h, w], "uv_data": "<base64>"}}

``uv_data`` is base64 of the zlib-compressed bytes of the (3, h, w) uint8 IUV raster in C
order (:func:`fnl_detector.postprocess.densepose_to_iuv`). The encoding is written here with the
standard library so that fnl-detector does not depend on fnl-eval; an integration test checks
that fnl-eval's decoder reads it.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from fnl_detector.postprocess import densepose_to_iuv


def encode_iuv(iuv: np.ndarray) -> dict[str, Any]:
    """The ``densepose`` entry of a result for a (3, h, w) uint8 IUV raster."""
    arr = np.asarray(iuv)
    if arr.ndim != 3 or arr.shape[0] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a (3, h, w) uint8 IUV raster, got {arr.shape} {arr.dtype}")
    data = zlib.compress(np.ascontiguousarray(arr).tobytes(), 6)
    return {"uv_shape": [int(s) for s in arr.shape], "uv_data": base64.b64encode(data).decode()}


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
        {
            "image_id": int(image_id),
            "category_id": int(category_id),
            "bbox": [float(x) for x in box],
            "score": float(score),
            "densepose": encode_iuv(iuv),
        }
        for box, score, iuv in zip(xywh, scores, iuvs)
    ]


__all__ = ["encode_iuv", "to_coco_results"]
