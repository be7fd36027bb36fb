"""From DensePose head outputs to per-detection charts (docs/model.md, 'From the
predictor outputs to per-pixel I, U, V').

For a detection box (x0, y0, x1, y1) in original-image pixels, the chart covers the integer
box ``w = int(x1 - x0)``, ``h = int(y1 - y0)`` (float32 subtraction, truncation, at least 1),
pasted at ``(int(x0), int(y0))``. Coarse and fine logits and the 25 U and V maps are resized
bilinearly (align_corners=False) to h x w; the label is the fine argmax where the coarse argmax
is foreground, else 0; U and V are read from the label's channel (0 on background). Matches the
reference charts (labels exactly, U/V within 4e-6). Only the logits are resized in full; U, V
and the per-part confidences are interpolated in each pixel's label channel alone
(:func:`fnl_core.charts.sample_channel`), which keeps large boxes (a person filling a
6000x4000 photo) from allocating 25-channel maps at full resolution.

Confidence models (DensePose WC*/M) add per-pixel confidence maps (:func:`chart_confidences`);
CSE models have no charts but a closest-mesh-vertex map and a mask per detection
(:func:`densepose_to_vertex_maps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fnl_core.charts import sample_on_parts


def chart_boxes_xywh(boxes: Tensor) -> Tensor:
    """Integer (x, y, w, h) of each XYXY box, truncated toward zero, w and h at least 1."""
    b = boxes.to(torch.float32)
    xywh = torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1)
    xywh = xywh.to(torch.int64)
    xywh[:, 2:] = xywh[:, 2:].clamp(min=1)
    return xywh


def densepose_to_charts(
    boxes: Tensor, densepose: Mapping[str, Tensor]
) -> list[tuple[Tensor, Tensor]]:
    """Per detection: labels (h x w, int64, 0..24) and uv (2 x h x w, float32)."""
    xywh = chart_boxes_xywh(boxes).tolist()
    coarse, fine = densepose["coarse_segm"], densepose["fine_segm"]
    u, v = densepose["u"], densepose["v"]
    if not (len(coarse) == len(fine) == len(u) == len(v) == len(xywh)):
        raise ValueError(
            f"{len(xywh)} boxes but DensePose outputs for {len(coarse)}/{len(fine)}/{len(u)}/"
            f"{len(v)} detections (coarse_segm/fine_segm/u/v)"
        )
    out = []
    for n, (_, _, w, h) in enumerate(xywh):
        labels = chart_labels(coarse[n], fine[n], (h, w))
        out.append((labels, torch.stack(_sample_on_parts([u[n], v[n]], labels))))
    return out


#: Resized logits are held this many values at a time (256 MB of float32): a box the size of a
#: 24 MP photo resizes its 25 fine channels a few at a time instead of in one 2.4 GB map.
LABEL_CHUNK_VALUES = 64_000_000


def chart_labels(coarse: Tensor, fine: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Part labels (h x w, int64) of one detection: the argmax of the resized fine logits where
    the resized coarse argmax is foreground, else 0.

    Each logit map is resized as the reference does (``F.interpolate`` per channel, same
    rounding), from a contiguous NCHW copy: torch's channels-last kernel (what a channels_last
    model's outputs would get) rounds differently and moves labels at near-ties. Channels are
    resized in chunks of at most :data:`LABEL_CHUNK_VALUES` values and reduced with a running
    maximum that keeps the first maximal channel, which is ``argmax(0)`` exactly.
    """
    foreground = _resized_argmax(coarse, size_hw) > 0
    return _resized_argmax(fine, size_hw).masked_fill_(~foreground, 0)


