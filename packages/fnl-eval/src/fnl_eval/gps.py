"""Geodesic Point Similarity for many (detection, GT) pairs at once (docs/evaluation.md, GPS).

GT points are snapped to the surface once per GT (:class:`GtPoints`); the IUV rasters of all
detections are flattened into one buffer (:class:`RasterBank`), so reading the predictions,
snapping them to the surface and measuring geodesics is a handful of numpy calls over every
point of every pair, with no Python loop over pairs or points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fnl_eval.surface import SurfaceIndex

__all__ = ["EVAL_POINT_SCALE", "GtPoints", "RasterBank", "gps_pairs"]

EVAL_POINT_SCALE = 255.0
"""The evaluator maps dp_x/dp_y to the box with /255, training with /256 (docs/data_format.md,
'Point coordinates')."""


@dataclass
class GtPoints:
    """Every annotated point of a list of GTs, concatenated.

    ``x``/``y`` are image positions (``dp_x · gw / 255 + gx``), ``vertex`` the 0-based mesh
    vertex of the GT (I, U, V) (-1 when the chart has no vertex), ``kappa`` the per-point κ.
    GT ``j`` owns points ``offset[j] : offset[j] + count[j]``.
    """

    x: np.ndarray
    y: np.ndarray
    vertex: np.ndarray
    kappa: np.ndarray
    offset: np.ndarray
    count: np.ndarray

    @classmethod
    def from_annotations(cls, anns: Sequence[Mapping[str, Any]], index: SurfaceIndex) -> GtPoints:
        xs, ys, ii, us, vs, counts = [], [], [], [], [], []
        for ann in anns:
            gx, gy, gw, gh = (float(b) for b in ann["bbox"])
            px = np.asarray(ann.get("dp_x", []), dtype=np.float64)
            fields = ("dp_y", "dp_I", "dp_U", "dp_V")
            arrays = [np.asarray(ann.get(f, []), dtype=np.float64) for f in fields]
            if any(a.shape != px.shape for a in arrays):
                raise ValueError(
                    f"annotation {ann.get('id')}: dp_x, dp_y, dp_I, dp_U, dp_V must have the "
                    "same length"
                )
            py, pi, pu, pv = arrays
            xs.append(px * gw / EVAL_POINT_SCALE + gx)
            ys.append(py * gh / EVAL_POINT_SCALE + gy)
            ii.append(np.rint(pi).astype(np.int64))
            us.append(pu)
            vs.append(pv)
            counts.append(len(px))
        count = np.asarray(counts, dtype=np.int64)
        offset = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        if not anns:
            empty = np.zeros(0)
            return cls(empty, empty, empty.astype(np.int64), empty, offset[:0], count)
        i = np.concatenate(ii)
        kappa = index.chart_kappa[np.clip(i, 0, len(index.chart_kappa) - 1)]
        kappa = np.where((i >= 1) & (i < len(index.chart_kappa)), kappa, 0.0)
        vertex = index.mesh_vertex(i, np.concatenate(us), np.concatenate(vs))
        return cls(np.concatenate(xs), np.concatenate(ys), vertex, kappa, offset, count)


@dataclass
class RasterBank:
    """IUV rasters of many detections in one flat uint8 buffer.

    Detection ``k`` has box corner ``(x0[k], y0[k])``, readable width/height ``limit_w/h[k]``
    (``min(int(box size), raster size)``) and raster ``buffer[offset[k] : ...]`` of shape
    ``(3, height[k], width[k])``.
    """

    buffer: np.ndarray
    offset: np.ndarray
    height: np.ndarray
    width: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    limit_w: np.ndarray
    limit_h: np.ndarray

    @classmethod
    def from_rasters(
        cls, boxes: Sequence[Sequence[float]], rasters: Sequence[np.ndarray | None]
    ) -> RasterBank:
        """``rasters[k]`` is a (3, h, w) uint8 array or None (no DensePose output)."""
        shapes = [(0, 0) if r is None else r.shape[1:] for r in rasters]
        height = np.asarray([s[0] for s in shapes], dtype=np.int64)
        width = np.asarray([s[1] for s in shapes], dtype=np.int64)
        sizes = 3 * height * width
        offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        parts = [r.reshape(-1) for r in rasters if r is not None]
        buffer = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
        box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        box_w = box[:, 2].astype(np.int64)  # truncation toward zero
        box_h = box[:, 3].astype(np.int64)
        return cls(
            buffer=buffer,
            offset=offset[: len(shapes)],
            height=height,
            width=width,
            x0=box[:, 0],
            y0=box[:, 1],
            limit_w=np.minimum(box_w, width),
            limit_h=np.minimum(box_h, height),
        )


def gps_pairs(
    index: SurfaceIndex,
    gts: GtPoints,
    dets: RasterBank,
    pair_gt: np.ndarray,
    pair_det: np.ndarray,
) -> np.ndarray:
    """GPS of each pair (``gts`` entry ``pair_gt[k]``, ``dets`` entry ``pair_det[k]``).

    GPS = mean over all GT points of exp(-d² / 2κ²); points outside the detection's box raster,
    predicted as background, or whose GT chart has no vertex contribute 0.
    """
    pair_gt = np.asarray(pair_gt, dtype=np.int64)
    pair_det = np.asarray(pair_det, dtype=np.int64)
    n_pairs = len(pair_gt)
    if n_pairs == 0:
        return np.zeros(0)
    counts = gts.count[pair_gt]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(n_pairs)
    pair_of_pt = np.repeat(np.arange(n_pairs), counts)
    starts = np.cumsum(counts) - counts
    pt = np.arange(total) - np.repeat(starts, counts) + np.repeat(gts.offset[pair_gt], counts)
    det = pair_det[pair_of_pt]

    px = (gts.x[pt] - dets.x0[det]).astype(np.int64)  # truncation toward zero
    py = (gts.y[pt] - dets.y0[det]).astype(np.int64)
    inside = (px >= 0) & (py >= 0) & (px < dets.limit_w[det]) & (py < dets.limit_h[det])

    pred = np.full(total, -1, dtype=np.int64)
    sel = np.flatnonzero(inside)
    if len(sel):
        d = det[sel]
        plane = dets.height[d] * dets.width[d]
        at = dets.offset[d] + py[sel] * dets.width[d] + px[sel]
        i = dets.buffer[at]
        u = dets.buffer[at + plane] / 255.0
        v = dets.buffer[at + 2 * plane] / 255.0
        pred[sel] = index.mesh_vertex(i, u, v)

    gt_vertex = gts.vertex[pt]
    dist = np.full(total, np.inf)
    valid = (pred >= 0) & (gt_vertex >= 0)
    dist[valid & (pred == gt_vertex)] = 0.0
    far = np.flatnonzero(valid & (pred != gt_vertex))
    if len(far):
        dist[far] = np.asarray(index.surface.geodesic(gt_vertex[far], pred[far]), np.float64)
    kappa = gts.kappa[pt]
    score = np.zeros(total)
    ok = np.isfinite(dist) & (kappa > 0)
    score[ok] = np.exp(-(dist[ok] ** 2) / (2.0 * kappa[ok] ** 2))
    sums = np.bincount(pair_of_pt, weights=score, minlength=n_pairs)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
