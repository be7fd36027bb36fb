"""The DensePose results format read by the evaluator, and its encoder.

One detection is a JSON object::

    {"image_id": 42, "category_id": 1, "bbox": [x, y, w, h], "score": 0.97,
     "densepose": {"uv_shape": [3, h, w], "uv_data": "<base64>"}}

``bbox`` is XYWH in original-image pixels. ``densepose`` holds the quantised IUV raster of
spec/evaluation.md §1.2 (model.md h.1): a ``3 × h × w`` uint8 array ``[I, U·255, V·255]``
covering the integer box (``h = max(int(bbox_h), 1)``, ``w = max(int(bbox_w), 1)``).
``uv_data`` is the base64 text of the zlib-compressed array bytes in C order (I plane first,
then U, then V, rows top to bottom). Only the standard library and numpy are needed to write or
read it. An optional ``segmentation`` (compressed RLE of the full-image mask) is used for the
``segm`` metric when a detection carries no ``densepose``.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["decode_iuv", "encode_iuv", "make_result"]


def encode_iuv(iuv: Any) -> dict[str, Any]:
    """Encode a ``(3, h, w)`` uint8 IUV array as the ``densepose`` entry of a result."""
    arr = np.asarray(iuv)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"IUV raster must have shape (3, h, w), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"IUV raster must be uint8 ([I, U*255, V*255]), got {arr.dtype}")
    data = zlib.compress(np.ascontiguousarray(arr).tobytes(), 6)
    return {"uv_shape": [int(s) for s in arr.shape], "uv_data": base64.b64encode(data).decode()}


def decode_iuv(entry: Mapping[str, Any]) -> np.ndarray:
    """Decode a ``densepose`` entry written by :func:`encode_iuv` into a ``(3, h, w)`` array."""
    try:
        shape = tuple(int(s) for s in entry["uv_shape"])
        raw = zlib.decompress(base64.b64decode(entry["uv_data"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(
            'a "densepose" result must be {"uv_shape": [3, h, w], "uv_data": BASE64} '
            f"(got keys {sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__})"
        ) from exc
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(f'"densepose.uv_data" is not base64 zlib data: {exc}') from exc
    if len(shape) != 3 or shape[0] != 3 or len(raw) != shape[0] * shape[1] * shape[2]:
        raise ValueError(
            f'"densepose.uv_shape" {list(shape)} does not match the {len(raw)} decoded bytes '
            "(expected [3, h, w] with 3*h*w bytes)"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def make_result(
    image_id: int,
    bbox_xywh: Sequence[float],
    score: float,
    iuv: Any,
    category_id: int = 1,
) -> dict[str, Any]:
    """One result entry: a detection box (XYWH, image pixels), its score and IUV raster."""
    if len(bbox_xywh) != 4:
        raise ValueError(f"bbox_xywh must have 4 numbers, got {list(bbox_xywh)}")
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [float(b) for b in bbox_xywh],
        "score": float(score),
        "densepose": encode_iuv(iuv),
    }
