"""From DensePose head outputs to per-detection charts (spec/model.md (h)).

For a detection box (x0, y0, x1, y1) in original-image pixels, the chart covers the integer
box ``w = int(x1 - x0)``, ``h = int(y1 - y0)`` (float32 subtraction, truncation, at least 1),
pasted at ``(int(x0), int(y0))``. Coarse and fine logits and the 25 U and V maps are resized
bilinearly (align_corners=False) to h x w; the label is the fine argmax where the coarse argmax
is foreground, else 0; U and V are read from the label's channel (0 on background). Matches the
reference charts (labels exactly, U/V within 4e-6).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


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
        # one resize per output (as the reference does): same rounding as resizing each alone
        c_map, f_map, u_map, v_map = (
            F.interpolate(t[n : n + 1].float(), size=(h, w), mode="bilinear", align_corners=False)[
                0
            ]
            for t in (coarse, fine, u, v)
        )
        labels = f_map.argmax(0) * (c_map.argmax(0) > 0)
        idx = labels[None]
        uu = u_map.gather(0, idx)[0]
        vv = v_map.gather(0, idx)[0]
        bg = labels == 0
        uv = torch.stack([uu.masked_fill(bg, 0.0), vv.masked_fill(bg, 0.0)])
        out.append((labels, uv))
    return out


def densepose_to_iuv(boxes: Tensor, densepose: Mapping[str, Tensor]) -> list[np.ndarray]:
    """Per detection the quantised chart: uint8 (3, h, w) = [I, clamp(255 U), clamp(255 V)]."""
    out = []
    for labels, uv in densepose_to_charts(boxes, densepose):
        quant = (uv * 255.0).clamp(0, 255).to(torch.uint8)
        iuv = torch.cat([labels[None].to(torch.uint8), quant])
        out.append(iuv.cpu().numpy())
    return out


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


__all__ = ["chart_boxes_xywh", "densepose_to_charts", "densepose_to_iuv", "iuv_to_mask"]
