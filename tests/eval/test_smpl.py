"""The SMPL surface reader: files, lower-triangle geodesics, safe pickle loading."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from scipy.io import savemat

from fnl_core.densepose import SMPL_KAPPA
from fnl_eval.config import SMPLSurfaceConfig
from fnl_eval.smpl import SMPL_FILES, load_pdist
from fnl_eval.surface import SurfaceIndex

N_MESH = 6


def _write_smpl(folder, pdist):
    # two UV vertices per chart; chart c uses mesh vertices (c % 6) and ((c + 1) % 6)
    charts = np.repeat(np.arange(1, 25), 2)
    one = np.arange(1, 25)
    mesh = np.stack([one % N_MESH, (one + 1) % N_MESH], 1).reshape(-1)
    u = np.tile([0.1, 0.9], 24)
    savemat(folder / "SMPL_subdiv.mat", {"U_subdiv": u[None], "V_subdiv": u[None] * 0 + 0.5,
                                         "Part_ID_subdiv": charts[None].astype(float)})  # fmt: skip
    savemat(folder / "SMPL_SUBDIV_TRANSFORM.mat", {"index": (mesh + 1)[:, None].astype(float)})
    with (folder / "Pdist_matrix.pkl").open("wb") as f:
        pickle.dump({"Pdist_matrix": pdist[:, None]}, f, protocol=2)


def _lower_triangle(full):
    n = len(full)
    return np.asarray([full[a, b] for a in range(1, n) for b in range(a)])


def test_smpl_surface_reads_the_three_files_and_indexes_the_lower_triangle(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.uniform(0.1, 1.0, (N_MESH, N_MESH))
    full = full + full.T
    np.fill_diagonal(full, 0)
    _write_smpl(tmp_path, _lower_triangle(full))
    surface = SMPLSurfaceConfig(path=tmp_path).build()
    assert surface.uv_part.shape == (48,) and surface.uv_to_mesh.max() == N_MESH - 1
    np.testing.assert_array_equal(surface.kappa, SMPL_KAPPA)
    a, b = np.meshgrid(np.arange(N_MESH), np.arange(N_MESH))
    np.testing.assert_allclose(surface.geodesic(a.ravel(), b.ravel()), full[a.ravel(), b.ravel()])
    index = SurfaceIndex(surface)
    assert index.mesh_vertex([5, 5], [0.2, 0.8], [0.5, 0.5]).tolist() == [5, 0]


def test_missing_files_are_named(tmp_path):
    (tmp_path / "SMPL_subdiv.mat").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        SMPLSurfaceConfig(path=tmp_path).build()
    assert "SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl" in str(err.value)
    assert "SMPL_subdiv.mat," not in str(err.value).split("lacks")[1].split("(")[0]
    assert all(name in str(err.value) for name in SMPL_FILES)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_with_anything_but_numpy_arrays_are_refused(tmp_path):
    path = tmp_path / "Pdist_matrix.pkl"
    path.write_bytes(pickle.dumps({"Pdist_matrix": _Exploit()}))
    with pytest.raises(ValueError, match="refusing to load"):
        load_pdist(path)
    path.write_bytes(pickle.dumps({"Pdist_matrix": np.arange(3.0)[:, None]}))
    np.testing.assert_array_equal(load_pdist(path), [0.0, 1.0, 2.0])


def test_a_short_distance_vector_is_rejected(tmp_path):
    _write_smpl(tmp_path, np.ones(4))
    with pytest.raises(ValueError, match="n\\(n-1\\)/2"):
        SMPLSurfaceConfig(path=tmp_path).build()
