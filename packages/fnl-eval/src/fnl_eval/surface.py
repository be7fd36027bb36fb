"""Nearest-UV-vertex lookup on a body surface (docs/evaluation.md, GPS: the snap to vertices).

A :class:`fnl_core.structures.BodySurface` lists UV vertices (U, V, chart, mesh vertex). A point
(I, U, V) is snapped to the UV vertex of chart I that is closest in (U, V) (Euclidean, lowest
index on ties, like the reference ``argmin`` over ``cdist``), then mapped to its mesh vertex.
:class:`SurfaceIndex` builds one KD-tree per chart once and answers whole point batches at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from fnl_core.densepose import NUM_FINE_CHARTS

__all__ = ["SurfaceIndex", "validate_surface"]

_TIE_TOLERANCE = 1e-12
"""Two nearest distances closer than this are re-measured exactly to break ties by index."""


def validate_surface(surface: Any) -> None:
    """Check the shapes of a BodySurface's arrays; raise ValueError naming the bad field."""
    name = type(surface).__name__
    fields = ("uv_u", "uv_v", "uv_part", "uv_to_mesh", "kappa", "part_group")
    missing = [f for f in fields if not hasattr(surface, f)]
    if missing or not callable(getattr(surface, "geodesic", None)):
        raise ValueError(
            f"surface {name} is not a BodySurface: missing {', '.join(missing) or 'geodesic()'}"
        )
    n = np.asarray(surface.uv_u).shape
    for f in ("uv_v", "uv_part", "uv_to_mesh"):
        if np.asarray(getattr(surface, f)).shape != n or len(n) != 1:
            raise ValueError(f"surface {name}: {f} must be 1-D like uv_u {n}")
    if np.asarray(surface.kappa).shape != (9,):
        raise ValueError(f"surface {name}: kappa must have 9 values (group 0..8)")
    if np.asarray(surface.part_group).shape != (NUM_FINE_CHARTS + 1,):
        raise ValueError(f"surface {name}: part_group must have 25 values (chart 0..24)")


class SurfaceIndex:
    """Per-chart KD-trees over a surface's UV vertices, plus its κ per fine chart."""

    def __init__(self, surface: Any) -> None:
        validate_surface(surface)
        self.surface = surface
        u = np.asarray(surface.uv_u, dtype=np.float64)
        v = np.asarray(surface.uv_v, dtype=np.float64)
        part = np.asarray(surface.uv_part).astype(np.int64)
        self._to_mesh = np.asarray(surface.uv_to_mesh).astype(np.int64)
        self._charts: dict[int, tuple[cKDTree, np.ndarray, np.ndarray]] = {}
        for c in range(1, NUM_FINE_CHARTS + 1):
            idx = np.flatnonzero(part == c)
            if len(idx):
                uv = np.stack([u[idx], v[idx]], axis=1)
                self._charts[c] = (cKDTree(uv), idx, uv)
        group = np.asarray(surface.part_group).astype(np.int64)
        #: κ of each fine chart 0..24 (chart 0 = 0).
        self.chart_kappa = np.asarray(surface.kappa, dtype=np.float64)[group]

    def mesh_vertex(self, i: Any, u: Any, v: Any) -> np.ndarray:
        """0-based mesh vertex of each point (chart ``i``, ``u``, ``v``); -1 for "no vertex".

        Points whose chart is 0 (background), outside 1..24, or has no UV vertex get -1.
        """
        i = np.asarray(i).astype(np.int64)
        uv = np.stack([np.asarray(u, np.float64), np.asarray(v, np.float64)], axis=1)
        out = np.full(i.shape, -1, dtype=np.int64)
        for c, (tree, idx, verts) in self._charts.items():
            sel = np.flatnonzero(i == c)
            if len(sel):
                out[sel] = self._to_mesh[idx[self._nearest(tree, verts, uv[sel])]]
        return out

    @staticmethod
    def _nearest(tree: cKDTree, verts: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Chart-local index of the nearest vertex; exact ties go to the lowest index."""
        if len(verts) == 1:
            return np.zeros(len(query), dtype=np.int64)
        dist, cand = tree.query(query, k=2)
        best = cand[:, 0].astype(np.int64)
        near_tie = np.flatnonzero(dist[:, 1] - dist[:, 0] <= _TIE_TOLERANCE)
        for k in near_tie:  # rare: re-measure every vertex within reach and break ties by index
            hits = np.asarray(tree.query_ball_point(query[k], dist[k, 1] + _TIE_TOLERANCE))
            d = np.sqrt(((verts[hits] - query[k]) ** 2).sum(axis=1))
            best[k] = hits[d == d.min()].min()
        return best
