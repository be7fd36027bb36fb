"""The DensePose results format: the contract between predictors (fnl-detector, or any other
model) and evaluators (fnl-eval). Standard library only.

One detection is a JSON object::

    {"image_id": 42, "category_id": 1, "bbox": [x, y, w, h], "score": 0.97,
     "densepose": {"uv_shape": [3, h, w], "uv_data": "<base64>"}}

``bbox`` is XYWH in original-image pixels. ``densepose`` holds the quantised IUV raster of the
detection (``[I, U·255, V·255]``, uint8, ``3 × h × w`` with ``h = max(int(bbox_h), 1)``,
``w = max(int(bbox_w), 1)``); ``uv_data`` is the base64 text of the zlib-compressed raster bytes
in C order (I plane first, then U, then V, rows top to bottom).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["decode_iuv_bytes", "encode_iuv", "make_result"]


def encode_iuv(iuv: Any) -> dict[str, Any]:
    """The ``densepose`` entry for a ``(3, h, w)`` uint8 IUV array (numpy or array-like with
    ``shape``, ``dtype`` and ``tobytes()``, which must give C-order bytes)."""
    shape = tuple(int(s) for s in iuv.shape)
    if len(shape) != 3 or shape[0] != 3:
        raise ValueError(f"IUV raster must have shape (3, h, w), got {shape}")
    if str(iuv.dtype) != "uint8":
        raise ValueError(f"IUV raster must be uint8 ([I, U*255, V*255]), got {iuv.dtype}")
    data = zlib.compress(iuv.tobytes(), 6)
    return {"uv_shape": list(shape), "uv_data": base64.b64encode(data).decode()}


def decode_iuv_bytes(entry: Mapping[str, Any]) -> tuple[tuple[int, int, int], bytes]:
    """The ``(3, h, w)`` shape and raw C-order bytes of a ``densepose`` entry, validated."""
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
    return shape, raw  # type: ignore[return-value]


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
