"""Textures in the DensePose atlas: lift a person's appearance from an image into the atlas,
merge atlases over frames, and paint an atlas onto people (numpy, no torch; docs/texture.md).

The atlas convention is the one of DensePose's texture-transfer notebook, the SURREAL-derived
atlases and detectron2's ``DensePoseResultsVisualizerWithTexture``: an image ``6N`` tall and
``4N`` wide (``N = 200`` in the published atlases) made of ``N × N`` tiles; fine part ``p``
(1..24) is the tile at row ``(p − 1) % 6`` and column ``(p − 1) // 6``; inside a tile the
texel column is ``U · (N − 1)`` and the texel row ``(1 − V) · (N − 1)``. An alpha channel, where
present, marks the texels that hold texture.

A detection is what ``fnl predict`` / ``fnl run`` write to ``results.json`` (one entry:
``bbox`` and ``densepose``, optionally ``confidences``; :mod:`fnl_core.results`) or a
:class:`Chart` (its box corner, its ``(3, h, w)`` uint8 IUV raster and an optional per-pixel
confidence). The chart sits in the image at the truncated box corner, as everywhere in FnL
(:func:`fnl_core.visualize.iuv_image`).

* :func:`extract_texture` — every foreground pixel of the chart gives its colour to the texel its
  (I, U, V) names (nearest texel); texels hit several times get the weighted mean. Returns the
  atlas (uint8 RGB) and the coverage, a per-texel weight (0 = no texture).
* :func:`accumulate` — weighted mean of several (atlas, coverage) pairs (frames of a track).
* :func:`apply_texture` — each foreground pixel takes the atlas colour at its (I, U, V) by
  bilinear lookup inside the part's tile (uncovered texels do not contribute), blended with the
  photo by the atlas alpha times the chart's confidence.

Pixel weights: a model's UV uncertainty where it predicts one (``confidences.sigma_2``: weight
``1 / (1 + σ²)``), otherwise the chart area of the pixel's part in that detection (the number
of the chart's pixels labelled with that part: a part seen large and face-on outweighs the
same part seen small or edge-on in another frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.densepose import NUM_FINE_CHARTS

__all__ = [
    "DEFAULT_TILE",
    "Chart",
    "IoUTracker",
    "TextureAccumulator",
    "accumulate",
    "apply_texture",
    "atlas_shape",
    "box_iou",
    "chart_of",
    "extract_texture",
    "pixel_weights",
    "read_atlas",
    "tile_of",
    "to_rgba",
]

#: Tile size of the published atlases (an atlas is 6·N × 4·N pixels).
DEFAULT_TILE = 200


@dataclass
class Chart:
    """One detection's chart: top-left corner in the image (integer pixels), the ``(3, h, w)``
    uint8 IUV raster ([I, 255·U, 255·V]) and an optional ``(h, w)`` confidence in (0, 1]."""

    x: int
    y: int
    iuv: np.ndarray
    confidence: np.ndarray | None = None


def atlas_shape(tile: int = DEFAULT_TILE) -> tuple[int, int]:
    """(height, width) of an atlas with ``tile``-pixel tiles: (6·tile, 4·tile)."""
    if tile < 2:
        raise ValueError(f"tile size must be at least 2, got {tile}")
    return 6 * tile, 4 * tile


def tile_of(atlas_hw: Sequence[int]) -> int:
    """The tile size N of an atlas of shape (6N, 4N[, C]); ValueError for any other shape."""
    height, width = int(atlas_hw[0]), int(atlas_hw[1])
    if height % 6 or width % 4 or height // 6 != width // 4 or height // 6 < 2:
        raise ValueError(
            f"an atlas must be 6N pixels tall and 4N wide (N x N tiles, N >= 2), got "
            f"{height}x{width} (height x width)"
        )
    return height // 6


def chart_of(detection: Chart | Mapping[str, Any]) -> Chart:
    """A :class:`Chart` from a results entry (``bbox`` XYWH, ``densepose``, optional
    ``confidences.sigma_2``) or a Chart (returned as is)."""
    if isinstance(detection, Chart):
        return detection
    from fnl_core.results import decode_array_bytes, decode_iuv_bytes

    if "densepose" not in detection:
        raise ValueError("a detection without a 'densepose' chart (CSE results have no U/V)")
    shape, raw = decode_iuv_bytes(detection["densepose"])
    iuv = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    x, y = (int(np.trunc(float(v))) for v in detection["bbox"][:2])
    confidence = None
    sigma = (detection.get("confidences") or {}).get("sigma_2")
    if sigma is not None:
        dtype, sshape, sraw = decode_array_bytes(sigma)
        values = np.frombuffer(sraw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(sshape)
        if values.shape != iuv.shape[1:]:
            raise ValueError(f"sigma_2 {values.shape} does not match the chart {iuv.shape[1:]}")
        confidence = (1.0 / (1.0 + np.maximum(values.astype(np.float32), 0))).astype(np.float32)
    return Chart(x, y, iuv, confidence)


def _visible(chart: Chart, image_hw: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Image rows, columns and chart rows, columns of the chart's foreground pixels inside the
    image."""
    labels = chart.iuv[0]
    rows, cols = np.nonzero((labels > 0) & (labels <= NUM_FINE_CHARTS))
    img_r, img_c = rows + chart.y, cols + chart.x
    inside = (img_r >= 0) & (img_r < image_hw[0]) & (img_c >= 0) & (img_c < image_hw[1])
    return img_r[inside], img_c[inside], rows[inside], cols[inside]


