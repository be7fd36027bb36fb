"""The toy body surface: BodySurface contract, geodesic properties, scale, evaluator files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from fnl_core.densepose import SMPL_KAPPA
from fnl_core.structures import BodySurface
from fnl_data.toy.surface import ToySurface, ellipsoid_grid


@pytest.fixture(scope="module")
def surface(tmp_path_factory):
    return ToySurface(spacing=0.06, cache_dir=tmp_path_factory.mktemp("surface-cache"))


def test_satisfies_body_surface(surface):
    assert isinstance(surface, BodySurface)
    n = len(surface.uv_u)
    assert surface.uv_v.shape == surface.uv_part.shape == surface.uv_to_mesh.shape == (n,)
    assert surface.uv_u.min() >= 0 and surface.uv_u.max() <= 1
    assert surface.uv_v.min() >= 0 and surface.uv_v.max() <= 1
    assert surface.uv_to_mesh.min() == 0 and surface.uv_to_mesh.max() == surface.num_vertices - 1
    counts = np.bincount(surface.uv_part, minlength=25)
    assert counts[0] == 0 and counts[1:].min() >= 2
    assert surface.part_group.shape == (25,) and surface.kappa.shape == (9,)
    np.testing.assert_array_equal(surface.kappa, SMPL_KAPPA)


def test_geodesics_symmetric_zero_diagonal_metres(surface):
    d = surface.distances
    n = surface.num_vertices
    np.testing.assert_array_equal(np.diag(d), 0)
    np.testing.assert_allclose(d, d.T, atol=1e-6)
    assert np.isfinite(d).all()
    assert 1.5 < d.max() < 2.5  # hand to foot of a ~1.7 m body
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, n, 50), rng.integers(0, n, 50)
    np.testing.assert_array_equal(surface.geodesic(a, b), d[a, b])
    chord = np.linalg.norm(surface.vertices[a] - surface.vertices[b], axis=1)
    assert (surface.geodesic(a, b) >= chord - 1e-4).all()  # never shorter than a straight line


def test_geodesics_are_cached_on_disk(surface):
    _ = surface.distances
    assert surface.cache_file.is_file()
    again = ToySurface(spacing=0.06, cache_dir=surface.cache_file.parents[1])
    assert again.cache_file == surface.cache_file
    np.testing.assert_array_equal(again.distances, surface.distances)


def test_graph_geodesics_on_a_sphere_are_close_to_great_circles():
    radius, spacing = 0.15, 0.03
    pts, edges, _, _ = ellipsoid_grid(np.full(3, radius), spacing)
    xyz = pts * radius
    w = np.linalg.norm(xyz[edges[:, 0]] - xyz[edges[:, 1]], axis=1)
    n = len(pts)
    d = shortest_path(coo_matrix((w, (edges[:, 0], edges[:, 1])), shape=(n, n)), directed=False)
    true = radius * np.arccos(np.clip(pts @ pts.T, -1, 1))
    far = true > 2 * spacing
    rel = (d[far] - true[far]) / true[far]
    assert abs(rel.mean()) < 0.03 and np.percentile(np.abs(rel), 95) < 0.06


def test_recomputed_kappa_is_close_to_smpl(surface):
    kappa = surface.toy_kappa()
    assert kappa[0] == 0
    np.testing.assert_allclose(kappa[1:], SMPL_KAPPA[1:], rtol=0.35)


def test_evaluator_files(surface, tmp_path):
    from scipy.io import loadmat

    surface.write_evaluator_files(tmp_path)
    sub = loadmat(tmp_path / "SMPL_subdiv.mat")
    np.testing.assert_allclose(sub["U_subdiv"].ravel(), surface.uv_u)
    index = loadmat(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat")["index"].ravel()
    np.testing.assert_array_equal(index, surface.uv_to_mesh + 1)
    # the official evaluator indexes arrays with these: integers, not float64
    part = sub["Part_ID_subdiv"].ravel()
    assert part.dtype.kind == "i" and index.dtype.kind == "i"
    np.testing.assert_array_equal(part, surface.uv_part)
    uv_ids = np.arange(part.size) + 1
    assert index[uv_ids[part == 3] - 1].dtype.kind == "i"
    with open(tmp_path / "Pdist_matrix.pkl", "rb") as fh:
        pdist = pickle.load(fh, encoding="latin1")["Pdist_matrix"]
    n = surface.num_vertices
    assert pdist.shape == (n * (n - 1) // 2, 1)
    a, b = 7, 3
    assert pdist[a * (a - 1) // 2 + b, 0] == surface.distances[a, b]
