"""A tiny synthetic body surface and DensePose-COCO builders for the fnl-eval tests.

(A uniquely named module rather than conftest.py, so other test folders cannot shadow it.)

The surface has 24 flat square charts of side ``SIDE`` metres, each sampled by a ``N × N`` grid
of UV vertices (one mesh vertex each); charts lie 100 m apart, so the geodesic between two
vertices of one chart is their planar distance and across charts it is huge (GPS 0).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pycocotools import mask as mask_utils

from fnl_core.densepose import FINE_TO_EVAL_GROUP, SMPL_KAPPA
from fnl_core.spec import ComponentConfig

N = 5
SIDE = 0.4
STEP = SIDE / (N - 1)
IMAGE_H, IMAGE_W = 200, 240


class GridSurface:
    """24 planar charts with an N × N vertex grid each; geodesic = 3-D Euclidean distance."""

    def __init__(self) -> None:
        g = np.linspace(0.0, 1.0, N)
        uu, vv = np.meshgrid(g, g, indexing="ij")
        charts = np.repeat(np.arange(1, 25), N * N)
        self.uv_u = np.tile(uu.ravel(), 24)
        self.uv_v = np.tile(vv.ravel(), 24)
        self.uv_part = charts
        self.uv_to_mesh = np.arange(24 * N * N)
        self.kappa = np.asarray(SMPL_KAPPA)
        self.part_group = np.asarray(FINE_TO_EVAL_GROUP)
        self.xyz = np.stack([self.uv_u * SIDE, self.uv_v * SIDE, charts * 100.0], axis=1)

    def geodesic(self, a: Any, b: Any) -> np.ndarray:
        return np.linalg.norm(self.xyz[np.asarray(a)] - self.xyz[np.asarray(b)], axis=-1)


class GridSurfaceConfig(ComponentConfig):
    type: Literal["grid"] = "grid"
    group: ClassVar[str] = "fnl.surfaces"

    def build(self) -> GridSurface:
        return GridSurface()


def full_dp_masks() -> list[Any]:
    """dp_masks with the whole box labelled torso (coarse part 1), others empty."""
    rle = mask_utils.encode(np.asfortranarray(np.ones((256, 256), np.uint8)))
    return [{"size": rle["size"], "counts": rle["counts"].decode()}] + [[] for _ in range(13)]


def person(
    ann_id: int,
    image_id: int,
    bbox: list[float],
    chart: int = 2,
    n_points: int = 12,
    seed: int = 0,
) -> dict[str, Any]:
    """A DensePose GT person whose points sit on grid vertices of one chart."""
    rng = np.random.default_rng(seed + ann_id)
    ku, kv = rng.integers(0, N, n_points), rng.integers(0, N, n_points)
    cells = rng.choice(256, n_points, replace=False)  # distinct pixels on a 16 × 16 lattice
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
        "dp_x": (cells % 16 * 15.5 + 8.0).tolist(),
        "dp_y": (cells // 16 * 15.5 + 8.0).tolist(),
        "dp_I": [float(chart)] * n_points,
        "dp_U": (ku / (N - 1)).tolist(),
        "dp_V": (kv / (N - 1)).tolist(),
        "dp_masks": full_dp_masks(),
    }


def gt_json(anns: list[dict[str, Any]], n_images: int = 1, **image_extra: Any) -> dict[str, Any]:
    images = [
        {"id": i + 1, "file_name": f"{i + 1}.png", "height": IMAGE_H, "width": IMAGE_W}
        for i in range(n_images)
    ]
    images[0].update(image_extra)
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}],
    }


def point_pixels(ann: dict[str, Any], det_bbox: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Raster position of each GT point in a detection's raster (evaluator /255 convention)."""
    gx, gy, gw, gh = ann["bbox"]
    px = (np.asarray(ann["dp_x"]) * gw / 255.0 + gx - det_bbox[0]).astype(int)
    py = (np.asarray(ann["dp_y"]) * gh / 255.0 + gy - det_bbox[1]).astype(int)
    return px, py


def perfect_iuv(ann: dict[str, Any], det_bbox: list[float] | None = None) -> np.ndarray:
    """IUV raster over the detection box: foreground everywhere, GT (I, U, V) at GT points."""
    det_bbox = det_bbox or ann["bbox"]
    h, w = max(int(det_bbox[3]), 1), max(int(det_bbox[2]), 1)
    iuv = np.zeros((3, h, w), np.uint8)
    iuv[0] = 1
    px, py = point_pixels(ann, det_bbox)
    ok = (px >= 0) & (py >= 0) & (px < w) & (py < h)
    iuv[0, py[ok], px[ok]] = np.asarray(ann["dp_I"])[ok].astype(np.uint8)
    iuv[1, py[ok], px[ok]] = np.round(np.asarray(ann["dp_U"])[ok] * 255).astype(np.uint8)
    iuv[2, py[ok], px[ok]] = np.round(np.asarray(ann["dp_V"])[ok] * 255).astype(np.uint8)
    return iuv