def _resized_argmax(maps: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """``F.interpolate(maps[None], size_hw).argmax(1)[0]`` (first maximum), a chunk of
    channels at a time."""
    height, width = size_hw
    step = max(1, LABEL_CHUNK_VALUES // (height * width))
    best = index = None
    for start in range(0, len(maps), step):
        source = maps[None, start : start + step].float().contiguous()  # NCHW, as the reference
        resized = F.interpolate(source, size=size_hw, mode="bilinear", align_corners=False)[0]
        values, indices = resized.max(dim=0)
        if best is None or index is None:
            best, index = values, indices
            continue
        better = values > best
        best = torch.where(better, values, best)
        index = torch.where(better, indices + start, index)
    assert index is not None, "logit maps with no channel"
    return index


def _sample_on_parts(maps: list[Tensor], labels: Tensor) -> list[Tensor]:
    """Each of ``maps`` ([C, S, S]) resized bilinearly to ``labels``' h x w and read in each
    pixel's label channel on part pixels, 0 on background
    (:func:`fnl_core.charts.sample_on_parts`; float32, on ``labels``' device)."""
    arrays = [m.detach().float().cpu().numpy() for m in maps]
    return [
        torch.from_numpy(values).to(labels.device)
        for values in sample_on_parts(arrays, labels.cpu().numpy())
    ]


def densepose_to_iuv(boxes: Tensor, densepose: Mapping[str, Tensor]) -> list[np.ndarray]:
    """Per detection the quantised chart: uint8 (3, h, w) = [I, clamp(255 U), clamp(255 V)]."""
    out = []
    for labels, uv in densepose_to_charts(boxes, densepose):
        quant = (uv * 255.0).clamp(0, 255).to(torch.uint8)
        iuv = torch.cat([labels[None].to(torch.uint8), quant])
        out.append(iuv.cpu().numpy())
    return out


#: Per-part confidences (25 channels): read at each pixel from its label's channel, 0 on
#: background, like U and V.
PART_CONFIDENCES = ("sigma_1", "sigma_2", "kappa_u", "kappa_v")
#: Box-wide confidences (1 channel): resized over the whole box, background included.
BOX_CONFIDENCES = ("fine_segm_confidence", "coarse_segm_confidence")


def confidence_keys(densepose: Mapping[str, Tensor]) -> list[str]:
    """The confidence outputs present in a detector's ``densepose`` outputs, in a fixed order."""
    return [k for k in (*PART_CONFIDENCES, *BOX_CONFIDENCES) if k in densepose]


def chart_confidences(
    boxes: Tensor, densepose: Mapping[str, Tensor], labels: list[Tensor]
) -> list[dict[str, Tensor]]:
    """Per detection, each confidence map resized to its chart (h x w, float32).

    ``labels`` are the charts' part labels (:func:`densepose_to_charts`). Part confidences
    (``sigma_2``, ``kappa_u``, ``kappa_v``) take the label's channel and are 0 on background;
    ``fine_segm_confidence`` / ``coarse_segm_confidence`` cover the whole box (DensePose's
    ``ToChartResultConverterWithConfidences``). Empty dicts for a model without confidences.
    """
    keys = confidence_keys(densepose)
    xywh = chart_boxes_xywh(boxes).tolist()
    out: list[dict[str, Tensor]] = []
    part_keys = [k for k in keys if k not in BOX_CONFIDENCES]
    for n, ((_, _, w, h), lab) in enumerate(zip(xywh, labels)):
        maps = dict(zip(part_keys, _sample_on_parts([densepose[k][n] for k in part_keys], lab)))
        for key in keys:
            if key in BOX_CONFIDENCES:
                source = densepose[key][n : n + 1].float()
                full = F.interpolate(source, size=(h, w), mode="bilinear", align_corners=False)
                maps[key] = full[0, 0]
        out.append({k: maps[k] for k in keys})
    return out


def densepose_to_vertex_maps(
    boxes: Tensor, densepose: Mapping[str, Tensor], embedder: Any, mesh_name: str | None = None
) -> list[tuple[Tensor, Tensor]]:
    """CSE models: per detection (closest-vertex map int64 h x w, mask bool h x w).

    ``embedder`` is the model's mesh embedder (``model.roi_heads.embedder``): its
    ``closest_vertices(embedding, coarse_segm, (h, w), mesh_name)`` resizes the detection's
    embeddings and coarse segmentation to the integer box and assigns each pixel of the mask
    (coarse argmax > 0) its nearest mesh vertex; off the mask the map is 0 (also a valid
    vertex: use the mask).
    """
    if "embedding" not in densepose:
        raise ValueError(
            "densepose outputs have no 'embedding': vertex maps need a CSE model "
            f"(got {sorted(densepose)})"
        )
    if embedder is None:
        raise ValueError("vertex maps need the model's mesh embedder (model.roi_heads.embedder)")
    xywh = chart_boxes_xywh(boxes).tolist()
    embedding, coarse = densepose["embedding"], densepose["coarse_segm"]
    if not (len(embedding) == len(coarse) == len(xywh)):
        raise ValueError(
            f"{len(xywh)} boxes but CSE outputs for {len(embedding)}/{len(coarse)} detections "
            "(embedding/coarse_segm)"
        )
    with torch.inference_mode():
        vertices = embedder(mesh_name)
        return [
            embedder.closest_vertices(embedding[n].float(), coarse[n].float(), (h, w), vertices)
            for n, (_, _, w, h) in enumerate(xywh)
        ]


def iuv_to_mask(iuv: np.ndarray, box_xywh: tuple[int, int, int, int], image_hw: tuple[int, int]):
    """Full-image boolean mask I > 0, the chart pasted at its integer box (clipped)."""
    x, y, w, h = box_xywh
    height, width = image_hw
    mask = np.zeros((height, width), dtype=bool)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        mask[y0:y1, x0:x1] = iuv[0, y0 - y : y1 - y, x0 - x : x1 - x] > 0
    return mask


__all__ = [
    "BOX_CONFIDENCES",
    "PART_CONFIDENCES",
    "chart_boxes_xywh",
    "chart_confidences",
    "chart_labels",
    "confidence_keys",
    "densepose_to_charts",
    "densepose_to_iuv",
    "densepose_to_vertex_maps",
    "iuv_to_mask",
]
