"""The toy body as a surface for geodesic evaluation (a ``fnl_core.structures.BodySurface``).

Mesh: each of the 14 ellipsoids in the canonical pose, sampled on a latitude/longitude grid
(V = ring / rings, longitudes every ``spacing`` metres at the equator, a pole vertex at each end).
UV vertices: one per (mesh vertex, chart containing it); vertices on a chart seam appear in both
charts, a pole once per chart for several U along V = 0 or 1.

Geodesics are shortest paths (Dijkstra, ``scipy.sparse.csgraph``) on the grid graph with edges to
the 8 neighbours and the 8 "knight" neighbours of each grid vertex (weights = 3-D chord lengths),
and, between adjacent parts (torso–head, torso–upper arm, …), edges between vertices of the two
ellipsoids closer than 1.5 × spacing (where the ellipsoids intersect). On a sphere of radius
0.15 m with the default spacing, the graph distances are within a few percent of great-circle
distances (measured in ``docs/data.md`` and the tests). The n×n distance matrix (float32) is
cached on disk under the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fnl_core.densepose import FINE_TO_EVAL_GROUP, NUM_EVAL_GROUPS, SMPL_KAPPA
from fnl_core.files import atomic_output
from fnl_data.toy.body import (
    PART_RADII,
    PART_SINGLE,
    PARTS,
    local_to_body,
    local_to_chart,
)

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

logger = logging.getLogger("fnl_data")

SURFACE_VERSION = 1

#: Pairs of parts (indices into body.PARTS) whose ellipsoids meet at a joint.
ADJACENT_PARTS = (
    (0, 13), (0, 9), (0, 10), (9, 11), (10, 12), (11, 2), (12, 1),
    (0, 5), (0, 6), (5, 7), (6, 8), (7, 4), (8, 3),
)  # fmt: skip

_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1), (1, 2), (1, -2), (2, 1), (2, -1))


def _half_ellipse_perimeter(a: float, b: float) -> float:
    h = ((a - b) / (a + b)) ** 2
    return np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h))) / 2


def ellipsoid_grid(radii: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Unit-sphere grid of one ellipsoid: (points M×3, edges E×2, rings, longitudes).

    Vertex 0 is the V = 0 pole, vertex M − 1 the V = 1 pole, ring k (1..rings−1) longitude j
    is vertex 1 + (k − 1)·longitudes + j at φ = −π + 2πj / longitudes. Longitudes are a
    multiple of 4 so that φ = 0, ±π/2 and π (the chart seams) are grid lines.
    """
    r1, r2, r3 = (float(r) for r in radii)
    rings = max(4, int(np.ceil(_half_ellipse_perimeter(max(r1, r2), r3) / spacing)))
    longs = max(8, 4 * int(np.ceil(2 * _half_ellipse_perimeter(r1, r2) / (4 * spacing))))
    t = np.pi * np.arange(1, rings) / rings
    phi = -np.pi + 2 * np.pi * np.arange(longs) / longs
    st, ct = np.sin(t)[:, None], np.cos(t)[:, None]
    ring_pts = np.stack(
        [st * np.cos(phi), st * np.sin(phi), -np.broadcast_to(ct, (rings - 1, longs))], axis=-1
    ).reshape(-1, 3)
    pts = np.concatenate([[[0.0, 0.0, -1.0]], ring_pts, [[0.0, 0.0, 1.0]]])
    idx = 1 + np.arange((rings - 1) * longs).reshape(rings - 1, longs)
    edges = []
    for dk, dj in _NEIGHBOURS:
        if dk >= rings - 1:
            continue
        a = idx[: rings - 1 - dk]
        b = np.roll(idx[dk:], -dj, axis=1)
        edges.append(np.stack([a.ravel(), b.ravel()], axis=1))
    last = len(pts) - 1
    for ring, pole in ((0, 0), (rings - 2, last)):
        edges.append(np.stack([np.full(longs, pole), idx[ring]], axis=1))
    for ring, pole in ((1, 0), (rings - 3, last)):
        if 0 <= ring < rings - 1:
            edges.append(np.stack([np.full(longs, pole), idx[ring]], axis=1))
    return pts, np.concatenate(edges), rings, longs