def pixel_weights(chart: Chart, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Weight of the chart pixels (rows, cols): the chart's confidence where it has one, else
    the chart area (pixel count) of each pixel's part."""
    if chart.confidence is not None:
        return np.asarray(chart.confidence, dtype=np.float32)[rows, cols]
    labels = chart.iuv[0]
    area = np.bincount(labels.ravel(), minlength=NUM_FINE_CHARTS + 1).astype(np.float32)
    return area[labels[rows, cols]]


def _texel_positions(iuv: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int):
    """Part (1..24) and continuous (row, col) of the chart pixels inside their tile."""
    part = iuv[0, rows, cols].astype(np.int64)
    scale = np.float32((tile - 1) / 255.0)
    tx = iuv[1, rows, cols].astype(np.float32) * scale
    ty = (np.float32(255) - iuv[2, rows, cols].astype(np.float32)) * scale
    return part, ty, tx


def extract_texture(
    image: np.ndarray, detection: Chart | Mapping[str, Any], tile: int = DEFAULT_TILE
) -> tuple[np.ndarray, np.ndarray]:
    """The atlas (``6N × 4N × 3`` uint8 RGB) of one detection in ``image`` (H×W×3 uint8) and
    its coverage (``6N × 4N`` float32 weight, 0 where no pixel landed)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
    chart = chart_of(detection)
    height, width = atlas_shape(tile)
    img_r, img_c, rows, cols = _visible(chart, image.shape[:2])
    atlas = np.zeros((height, width, 3), dtype=np.uint8)
    coverage = np.zeros((height, width), dtype=np.float32)
    if len(rows) == 0:
        return atlas, coverage
    part, ty, tx = _texel_positions(chart.iuv, rows, cols, tile)
    texel_r = ((part - 1) % 6) * tile + np.rint(ty).astype(np.int64)
    texel_c = ((part - 1) // 6) * tile + np.rint(tx).astype(np.int64)
    flat = texel_r * width + texel_c
    weight = pixel_weights(chart, rows, cols).astype(np.float64)
    weight = np.maximum(weight, 1e-12)
    texels, slot = np.unique(flat, return_inverse=True)
    total = np.bincount(slot, weights=weight)
    colours = image[img_r, img_c].astype(np.float64) * weight[:, None]
    sums = np.stack([np.bincount(slot, weights=colours[:, k]) for k in range(3)], axis=1)
    atlas.reshape(-1, 3)[texels] = np.clip(np.rint(sums / total[:, None]), 0, 255).astype(np.uint8)
    coverage.reshape(-1)[texels] = total.astype(np.float32)
    return atlas, coverage


class TextureAccumulator:
    """Running weighted mean of one person's atlases (see :func:`accumulate`), in constant
    memory: :meth:`add` each frame's (atlas, coverage), :meth:`result` at any time."""

    def __init__(self) -> None:
        self.frames = 0
        self._total: np.ndarray | None = None
        self._sums: np.ndarray | None = None

    def add(self, atlas: np.ndarray, coverage: np.ndarray) -> None:
        atlas = np.asarray(atlas)
        weight = np.asarray(coverage, dtype=np.float64)
        if atlas.ndim != 3 or atlas.shape[:2] != weight.shape:
            raise ValueError(f"atlas {atlas.shape} and coverage {weight.shape} do not match")
        if self._total is None:
            self._total = np.zeros(weight.shape, dtype=np.float64)
            self._sums = np.zeros((*weight.shape, 3), dtype=np.float64)
        elif self._total.shape != weight.shape:
            raise ValueError(f"atlases of different sizes: {self._total.shape} and {weight.shape}")
        covered = weight > 0  # only covered texels cost anything
        self._total[covered] += weight[covered]
        self._sums[covered] += atlas[covered][:, :3].astype(np.float64) * weight[covered][:, None]  # type: ignore[index]
        self.frames += 1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(atlas uint8 RGB, coverage float32 = summed weights)."""
        if self._total is None or self._sums is None:
            raise ValueError("accumulate needs at least one (atlas, coverage) pair")
        mean = self._sums / np.where(self._total > 0, self._total, 1.0)[..., None]
        return np.clip(np.rint(mean), 0, 255).astype(np.uint8), self._total.astype(np.float32)


def accumulate(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of (atlas, coverage) pairs of one person: each texel's colour is the mean
    of the pairs' colours weighted by their coverage; the coverages add up."""
    acc = TextureAccumulator()
    for atlas, coverage in pairs:
        acc.add(atlas, coverage)
    return acc.result()


def to_rgba(atlas: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """RGBA uint8 atlas: alpha 255 on covered texels (coverage > 0), 0 elsewhere."""
    alpha = np.where(np.asarray(coverage) > 0, 255, 0).astype(np.uint8)
    return np.concatenate([np.asarray(atlas)[..., :3], alpha[..., None]], axis=-1)


def read_atlas(source: str | Path | np.ndarray) -> np.ndarray:
    """An atlas as ``6N × 4N × 4`` uint8 RGBA (opaque where the file has no alpha channel),
    from a PNG/JPEG path or an array (H×W×3 or ×4; grey images are expanded)."""
    if isinstance(source, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        from fnl_core.errors import ImageReadError

        try:
            with Image.open(source) as img:
                has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
                array = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageReadError(f"cannot read atlas {source}: {exc}") from exc
    else:
        array = np.asarray(source)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise ValueError(f"an atlas must be H x W x 3 or 4 uint8, got {array.shape} {array.dtype}")
    tile_of(array.shape)
    if array.shape[2] == 3:
        array = np.concatenate([array, np.full((*array.shape[:2], 1), 255, np.uint8)], axis=-1)
    return np.ascontiguousarray(array)


def _lookup(atlas: np.ndarray, part: np.ndarray, ty: np.ndarray, tx: np.ndarray, tile: int):
    """Bilinear RGB and alpha of the atlas at continuous in-tile positions, clamped inside
    each part's tile; texels without alpha do not contribute to the colour."""
    y0 = np.clip(np.floor(ty).astype(np.int64), 0, tile - 1)
    x0 = np.clip(np.floor(tx).astype(np.int64), 0, tile - 1)
    y1, x1 = np.minimum(y0 + 1, tile - 1), np.minimum(x0 + 1, tile - 1)
    fy = np.clip(ty - y0, 0, 1).astype(np.float32)[:, None]
    fx = np.clip(tx - x0, 0, 1).astype(np.float32)[:, None]
    row0, col0 = ((part - 1) % 6) * tile, ((part - 1) // 6) * tile
    rgb = np.zeros((len(part), 3), dtype=np.float32)
    alpha = np.zeros((len(part), 1), dtype=np.float32)
    for yy, xx, w in (
        (y0, x0, (1 - fy) * (1 - fx)),
        (y0, x1, (1 - fy) * fx),
        (y1, x0, fy * (1 - fx)),
        (y1, x1, fy * fx),
    ):
        texel = atlas[row0 + yy, col0 + xx].astype(np.float32)
        a = w * texel[:, 3:4] / 255.0
        rgb += a * texel[:, :3]
        alpha += a
    return rgb / np.maximum(alpha, 1e-6), alpha[:, 0]


def apply_texture(
    image: np.ndarray,
    detections: Chart | Mapping[str, Any] | Sequence[Chart | Mapping[str, Any]],
    atlas: np.ndarray,
) -> np.ndarray:
    """``image`` (H×W×3 uint8) with the atlas painted on the detection(s): each foreground pixel
    takes the bilinear atlas colour at its (I, U, V), blended with the photo by alpha = atlas
    alpha × the chart's confidence (1 without one). Several detections are painted in the
    order given (pass them in ascending score so that the best is on top)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {out.shape}")
    rgba = read_atlas(atlas)
    tile = tile_of(rgba.shape)
    if isinstance(detections, (Chart, Mapping)):
        detections = [detections]
    for detection in detections:
        chart = chart_of(detection)
        img_r, img_c, rows, cols = _visible(chart, out.shape[:2])
        if len(rows) == 0:
            continue
        part, ty, tx = _texel_positions(chart.iuv, rows, cols, tile)
        rgb, alpha = _lookup(rgba, part, ty, tx, tile)
        if chart.confidence is not None:
            alpha = alpha * np.clip(chart.confidence[rows, cols], 0, 1)
        photo = out[img_r, img_c].astype(np.float32)
        blended = photo + alpha[:, None] * (rgb - photo)
        out[img_r, img_c] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a) × len(b)) of XYXY boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class IoUTracker:
    """Tracks from box overlap between consecutive frames: each detection joins the track
    whose box in the previous frame overlaps it most (IoU ≥ ``min_iou``; pairs taken greedily,
    best IoU first, one detection per track), else starts a new track. A track missing from
    a frame ends (the next detection there starts a new one)."""

    def __init__(self, min_iou: float = 0.3) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        self.min_iou = min_iou
        self.count = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._boxes = np.zeros((0, 4))

    def update(self, boxes_xyxy: np.ndarray) -> list[int]:
        """Track ids (0, 1, ...) of this frame's detections, in the order given."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        iou = box_iou(self._boxes, boxes)
        if iou.size:
            order = np.argsort(-iou, axis=None, kind="stable")
            prev_used = np.zeros(len(self._boxes), dtype=bool)
            for flat in order:
                i, j = divmod(int(flat), len(boxes))
                if iou[i, j] < self.min_iou:
                    break
                if prev_used[i] or ids[j] >= 0:
                    continue
                prev_used[i], ids[j] = True, self._ids[i]
        for j in np.flatnonzero(ids < 0):
            ids[j] = self.count
            self.count += 1
        self._ids, self._boxes = ids, boxes
        return ids.tolist()
