"""Continuous surface embeddings (CSE): the mesh-vertex embedder and closest-vertex assignment.

A CSE model predicts, per pixel of a detection, an embedding in R^E; each mesh vertex has an
embedding in the same space, and the pixel's surface point is the vertex whose embedding is
nearest (squared Euclidean distance). Module and parameter names follow DensePose
(``embedder_<mesh>.features`` / ``.embeddings``) so its checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Pixels per distance-matrix chunk (DensePose's value; bounds the memory of one chunk).
CHUNK_PIXELS = 10_000


def normalize_embeddings(embeddings: Tensor, epsilon: float = 1e-6) -> Tensor:
    """Each row divided by ``max(||row||_2, epsilon)``."""
    return embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=epsilon)


class VertexFeatureEmbedder(nn.Module):
    """Vertex embeddings = normalize(features @ embeddings).

    ``features`` [V, F] is a fixed per-vertex basis (a buffer; DensePose loads the mesh's
    Laplace-Beltrami eigenfunctions into it), ``embeddings`` [F, E] the learned projection.
    Both start at zero, as in DensePose: a model is useful only with loaded weights.
    """

    def __init__(self, *, num_vertices: int, feature_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.zeros(num_vertices, feature_dim))
        self.embeddings = nn.Parameter(torch.zeros(feature_dim, embed_dim))

    def forward(self) -> Tensor:
        return normalize_embeddings(self.features @ self.embeddings)


class VertexDirectEmbedder(nn.Module):
    """Vertex embeddings learned directly: normalize(embeddings [V, E])."""

    def __init__(self, *, num_vertices: int, embed_dim: int) -> None:
        super().__init__()
        self.embeddings = nn.Parameter(torch.zeros(num_vertices, embed_dim))

    def forward(self) -> Tensor:
        return normalize_embeddings(self.embeddings)


class MeshEmbedder(nn.Module):
    """One vertex embedder per mesh, as submodules ``embedder_<mesh name>``.

    ``forward(mesh_name)`` returns that mesh's normalised vertex embeddings [V, E].
    """

    def __init__(self, embedders: dict[str, nn.Module]) -> None:
        super().__init__()
        if not embedders:
            raise ValueError("MeshEmbedder: give at least one mesh embedder")
        self.mesh_names = list(embedders)
        for name, module in embedders.items():
            self.add_module(f"embedder_{name}", module)

    def forward(self, mesh_name: str | None = None) -> Tensor:
        name = mesh_name or self.mesh_names[0]
        if name not in self.mesh_names:
            raise KeyError(f"unknown mesh {name!r}; this embedder has {self.mesh_names}")
        return getattr(self, f"embedder_{name}")()

    @staticmethod
    def closest_vertices(
        embedding: Tensor, coarse_segm: Tensor, size_hw: tuple[int, int], vertex_embeddings: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:func:`closest_vertices` (so that callers holding only the module can use it)."""
        return closest_vertices(embedding, coarse_segm, size_hw, vertex_embeddings)


def squared_euclidean_distances(points: Tensor, vertices: Tensor) -> Tensor:
    """[P, V] squared distances, computed as ``(-2 P) Vᵀ + |P|² + |V|²`` (DensePose's order
    of operations, so that argmin ties fall the same way)."""
    edm = torch.mm(-2 * points, vertices.t())
    edm += (points * points).sum(1, keepdim=True) + (vertices * vertices).sum(1, keepdim=True).t()
    return edm


def closest_vertices(
    embedding: Tensor, coarse_segm: Tensor, size_hw: tuple[int, int], vertex_embeddings: Tensor
) -> tuple[Tensor, Tensor]:
    """Closest mesh vertex per pixel of one detection.

    ``embedding`` (E×S×S) and ``coarse_segm`` (K×S×S) are resized bilinearly
    (align_corners=False) to ``size_hw``; the mask is ``argmax(coarse) > 0``; each masked pixel
    gets the index of the nearest row of ``vertex_embeddings`` (V×E; first index on ties).
    Returns (int64 h×w vertex map, 0 off the mask; bool h×w mask).
    """
    h, w = size_hw
    emb = F.interpolate(embedding[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    segm = F.interpolate(coarse_segm[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    mask = segm.argmax(0) > 0
    vertices = torch.zeros(mask.shape, dtype=torch.int64, device=embedding.device)
    pixels = emb[:, mask].t()
    if len(pixels):
        vertices[mask] = torch.cat(
            [
                squared_euclidean_distances(chunk, vertex_embeddings).argmin(dim=1)
                for chunk in pixels.split(CHUNK_PIXELS)
            ]
        )
    return vertices, mask


__all__ = [
    "CHUNK_PIXELS",
    "MeshEmbedder",
    "VertexDirectEmbedder",
    "VertexFeatureEmbedder",
    "closest_vertices",
    "normalize_embeddings",
    "squared_euclidean_distances",
]
