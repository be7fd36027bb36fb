"""DensePose head outputs to per-detection IUV charts, in numpy (no torch).

For a detection box (x0, y0, x1, y1) in original-image pixels the chart covers the integer box
``w = int(x1 - x0)``, ``h = int(y1 - y0)`` (float32 subtraction, truncation, at least 1),
pasted at ``(int(x0), int(y0))``. Coarse and fine logits and the 25 U and V maps are resized
bilinearly (``align_corners=False``, no antialiasing) to h x w; the label is the fine argmax
where the coarse argmax is foreground, else 0; U and V are read from the label's channel
(0 on background) and quantised to ``clip(255 U)``.

Only the logits are resized in full (the argmax needs every channel); U, V and the per-part
confidences are interpolated at each pixel in its label's channel alone
(:func:`sample_channel`): the same values at a 25th of the cost. This is what
``fnl_detector.postprocess.densepose_to_iuv`` computes with torch; the resize follows torch's
CPU kernel (source index ``max(scale (i + 0.5) - 0.5, 0)``, float32 weights, width then
height), so both give the same charts up to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fnl_core.visualize import detection_boxes_xywh

__all__ = [
    "bilinear_taps",
    "chart_confidences",
    "densepose_to_iuv",
    "resize_bilinear",
    "resized_argmax",
    "sample_channel",
    "sample_on_parts",
]

#: Per-part confidences (25 channels): read at each pixel from its label's channel, 0 on
#: background, like U and V.
PART_CONFIDENCES = ("sigma_1", "sigma_2", "kappa_u", "kappa_v")
#: Box-wide confidences (1 channel): resized over the whole box, background included.
BOX_CONFIDENCES = ("fine_segm_confidence", "coarse_segm_confidence")


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index0, index1, weight1) of a 1-D bilinear resize, ``align_corners=False``."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0.astype(f32)


def resize_bilinear(maps: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """float32 ``[C, h, w]`` -> ``[C, H, W]``, bilinear, ``align_corners=False``."""
    x = np.asarray(maps, dtype=np.float32)
    height, width = size_hw
    y0, y1, wy = bilinear_taps(x.shape[1], height)
    x0, x1, wx = bilinear_taps(x.shape[2], width)
    one = np.float32(1)
    rows0, rows1 = x[:, y0], x[:, y1]
    wy = wy[None, :, None]
    wx = wx[None, None, :]
    top = rows0[:, :, x0] * (one - wx) + rows0[:, :, x1] * wx
    bottom = rows1[:, :, x0] * (one - wx) + rows1[:, :, x1] * wx
    return top * (one - wy) + bottom * wy


#: Resized logits are held this many values at a time (256 MB of float32), so a box the size of
#: a large photo resizes its 25 fine channels a few at a time.
CHUNK_VALUES = 64_000_000


def resized_argmax(maps: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``resize_bilinear(maps, size_hw).argmax(0)`` (the first maximal channel), resizing at
    most :data:`CHUNK_VALUES` values at a time."""
    height, width = size_hw
    step = max(1, CHUNK_VALUES // (height * width))
    best = index = None
    for start in range(0, len(maps), step):
        resized = resize_bilinear(maps[start : start + step], size_hw)
        indices = resized.argmax(0)
        values = np.take_along_axis(resized, indices[None], 0)[0]
        if best is None or index is None:
            best, index = values, indices
            continue
        better = values > best
        best = np.where(better, values, best)
        index = np.where(better, indices + start, index)
    assert index is not None, "logit maps with no channel"
    return index


def sample_channel(
    maps: np.ndarray,
    channels: np.ndarray,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> np.ndarray:
    """Bilinear resize of ``maps`` (``[C, H, W]``) to ``channels``' ``h x w``, read at each
    pixel in the channel ``channels[y, x]`` only: ``resize_bilinear(maps, (h, w))`` gathered
    along the channel axis, without resizing the other channels.

    With ``rows`` and ``cols`` (1-D pixel coordinates) only those pixels are computed and a 1-D
    array is returned; else the whole ``h x w`` map.
    """
    x = np.asarray(maps, dtype=np.float32)
    channels = np.asarray(channels, dtype=np.int64)
    _, height, width = x.shape
    h, w = channels.shape
    y0, y1, wy = bilinear_taps(height, h)
    x0, x1, wx = bilinear_taps(width, w)
    if rows is None or cols is None:
        rows, cols = (a.reshape(-1) for a in np.indices((h, w)))
        shape: tuple[int, ...] = (h, w)
    else:
        shape = (len(rows),)
    flat = x.reshape(-1)
    base = channels[rows, cols] * (height * width)
    c0, c1, wx = x0[cols], x1[cols], wx[cols]
    row_values = []
    for y in (y0, y1):
        start = base + y[rows] * width
        row_values.append(_lerp(flat[start + c0], flat[start + c1], wx))
    return _lerp(row_values[0], row_values[1], wy[rows]).reshape(shape)


def sample_on_parts(maps: Sequence[np.ndarray], labels: np.ndarray) -> list[np.ndarray]:
    """Each of ``maps`` (``[C, H, W]``) sampled by :func:`sample_channel` in each pixel's label
    channel on the part pixels (``labels > 0``), 0 on background (h x w float32). The part
    pixels are found once for all the maps."""
    labels = np.asarray(labels, dtype=np.int64)
    rows, cols = np.nonzero(labels)
    out = []
    for m in maps:
        values = np.zeros(labels.shape, dtype=np.float32)
        values[rows, cols] = sample_channel(m, labels, rows, cols)
        out.append(values)
    return out


def _lerp(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``a (1 - weight) + b weight`` in float32, rounded as torch's x86 CPU bilinear kernel
    rounds it (the first product fused into the addition). Charts at least half the head's
    output size then equal ``F.interpolate``'s bit for bit; smaller ones within a float32 ulp."""
    f64 = np.float64
    second = (b * weight).astype(f64)
    return (a.astype(f64) * (np.float32(1) - weight).astype(f64) + second).astype(np.float32)


def densepose_to_iuv(boxes: np.ndarray, densepose: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Per detection the quantised chart: uint8 ``(3, h, w)`` = [I, clip(255 U), clip(255 V)].

    ``boxes``: XYXY ``[D, 4]`` in original-image pixels; ``densepose``: ``coarse_segm``
    ``[D, C, S, S]``, ``fine_segm``, ``u``, ``v`` ``[D, 25, S, S]`` (other keys are ignored).
    """
    xywh = detection_boxes_xywh(boxes)
    maps = [np.asarray(densepose[k]) for k in ("coarse_segm", "fine_segm", "u", "v")]
    if any(len(m) != len(xywh) for m in maps):
        raise ValueError(
            f"{len(xywh)} boxes but DensePose outputs for "
            f"{'/'.join(str(len(m)) for m in maps)} detections (coarse_segm/fine_segm/u/v)"
        )
    out = []
    for n, (_, _, w, h) in enumerate(xywh.tolist()):
        foreground = resized_argmax(maps[0][n], (h, w)) > 0
        labels = resized_argmax(maps[1][n], (h, w)) * foreground
        uv = np.stack(sample_on_parts([m[n] for m in maps[2:]], labels))
        quant = np.clip(uv * np.float32(255), 0, 255).astype(np.uint8)
        out.append(np.concatenate([labels[None].astype(np.uint8), quant]))
    return out


def chart_confidences(
    boxes: np.ndarray, densepose: Mapping[str, np.ndarray], charts: list[np.ndarray]
) -> list[dict[str, np.ndarray]]:
    """Per detection, each confidence output resized to its chart (h x w float32), as
    ``fnl_detector.postprocess.chart_confidences`` computes it with torch.

    ``charts`` are the detections' IUV charts (:func:`densepose_to_iuv`: their labels pick the
    channel of the per-part confidences, 0 on background); box-wide confidences cover the whole
    box. Empty dicts for a model without confidences.
    """
    keys = [k for k in (*PART_CONFIDENCES, *BOX_CONFIDENCES) if k in densepose]
    xywh = detection_boxes_xywh(boxes)
    out: list[dict[str, np.ndarray]] = []
    for n, ((_, _, w, h), chart) in enumerate(zip(xywh.tolist(), charts, strict=True)):
        part_keys = [k for k in keys if k not in BOX_CONFIDENCES]
        sources = [np.asarray(densepose[k][n]) for k in part_keys]
        maps = dict(zip(part_keys, sample_on_parts(sources, chart[0])))
        for key in keys:
            if key in BOX_CONFIDENCES:
                maps[key] = resize_bilinear(np.asarray(densepose[key][n]), (h, w))[0]
        out.append({k: maps[k] for k in keys})
    return out
