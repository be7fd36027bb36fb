"""The DensePose results format read by the evaluator, and its encoder.

One detection is a JSON object::

    {"image_id": 42, "category_id": 1, "bbox": [x, y, w, h], "score": 0.97,
     "densepose": {"uv_shape": [3, h, w], "uv_data": "<base64>"}}

``bbox`` is XYWH in original-image pixels. ``densepose`` holds the quantised IUV raster of
docs/evaluation.md, 'Results format' (docs/model.md, step 5 of the charts): a ``3 × h × w``
uint8 array ``[I, U·255, V·255]`` covering the integer box (``h = max(int(bbox_h), 1)``,
``w = max(int(bbox_w), 1)``).
``uv_data`` is the base64 text of the zlib-compressed array bytes in C order (I plane first,
then U, then V, rows top to bottom). Only the standard library and numpy are needed to write or
read it; the encoder lives in :mod:`fnl_core.results` (shared with
fnl-detector). An optional ``segmentation`` (compressed RLE of the full-image mask) is used for the
``segm`` metric when a detection carries no ``densepose``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fnl_core.results import decode_iuv_bytes, encode_iuv, make_result

__all__ = ["decode_iuv", "encode_iuv", "make_result"]


def decode_iuv(entry: Mapping[str, Any]) -> np.ndarray:
    """Decode a ``densepose`` entry (see :mod:`fnl_core.results`) into a ``(3, h, w)`` array."""
    shape, raw = decode_iuv_bytes(entry)
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)
