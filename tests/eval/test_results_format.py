"""The results format: IUV encoding round trip and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fnl_eval.results import decode_iuv, encode_iuv, make_result


def test_encode_decode_round_trip_is_exact_and_json_safe():
    rng = np.random.default_rng(0)
    iuv = rng.integers(0, 256, (3, 7, 5), dtype=np.uint8)
    entry = json.loads(json.dumps(encode_iuv(iuv)))
    assert entry["uv_shape"] == [3, 7, 5]
    np.testing.assert_array_equal(decode_iuv(entry), iuv)


def test_make_result_has_the_documented_keys():
    iuv = np.zeros((3, 4, 6), np.uint8)
    res = make_result(3, (1, 2, 6.5, 4.2), 0.9, iuv)
    assert set(res) == {"image_id", "category_id", "bbox", "score", "densepose"}
    assert res["bbox"] == [1.0, 2.0, 6.5, 4.2] and res["category_id"] == 1
    assert decode_iuv(res["densepose"]).shape == (3, 4, 6)


@pytest.mark.parametrize(
    ("array", "message"),
    [(np.zeros((2, 4, 4), np.uint8), "shape"), (np.zeros((3, 4, 4), np.float32), "uint8")],
)
def test_encode_rejects_bad_arrays(array, message):
    with pytest.raises(ValueError, match=message):
        encode_iuv(array)


def test_decode_rejects_a_shape_that_does_not_match_the_data():
    entry = encode_iuv(np.zeros((3, 4, 4), np.uint8))
    entry["uv_shape"] = [3, 4, 5]
    with pytest.raises(ValueError, match="does not match"):
        decode_iuv(entry)
    with pytest.raises(ValueError, match="uv_shape"):
        decode_iuv({"data": "x"})
