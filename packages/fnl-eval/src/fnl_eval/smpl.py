"""The SMPL body surface of the DensePose evaluator, read from its three data files.

``SMPL_subdiv.mat`` (UV vertices: ``U_subdiv``, ``V_subdiv``, ``Part_ID_subdiv``),
``SMPL_SUBDIV_TRANSFORM.mat`` (``index``: 1-based mesh vertex of each UV vertex) and
``Pdist_matrix.pkl`` (geodesic distances between the 27 554 mesh vertices, strict lower
triangle in row-major order). See docs/evaluation.md, 'Body surfaces'. The files are published
by the DensePose authors at https://dl.fbaipublicfiles.com/densepose/data/.

``Pdist_matrix.pkl`` is a pickle, and loading a pickle can run arbitrary code. It is read with
:class:`NumpyOnlyUnpickler`, which only reconstructs builtin containers and numpy arrays
(plus ``_codecs.encode``, which protocol-2 pickles use for raw bytes) and refuses every other
global, so a tampered file fails instead of executing.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from fnl_core.densepose import FINE_TO_EVAL_GROUP, SMPL_KAPPA

__all__ = ["SMPL_FILES", "NumpyOnlyUnpickler", "SMPLSurface", "load_pdist"]

SMPL_FILES = ("SMPL_subdiv.mat", "SMPL_SUBDIV_TRANSFORM.mat", "Pdist_matrix.pkl")

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store array bytes
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler that can only rebuild numpy arrays (and builtin containers)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a pickle: only numpy arrays are allowed "
                "in Pdist_matrix.pkl"
            )
        return super().find_class(module, name)


def load_pdist(path: str | Path) -> np.ndarray:
    """The flat geodesic-distance vector of ``Pdist_matrix.pkl`` (lower-triangle order)."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            data = NumpyOnlyUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the geodesic distances: {exc}") from exc
    if not isinstance(data, dict) or "Pdist_matrix" not in data:
        raise ValueError(f'{path}: expected a dict with key "Pdist_matrix"')
    pdist = np.asarray(data["Pdist_matrix"])
    if pdist.ndim not in (1, 2) or (pdist.ndim == 2 and pdist.shape[1] != 1):
        raise ValueError(f"{path}: Pdist_matrix must have shape (K, 1), got {pdist.shape}")
    return pdist.reshape(-1)


def _mat_vector(path: Path, name: str) -> np.ndarray:
    data = loadmat(str(path))
    if name not in data:
        raise ValueError(f"{path}: variable {name!r} not found (has {sorted(data)})")
    return np.asarray(data[name]).squeeze().reshape(-1)


class SMPLSurface:
    """A :class:`fnl_core.structures.BodySurface` backed by the DensePose SMPL data files.

    ``pdist`` holds geodesic distances in lower-triangle order: the distance between mesh
    vertices a > b (0-based) is ``pdist[a (a - 1) / 2 + b]``.
    """

    def __init__(
        self,
        uv_u: np.ndarray,
        uv_v: np.ndarray,
        uv_part: np.ndarray,
        uv_to_mesh: np.ndarray,
        pdist: np.ndarray,
        kappa: tuple[float, ...] = SMPL_KAPPA,
    ) -> None:
        self.uv_u = np.asarray(uv_u, dtype=np.float64)
        self.uv_v = np.asarray(uv_v, dtype=np.float64)
        self.uv_part = np.asarray(uv_part).astype(np.int64)
        self.uv_to_mesh = np.asarray(uv_to_mesh).astype(np.int64)
        self.pdist = pdist
        self.kappa = np.asarray(kappa, dtype=np.float64)
        self.part_group = np.asarray(FINE_TO_EVAL_GROUP, dtype=np.int64)
        n = int(self.uv_to_mesh.max()) + 1 if len(self.uv_to_mesh) else 0
        if len(pdist) < n * (n - 1) // 2:
            raise ValueError(
                f"Pdist_matrix has {len(pdist)} entries but the UV vertices reach mesh vertex "
                f"{n - 1}, which needs n(n-1)/2 = {n * (n - 1) // 2}"
            )
        self.num_mesh_vertices = n

    @classmethod
    def from_folder(cls, folder: str | Path) -> SMPLSurface:
        """Load the three SMPL data files from ``folder``."""
        folder = Path(folder)
        missing = [name for name in SMPL_FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"SMPL surface folder {str(folder)!r} lacks {', '.join(missing)} (needs "
                f"{', '.join(SMPL_FILES)}; download them from "
                "https://dl.fbaipublicfiles.com/densepose/data/)"
            )
        subdiv = folder / SMPL_FILES[0]
        u = _mat_vector(subdiv, "U_subdiv")
        v = _mat_vector(subdiv, "V_subdiv")
        part = _mat_vector(subdiv, "Part_ID_subdiv")
        index = _mat_vector(folder / SMPL_FILES[1], "index")
        if not (len(u) == len(v) == len(part) == len(index)):
            raise ValueError(
                f"{folder}: U_subdiv ({len(u)}), V_subdiv ({len(v)}), Part_ID_subdiv "
                f"({len(part)}) and index ({len(index)}) must have the same length"
            )
        mesh = np.rint(index).astype(np.int64) - 1
        if len(mesh) and mesh.min() < 0:
            raise ValueError(f"{folder / SMPL_FILES[1]}: index must be 1-based (found 0)")
        return cls(u, v, np.rint(part), mesh, load_pdist(folder / SMPL_FILES[2]))

    def geodesic(self, a: Any, b: Any) -> np.ndarray:
        """Element-wise geodesic distance between 0-based mesh vertices ``a`` and ``b``."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        hi, lo = np.maximum(a, b), np.minimum(a, b)
        out = np.zeros(hi.shape, dtype=np.float64)
        diff = hi != lo
        k = hi[diff] * (hi[diff] - 1) // 2 + lo[diff]
        out[diff] = self.pdist[k]
        return out
