"""The DensePose results format: the contract between predictors (fnl-detector, or any other
model) and evaluators (fnl-eval). Standard library only.

One detection is a JSON object::

    {"image_id": 42, "category_id": 1, "bbox": [x, y, w, h], "score": 0.97,
     "densepose": {"uv_shape": [3, h, w], "uv_data": "<base64>"}}

``bbox`` is XYWH in original-image pixels. ``densepose`` holds the quantised IUV raster of the
detection (``[I, U·255, V·255]``, uint8, ``3 × h × w`` with ``h = max(int(bbox_h), 1)``,
``w = max(int(bbox_w), 1)``); ``uv_data`` is the base64 text of the zlib-compressed raster bytes
in C order (I plane first, then U, then V, rows top to bottom).

Models that predict more add optional keys (fnl-eval ignores them; docs/evaluation.md):

* ``"confidences"``: ``{name: ARRAY}`` per-pixel confidence maps of the chart (h × w float32),
  e.g. ``sigma_2``, ``kappa_u``, ``kappa_v`` (0 on background), ``fine_segm_confidence``,
  ``coarse_segm_confidence`` (whole box);
* ``"cse"`` (continuous surface embedding models, which have no ``"densepose"`` chart):
  ``{"mesh": NAME, "vertices": ARRAY (h × w int32, closest mesh vertex, 0 off the mask),
  "mask": ARRAY (h × w uint8, 1 = person)}``.

An ARRAY is ``{"dtype": "uint8" | "int32" | "float32", "shape": [h, w], "data": BASE64}``:
base64 of the zlib-compressed little-endian C-order bytes (:func:`encode_array`).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ARRAY_DTYPES",
    "decode_array_bytes",
    "decode_iuv_bytes",
    "encode_array",
    "encode_iuv",
    "make_result",
]

#: Element types an encoded array may have (little-endian), with their sizes in bytes.
ARRAY_DTYPES = {"uint8": 1, "int32": 4, "float32": 4}


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


def encode_array(array: Any) -> dict[str, Any]:
    """An ARRAY entry for a numpy-like array (``shape``, ``dtype``, ``tobytes()`` giving C-order
    bytes, as numpy's does) of one of :data:`ARRAY_DTYPES`, little-endian."""
    dtype = str(array.dtype)
    if dtype not in ARRAY_DTYPES:
        raise ValueError(f"array dtype must be one of {sorted(ARRAY_DTYPES)}, got {dtype}")
    if ARRAY_DTYPES[dtype] > 1 and getattr(array.dtype, "byteorder", "=") == ">":
        raise ValueError("array must be little-endian")
    data = zlib.compress(array.tobytes(), 6)
    return {
        "dtype": dtype,
        "shape": [int(s) for s in array.shape],
        "data": base64.b64encode(data).decode(),
    }


def decode_array_bytes(entry: Mapping[str, Any]) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype, shape, raw little-endian C-order bytes) of an ARRAY entry, validated."""
    try:
        dtype = str(entry["dtype"])
        shape = tuple(int(s) for s in entry["shape"])
        raw = zlib.decompress(base64.b64decode(entry["data"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(
            'an array must be {"dtype": ..., "shape": [...], "data": BASE64} '
            f"(got {sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__})"
        ) from exc
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(f'array "data" is not base64 zlib data: {exc}') from exc
    if dtype not in ARRAY_DTYPES:
        raise ValueError(f'array "dtype" must be one of {sorted(ARRAY_DTYPES)}, got {dtype!r}')
    count = 1
    for s in shape:
        count *= s
    if len(raw) != count * ARRAY_DTYPES[dtype]:
        raise ValueError(
            f'array "shape" {list(shape)} ({dtype}) does not match the {len(raw)} decoded bytes'
        )
    return dtype, shape, raw


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