def _uv_vertices(part: int, pts: np.ndarray, longs: int) -> tuple[np.ndarray, ...]:
    """(mesh-local vertex, chart, u, v) of the UV vertices of one part's grid."""
    n = len(pts)
    parts = np.full(n, part)
    chart, u, v = local_to_chart(parts, pts)
    verts, charts, us, vs = [np.arange(n)], [chart], [u], [v]
    ring = np.arange(1, n - 1)
    phi = np.arctan2(pts[ring, 1], pts[ring, 0])
    p = PARTS[part]
    if PART_SINGLE[part]:
        seam = ring[np.isclose(phi, -np.pi / 2)]
        verts.append(seam)
        charts.append(chart[seam])
        us.append(np.ones(len(seam)))
        vs.append(v[seam])
    else:
        seam = ring[np.isclose(np.abs(np.sin(phi)), 0.0, atol=1e-9)]
        verts.append(seam)
        charts.append(np.full(len(seam), p.charts[0]))
        us.append(1.0 - u[seam])
        vs.append(v[seam])
    pole_u = np.linspace(0, 1, longs // 2 + 1)
    for pole, pole_v in ((0, 0.0), (n - 1, 1.0)):
        for c in sorted(set(p.charts)):
            verts.append(np.full(len(pole_u), pole))
            charts.append(np.full(len(pole_u), c))
            us.append(pole_u)
            vs.append(np.full(len(pole_u), pole_v))
    return tuple(np.concatenate(a) for a in (verts, charts, us, vs))


def _cache_root(cache_dir: str | Path | None) -> Path:
    from fnl_data.toy.generate import default_cache_root

    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()


class ToySurface:
    """The toy body surface: UV vertices, mesh, geodesic distances (metres), κ per group."""

    def __init__(
        self,
        spacing: float = 0.03,
        kappa: str = "smpl",
        cache_dir: str | Path | None = None,
    ) -> None:
        if kappa not in ("smpl", "toy"):
            raise ValueError(f"kappa must be 'smpl' or 'toy', got {kappa!r}")
        self.spacing = spacing
        verts, vparts, edges, uv = [], [], [], ([], [], [], [])
        offset = 0
        for k in range(len(PARTS)):
            pts, e, _, longs = ellipsoid_grid(PART_RADII[k], spacing)
            verts.append(local_to_body(np.full(len(pts), k), pts))
            vparts.append(np.full(len(pts), k))
            edges.append(e + offset)
            for acc, arr in zip(uv, _uv_vertices(k, pts, longs), strict=True):
                acc.append(arr + offset if acc is uv[0] else arr)
            offset += len(pts)
        self.vertices = np.concatenate(verts)
        self.vertex_part = np.concatenate(vparts)
        self.edges = np.concatenate([*edges, self._joint_edges(spacing)])
        self.uv_to_mesh = np.concatenate(uv[0]).astype(np.int64)
        self.uv_part = np.concatenate(uv[1]).astype(np.int64)
        self.uv_u = np.concatenate(uv[2]).astype(np.float64)
        self.uv_v = np.concatenate(uv[3]).astype(np.float64)
        self.part_group = np.asarray(FINE_TO_EVAL_GROUP, dtype=np.int64)
        key = json.dumps({"v": SURFACE_VERSION, "spacing": spacing, "n": len(self.vertices)})
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.cache_file = _cache_root(cache_dir) / "toy_surface" / f"geodesics-{digest}.npy"
        self._dist: np.ndarray | None = None
        self.kappa = (
            np.asarray(SMPL_KAPPA, dtype=np.float64) if kappa == "smpl" else self.toy_kappa()
        )

    def _joint_edges(self, spacing: float) -> np.ndarray:
        from scipy.spatial import cKDTree

        out = []
        for a, b in ADJACENT_PARTS:
            ia = np.flatnonzero(self.vertex_part == a)
            ib = np.flatnonzero(self.vertex_part == b)
            tree_a, tree_b = cKDTree(self.vertices[ia]), cKDTree(self.vertices[ib])
            pairs = tree_a.query_ball_tree(tree_b, r=1.5 * spacing)
            found = [(ia[i], ib[j]) for i, js in enumerate(pairs) for j in js]
            if not found:
                raise RuntimeError(
                    f"toy surface: parts {PARTS[a].name}/{PARTS[b].name} do not meet"
                )
            out.append(np.asarray(found, dtype=np.int64))
        return np.concatenate(out)

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    def graph(self) -> csr_matrix:
        """Symmetric sparse edge graph (weights = 3-D edge lengths in metres)."""
        from scipy.sparse import coo_matrix

        a, b = self.edges[:, 0], self.edges[:, 1]
        w = np.linalg.norm(self.vertices[a] - self.vertices[b], axis=1)
        n = self.num_vertices
        return coo_matrix((w, (a, b)), shape=(n, n)).tocsr()

    @property
    def distances(self) -> np.ndarray:
        """n×n float32 geodesic distance matrix, computed once and cached on disk."""
        if self._dist is None:
            self._dist = self._load_or_compute()
        return self._dist

    def _load_or_compute(self) -> np.ndarray:
        if self.cache_file.is_file():
            dist = np.load(self.cache_file)
            if dist.shape == (self.num_vertices, self.num_vertices):
                return dist
        from scipy.sparse.csgraph import connected_components, shortest_path

        graph = self.graph()
        count, _ = connected_components(graph, directed=False)
        if count != 1:
            raise RuntimeError(f"toy surface mesh has {count} connected components, expected 1")
        logger.info("computing toy-surface geodesics for %d vertices", self.num_vertices)
        dist = shortest_path(graph, method="D", directed=False).astype(np.float32)
        try:
            with atomic_output(self.cache_file) as tmp, tmp.open("wb") as f:
                np.save(f, dist)
        except OSError as exc:
            logger.warning("could not cache toy-surface geodesics at %s: %s", self.cache_file, exc)
        return dist

    def geodesic(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Element-wise geodesic distance (metres) between mesh vertices ``a[k]`` and ``b[k]``."""
        return self.distances[np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)]

    def toy_kappa(self) -> np.ndarray:
        """κ recomputed on this body: per group, the mean over its charts of the mean geodesic
        distance between pairs of the chart's mesh vertices (index 0 stays 0)."""
        kappa = np.zeros(NUM_EVAL_GROUPS + 1)
        for g in range(1, NUM_EVAL_GROUPS + 1):
            means = []
            for c in np.flatnonzero(self.part_group == g):
                verts = np.unique(self.uv_to_mesh[self.uv_part == c])
                means.append(float(self.distances[np.ix_(verts, verts)].mean()))
            kappa[g] = float(np.mean(means))
        return kappa

    def write_evaluator_files(self, folder: str | Path) -> Path:
        """Write the DensePose evaluator data files for this body (docs/evaluation.md,
        'Body surfaces'):
        ``SMPL_subdiv.mat``, ``SMPL_SUBDIV_TRANSFORM.mat``, ``Pdist_matrix.pkl``.

        Part ids and vertex indices are stored as integers (int32): the official evaluator
        uses them as array indices, which fails on floating-point values.
        """
        from scipy.io import savemat

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        savemat(
            str(folder / "SMPL_subdiv.mat"),
            {
                "U_subdiv": self.uv_u[None, :],
                "V_subdiv": self.uv_v[None, :],
                "Part_ID_subdiv": self.uv_part[None, :].astype(np.int32),
            },
        )
        savemat(
            str(folder / "SMPL_SUBDIV_TRANSFORM.mat"),
            {"index": (self.uv_to_mesh + 1)[None, :].astype(np.int32)},
        )
        rows, cols = np.tril_indices(self.num_vertices, k=-1)  # row-major (a, b), a > b
        pdist = self.distances[rows, cols].reshape(-1, 1)
        with open(folder / "Pdist_matrix.pkl", "wb") as fh:
            pickle.dump({"Pdist_matrix": pdist}, fh, protocol=2)
        return folder

    def __repr__(self) -> str:
        return (
            f"ToySurface({self.num_vertices} mesh vertices, {len(self.uv_u)} UV vertices, "
            f"spacing={self.spacing} m)"
        )
