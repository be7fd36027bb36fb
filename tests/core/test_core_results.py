"""fnl_core.results: the DensePose results encoding round-trips and rejects bad input."""

from __future__ import annotations

import base64
import zlib

import pytest

from fnl_core.results import decode_iuv_bytes, encode_iuv, make_result


class Raster:
    """A minimal array-like (fnl-core has no numpy): shape, dtype and C-order bytes."""

    def __init__(self, shape, data: bytes, dtype: str = "uint8") -> None:
        self.shape, self._data, self.dtype = shape, data, dtype

    def tobytes(self) -> bytes:
        return self._data


def test_round_trip():
    data = bytes(range(3 * 2 * 4))
    entry = encode_iuv(Raster((3, 2, 4), data))
    assert entry["uv_shape"] == [3, 2, 4]
    assert zlib.decompress(base64.b64decode(entry["uv_data"])) == data
    assert decode_iuv_bytes(entry) == ((3, 2, 4), data)


def test_bad_rasters_and_entries_are_rejected():
    with pytest.raises(ValueError, match=r"shape \(3, h, w\)"):
        encode_iuv(Raster((2, 2, 2), bytes(8)))
    with pytest.raises(ValueError, match="must be uint8"):
        encode_iuv(Raster((3, 1, 1), bytes(12), dtype="float32"))
    with pytest.raises(ValueError, match="uv_shape"):
        decode_iuv_bytes({"uv_data": ""})
    with pytest.raises(ValueError, match="not base64 zlib"):
        decode_iuv_bytes({"uv_shape": [3, 1, 1], "uv_data": "!!!!"})
    short = encode_iuv(Raster((3, 1, 1), bytes(3)))
    with pytest.raises(ValueError, match="does not match the 3 decoded bytes"):
        decode_iuv_bytes({**short, "uv_shape": [3, 2, 2]})


def test_make_result():
    r = make_result(7, (1, 2, 3, 4), 0.5, Raster((3, 1, 1), bytes(3)))
    assert (r["image_id"], r["category_id"], r["bbox"], r["score"]) == (7, 1, [1, 2, 3, 4], 0.5)
    with pytest.raises(ValueError, match="4 numbers"):
        make_result(7, (1, 2, 3), 0.5, Raster((3, 1, 1), bytes(3)))
