"""Charts from DensePose outputs (docs/model.md) and the results JSON."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pytest
import torch

from fnl_detector.postprocess import (
    chart_boxes_xywh,
    densepose_to_charts,
    densepose_to_iuv,
    iuv_to_mask,
)
from fnl_detector.results import encode_iuv, to_coco_results


def outputs(n: int, s: int = 8, k: int = 15):
    """Coarse: fg on the left half; fine: chart 3 everywhere; U = 0.5, V = 2 (clamped)."""
    coarse = torch.zeros(n, k, s, s)
    coarse[:, 0, :, s // 2 :] = 5.0
    coarse[:, k - 1, :, : s // 2] = 5.0
    fine = torch.zeros(n, 25, s, s)
    fine[:, 3] = 4.0
    u = torch.zeros(n, 25, s, s)
    u[:, 3] = 0.5
    v = torch.full((n, 25, s, s), -1.0)
    v[:, 3] = 2.0
    return {"coarse_segm": coarse, "fine_segm": fine, "u": u, "v": v}


def test_box_truncation_rules():
    boxes = torch.tensor([[10.7, 20.2, 30.6, 20.5], [-0.5, 1.9, 5.0, 9.99]])
    assert chart_boxes_xywh(boxes).tolist() == [[10, 20, 19, 1], [0, 1, 5, 8]]


def test_iuv_values_and_shapes():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 8.0], [5.0, 5.0, 6.5, 5.2]])
    iuv = densepose_to_iuv(boxes, outputs(2))
    assert [a.shape for a in iuv] == [(3, 8, 16), (3, 1, 1)]
    a = iuv[0]
    assert a.dtype == np.uint8
    assert (a[0, :, :7] == 3).all() and (a[0, :, 9:] == 0).all()
    assert (a[1, :, :7] == 127).all()  # 0.5 * 255 = 127.5, truncated
    assert (a[2, :, :7] == 255).all()  # 2 * 255 clamped
    assert (a[1:, :, 9:] == 0).all()  # background: U = V = 0
    labels, uv = densepose_to_charts(boxes, outputs(2))[0]
    assert labels.dtype == torch.int64 and uv.shape == (2, 8, 16)
    assert uv[0, 0, 0].item() == pytest.approx(0.5)


def test_two_channel_coarse_and_mismatch():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    out = outputs(1, k=2)
    out["coarse_segm"][:, 1, :, :4] = 6.0
    assert densepose_to_iuv(boxes, out)[0][0, 0, 0] == 3
    with pytest.raises(ValueError, match="2 boxes"):
        densepose_to_iuv(torch.zeros(2, 4), outputs(1))


def test_mask_paste_is_clipped():
    iuv = np.zeros((3, 4, 4), np.uint8)
    iuv[0, 1:, 1:] = 5
    mask = iuv_to_mask(iuv, (-1, 2, 4, 4), (5, 5))
    assert mask.sum() == 2 * 3 and mask[3:, 0:3].all()


def test_results_json():
    boxes = torch.tensor([[1.5, 2.0, 17.5, 10.0]])
    pred = {
        "boxes": boxes,
        "scores": torch.tensor([0.75]),
        "labels": torch.tensor([1]),
        "densepose": outputs(1),
    }
    res = to_coco_results(7, pred)
    assert len(res) == 1
    r = json.loads(json.dumps(res[0]))
    assert r["image_id"] == 7 and r["category_id"] == 1 and r["score"] == 0.75
    assert r["bbox"] == [1.5, 2.0, 16.0, 8.0]
    assert r["densepose"]["uv_shape"] == [3, 8, 16]
    raw = zlib.decompress(base64.b64decode(r["densepose"]["uv_data"]))
    arr = np.frombuffer(raw, np.uint8).reshape(3, 8, 16)
    assert np.array_equal(arr, densepose_to_iuv(boxes, outputs(1))[0])
    with pytest.raises(ValueError, match="uint8"):
        encode_iuv(np.zeros((3, 2, 2), np.float32))


def test_numpy_chart_confidences_equal_the_torch_ones():
    """fnl-runtime writes confidences with fnl_core.charts (numpy); fnl predict with torch."""
    import numpy as np
    import torch

    from fnl_core import charts as np_charts
    from fnl_detector import postprocess

    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[3.2, 4.7, 40.9, 61.3], [10.0, 0.0, 22.5, 17.25]])
    dp = {
        "coarse_segm": torch.randn(2, 2, 8, 8, generator=g),
        "fine_segm": torch.randn(2, 25, 8, 8, generator=g),
        "u": torch.rand(2, 25, 8, 8, generator=g),
        "v": torch.rand(2, 25, 8, 8, generator=g),
        "sigma_2": torch.rand(2, 25, 8, 8, generator=g),
        "fine_segm_confidence": torch.rand(2, 1, 8, 8, generator=g),
    }
    labels = [lab for lab, _ in postprocess.densepose_to_charts(boxes, dp)]
    expected = postprocess.chart_confidences(boxes, dp, labels)
    np_dp = {k: v.numpy() for k, v in dp.items()}
    iuv = np_charts.densepose_to_iuv(boxes.numpy(), np_dp)
    got = np_charts.chart_confidences(boxes.numpy(), np_dp, iuv)
    assert [sorted(m) for m in got] == [sorted(m) for m in expected]
    for mine, ref, lab, chart in zip(got, expected, labels, iuv, strict=True):
        np.testing.assert_array_equal(chart[0], lab.numpy())
        for key in ref:
            np.testing.assert_allclose(mine[key], ref[key].numpy(), atol=1e-5)


def _charts_by_full_resize(boxes, dp):
    """The charts as the reference computes them: every output resized in full (NCHW), argmax,
    U/V gathered from the label's channel."""
    import torch.nn.functional as F

    out = []
    for n, (_, _, w, h) in enumerate(chart_boxes_xywh(boxes).tolist()):
        c, f, u, v = (
            F.interpolate(
                dp[k][n : n + 1].float().contiguous(),
                size=(h, w),
                mode="bilinear",
                align_corners=False,
            )[0]
            for k in ("coarse_segm", "fine_segm", "u", "v")
        )
        labels = f.argmax(0) * (c.argmax(0) > 0)
        uv = torch.stack([u.gather(0, labels[None])[0], v.gather(0, labels[None])[0]])
        out.append((labels, uv.masked_fill(labels[None] == 0, 0.0)))
    return out


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("chunk_values", [None, 1])
def test_charts_equal_the_full_resize(memory_format, chunk_values, monkeypatch):
    """Labels come from chunked channel resizes with a running maximum, U/V from the label's
    channel alone, and a channels_last model output (the Predictor's) is resized as NCHW: the
    charts equal the reference's full resize, labels exactly (ties included), U/V bit for bit
    on boxes larger than the head output."""
    from fnl_detector import postprocess

    if chunk_values is not None:
        monkeypatch.setattr(postprocess, "LABEL_CHUNK_VALUES", chunk_values)
    g = torch.Generator().manual_seed(3)
    dp = {
        "coarse_segm": torch.randn(3, 2, 16, 16, generator=g),
        "fine_segm": torch.randn(3, 25, 16, 16, generator=g).round(),  # many exact ties
        "u": torch.rand(3, 25, 16, 16, generator=g),
        "v": torch.rand(3, 25, 16, 16, generator=g),
    }
    if memory_format == "channels_last":
        dp = {k: t.contiguous(memory_format=torch.channels_last) for k, t in dp.items()}
    boxes = torch.tensor([[2.5, 1.0, 90.7, 130.2], [0.0, 0.0, 33.0, 17.9], [4.0, 4.0, 5.5, 4.2]])
    got = densepose_to_charts(boxes, dp)
    expected = _charts_by_full_resize(boxes, dp)
    for n, ((labels, uv), (ref_labels, ref_uv)) in enumerate(zip(got, expected, strict=True)):
        assert torch.equal(labels, ref_labels), f"detection {n}: labels differ"
        if n == 0:
            assert (labels > 0).any() and (labels == 0).any()
            assert torch.equal(uv, ref_uv), "U/V of an upscaled chart differ"
        torch.testing.assert_close(uv, ref_uv, rtol=0, atol=1e-6)


def test_sample_channel_reads_the_resized_channel():
    from fnl_core.charts import resize_bilinear, sample_channel

    rng = np.random.default_rng(0)
    maps = rng.random((25, 12, 9), dtype=np.float32)
    channels = rng.integers(0, 25, size=(40, 31))
    full = np.take_along_axis(resize_bilinear(maps, (40, 31)), channels[None], 0)[0]
    np.testing.assert_allclose(sample_channel(maps, channels), full, rtol=0, atol=1e-6)
    rows, cols = np.nonzero(channels > 12)
    part = sample_channel(maps, channels, rows, cols)
    assert part.shape == (len(rows),)
    np.testing.assert_allclose(part, full[rows, cols], rtol=0, atol=1e-6)
