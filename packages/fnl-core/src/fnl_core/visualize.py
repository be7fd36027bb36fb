"""Pictures of DensePose predictions and ground truth (docs/model.md, 'Visualisation').

* :func:`draw_prediction`: each detection above ``min_score`` gets its box, its parts in
  part colours (alpha 0.7) and iso-lines of U and of V (10 levels each), as in the paper's
  figures. matplotlib draws the contours when installed; otherwise a small marching-squares
  routine traces them per part with Pillow.
* :func:`draw_ground_truth`: boxes, coarse part masks and the annotated points coloured by part.
* :func:`iuv_image`: the full-image IUV raster (I, 255·U, 255·V); where detections overlap the
  highest score wins.

Inputs are numpy (H×W×3 uint8 RGB images, (3,h,w) uint8 IUV charts); outputs are numpy images.
Lines and labels scale with the picture (:func:`stroke_width`, :func:`label_size`): 1 px lines
and the 10 px label font up to about 1200 px, thicker lines and larger labels beyond, so a
6000×4000 photo looks like a 640×480 one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Anchor colours of a PARULA-like colormap (position, RGB).
_PARULA = (
    (0.00, (53, 42, 135)), (0.15, (15, 92, 221)), (0.30, (18, 125, 216)),
    (0.45, (7, 156, 207)), (0.60, (21, 177, 180)), (0.75, (89, 189, 140)),
    (0.85, (165, 190, 107)), (0.95, (225, 185, 82)), (1.00, (249, 251, 14)),
)  # fmt: skip
NUM_LEVELS = 10
#: Pictures up to this many pixels on their long side get 1 px lines and the base label size.
STROKE_PIXELS = 800
LABEL_SIZE = 10


def stroke_width(shape: Sequence[int]) -> int:
    """Line width in pixels for a picture of ``shape`` (H, W, ...): 1 up to about 1200 px on
    the long side, then growing with it (8 px for 6000 px)."""
    return max(1, round(max(shape[0], shape[1]) / STROKE_PIXELS))


def label_size(shape: Sequence[int]) -> int:
    """Label font size in pixels for a picture of ``shape``: :data:`LABEL_SIZE` times the
    stroke width."""
    return LABEL_SIZE * stroke_width(shape)


def _font(size: int) -> Any:
    """Pillow's default font at ``size`` px (its fixed bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def _draw_boxes(canvas: Any, boxes: Any, scores: Any, color: tuple[int, int, int]) -> None:
    """Box outlines and score labels, sized for the canvas."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    shape = (canvas.height, canvas.width)
    width, font = stroke_width(shape), _font(label_size(shape))
    for (x0, y0, x1, y1), score in zip(boxes, scores, strict=True):
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        draw.text((x0 + 2 * width, y0 + width), f"{score:.2f}", fill=color, font=font)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB through the PARULA-like map."""
    pos = np.array([p for p, _ in _PARULA])
    rgb = np.array([c for _, c in _PARULA], dtype=np.float64)
    v = np.clip(np.asarray(values, dtype=np.float64), 0, 1)
    out = np.stack([np.interp(v, pos, rgb[:, k]) for k in range(3)], axis=-1)
    return out.round().astype(np.uint8)


#: Colour of each fine part 1..24 (index 0 unused), I·255/24 through the colormap (dp_segm).
PART_COLORS = colormap(np.arange(25) / 24.0)


def detection_boxes_xywh(boxes: np.ndarray) -> np.ndarray:
    """Integer (x, y, w, h) of XYXY boxes as the charts use them (truncated, w, h ≥ 1)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    xywh = np.trunc(xywh).astype(np.int64)
    xywh[:, 2:] = np.maximum(xywh[:, 2:], 1)
    return xywh


def _paste_region(
    box: Sequence[int], shape: tuple[int, int]
) -> tuple[slice, slice, slice, slice] | None:
    """Image and chart slices of a chart pasted at ``box`` (clipped to the image)."""
    x, y, w, h = (int(v) for v in box)
    height, width = shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1), slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)


def iuv_image(
    image_hw: tuple[int, int], boxes: np.ndarray, iuvs: Sequence[np.ndarray], scores: np.ndarray
) -> np.ndarray:
    """H×W×3 uint8 (I, 255·U, 255·V) of all detections; the highest score wins overlaps."""
    out = np.zeros((*image_hw, 3), dtype=np.uint8)
    xywh = detection_boxes_xywh(boxes)
    for k in np.argsort(np.asarray(scores), kind="stable"):  # ascending: best painted last
        region = _paste_region(xywh[k], image_hw)
        if region is None:
            continue
        ys, xs, cy, cx = region
        chart = np.asarray(iuvs[k])[:, cy, cx].transpose(1, 2, 0)
        fg = chart[..., 0] > 0
        out[ys, xs][fg] = chart[fg]  # basic slicing: a view of ``out``
    return out


def _blend(image: np.ndarray, colors: np.ndarray, mask: np.ndarray, alpha: float) -> None:
    image[mask] = (alpha * colors[mask] + (1 - alpha) * image[mask]).round().astype(np.uint8)


def overlay_parts(image: np.ndarray, iuv_full: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The image with every pixel of a part painted in its part colour."""
    out = image.copy()
    labels = iuv_full[..., 0]
    _blend(out, PART_COLORS[np.minimum(labels, 24)], labels > 0, alpha)
    return out


def marching_squares(field: np.ndarray, valid: np.ndarray, level: float) -> np.ndarray:
    """Segments (N, 2, 2) as (row, col) pairs of the iso-line ``field == level``.

    Only cells whose four corners are ``valid`` are traced. A cell crossed on four edges (a
    saddle) is split into two segments joining consecutive crossings.
    """
    f = np.asarray(field, dtype=np.float64)
    if f.shape[0] < 2 or f.shape[1] < 2:
        return np.zeros((0, 2, 2))
    corners = [f[:-1, :-1], f[:-1, 1:], f[1:, 1:], f[1:, :-1]]  # tl, tr, br, bl
    pos = [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)]
    ok = valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, 1:] & valid[1:, :-1]
    rows, cols = np.meshgrid(np.arange(f.shape[0] - 1), np.arange(f.shape[1] - 1), indexing="ij")
    points, crosses = [], []
    for e in range(4):
        a, b = corners[e], corners[(e + 1) % 4]
        pa, pb = pos[e], pos[(e + 1) % 4]
        cross = ((a - level) * (b - level) < 0) & ok
        t = np.where(cross, (level - a) / np.where(b - a == 0, 1, b - a), 0.0)
        r = rows + pa[0] + t * (pb[0] - pa[0])
        c = cols + pa[1] + t * (pb[1] - pa[1])
        points.append(np.stack([r, c], -1))
        crosses.append(cross)
    cross = np.stack(crosses, -1)  # (H-1, W-1, 4)
    pts = np.stack(points, -2)  # (H-1, W-1, 4, 2)
    count = cross.sum(-1)
    segments = []
    for n_cross, pairs in ((2, 1), (4, 2)):
        sel = count == n_cross
        if not sel.any():
            continue
        cell_pts = pts[sel]  # (M, 4, 2)
        order = np.argsort(~cross[sel], axis=1, kind="stable")[:, : 2 * pairs]
        chosen = np.take_along_axis(cell_pts, order[..., None], axis=1)
        segments.append(chosen.reshape(-1, 2, 2))
    return np.concatenate(segments) if segments else np.zeros((0, 2, 2))


#: Contours are traced on charts subsampled to at most this many pixels a side: a chart is a
#: bilinear upsampling of the head's output (56 or 112 pixels a side), so the lines look the
#: same, and a person filling a 24 MP photo costs no more to draw than a small one.
CONTOUR_FIELD_SIZE = 256


def _contour_field(chart: np.ndarray) -> np.ndarray:
    """The chart subsampled to at most :data:`CONTOUR_FIELD_SIZE` pixels a side."""
    step = max(1, -(-max(chart.shape[1:]) // CONTOUR_FIELD_SIZE))
    return chart[:, ::step, ::step]


def _contours_pil(canvas: Any, box: Sequence[int], chart: np.ndarray) -> None:
    """Iso-U and iso-V lines per part (levels 0, 1/9, …, 1) drawn with Pillow."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    line = stroke_width((canvas.height, canvas.width))
    x, y, w, h = (int(v) for v in box)
    chart = _contour_field(chart)
    labels = chart[0]
    levels = np.linspace(0, 1, NUM_LEVELS)
    colors = colormap(levels)
    sx = w / max(chart.shape[2] - 1, 1)
    sy = h / max(chart.shape[1] - 1, 1)
    for part in np.unique(labels[labels > 0]):
        valid = labels == part
        for channel in (1, 2):
            field = chart[channel].astype(np.float64) / 255.0
            for level, color in zip(levels, colors, strict=True):
                for (r0, c0), (r1, c1) in marching_squares(field, valid, level):
                    draw.line(
                        [(x + c0 * sx, y + r0 * sy), (x + c1 * sx, y + r1 * sy)],
                        fill=tuple(int(v) for v in color),
                        width=line,
                    )


def _contours_matplotlib(
    image: np.ndarray, boxes_xywh: np.ndarray, charts: Sequence[np.ndarray]
) -> np.ndarray:
    """U/V iso-lines traced by matplotlib on a transparent canvas, blended onto ``image``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image.shape[:2]
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.patch.set_alpha(0.0)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.patch.set_alpha(0.0)
    drawn = False
    for box, chart in zip(boxes_xywh, charts, strict=True):
        x, y, w, h = (int(v) for v in box)
        chart = _contour_field(chart)
        fg = chart[0] > 0
        if fg.sum() < 4 or min(chart.shape[1:]) < 2:
            continue
        extent = (x, x + w, y, y + h)
        for channel in (1, 2):
            field = np.ma.masked_where(~fg, chart[channel].astype(np.float64) / 255.0)
            ax.contour(
                field, NUM_LEVELS, extent=extent, origin="upper",
                linewidths=0.8 * stroke_width(image.shape),
            )  # fmt: skip
            drawn = True
    if not drawn:
        plt.close(fig)
        return image
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return _alpha_blend(image, rgba)


def _alpha_blend(image: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """``image`` with the (non-premultiplied) RGBA layer painted over it."""
    out = image.copy()
    alpha = rgba[..., 3]
    covered = alpha > 0
    a = alpha[covered].astype(np.float32)[:, None] / 255.0
    layer = rgba[..., :3][covered].astype(np.float32)
    out[covered] = (layer * a + out[covered] * (1.0 - a)).round().astype(np.uint8)
    return out


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_prediction(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    iuvs: Sequence[np.ndarray],
    min_score: float = 0.8,
    use_matplotlib: bool | None = None,
    iuv: np.ndarray | None = None,
) -> np.ndarray:
    """Boxes, part colours and U/V contours of detections with score > ``min_score``.

    ``iuv``: the full-image raster of those detections (:func:`iuv_image`) when the caller
    already has it.
    """
    from PIL import Image

    keep = [k for k in range(len(scores)) if float(scores[k]) > min_score]
    boxes = np.asarray(boxes).reshape(-1, 4)[keep]
    kept_scores = np.asarray(scores)[keep]
    charts = [iuvs[k] for k in keep]
    if iuv is None:
        iuv = iuv_image(image.shape[:2], boxes, charts, kept_scores)
    out = overlay_parts(image, iuv)
    xywh = detection_boxes_xywh(boxes)
    if use_matplotlib is None:
        use_matplotlib = _has_matplotlib()
    if use_matplotlib:
        out = _contours_matplotlib(out, xywh, charts)
        canvas = Image.fromarray(out)
    else:
        canvas = Image.fromarray(out)
        for box, chart in zip(xywh, charts, strict=True):
            _contours_pil(canvas, box, chart)
    _draw_boxes(canvas, boxes.tolist(), kept_scores.tolist(), (255, 64, 64))
    return np.asarray(canvas)


def draw_ground_truth(image: np.ndarray, record: Any) -> np.ndarray:
    """Boxes, coarse part masks and annotated points (coloured by part) of an ImageRecord."""
    from PIL import Image, ImageDraw

    out = image.copy()
    height, width = image.shape[:2]
    for ann in record.annotations:
        dp = ann.densepose
        if dp is None or dp.masks is None:
            continue
        x, y, w, h = ann.bbox_xywh
        region = _paste_region((int(x), int(y), max(int(w), 1), max(int(h), 1)), (height, width))
        if region is None:
            continue
        ys, xs, _, _ = region
        rows = ((np.arange(ys.start, ys.stop) - y) * 256.0 / max(h, 1e-6)).astype(int)
        cols = ((np.arange(xs.start, xs.stop) - x) * 256.0 / max(w, 1e-6)).astype(int)
        coarse = np.asarray(dp.masks)[np.clip(rows, 0, 255)][:, np.clip(cols, 0, 255)]
        view = out[ys, xs]
        _blend(view, colormap(coarse / 14.0), coarse > 0, 0.5)
        out[ys, xs] = view
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    for ann in record.annotations:
        x, y, w, h = ann.bbox_xywh
        draw.rectangle([x, y, x + w, y + h], outline=(64, 255, 64), width=1)
        dp = ann.densepose
        if dp is None:
            continue
        px = x + np.asarray(dp.x) * w / 256.0
        py = y + np.asarray(dp.y) * h / 256.0
        for xi, yi, part in zip(px, py, np.asarray(dp.i), strict=True):
            color = tuple(int(c) for c in PART_COLORS[int(part)])
            draw.ellipse([xi - 1.5, yi - 1.5, xi + 1.5, yi + 1.5], fill=color)
    return np.asarray(canvas)


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str]) -> np.ndarray:
    """Two images next to each other with a title strip above each."""
    from PIL import Image, ImageDraw

    strip = 14
    h = max(left.shape[0], right.shape[0]) + strip
    canvas = Image.new("RGB", (left.shape[1] + right.shape[1] + 4, h), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, strip))
    canvas.paste(Image.fromarray(right), (left.shape[1] + 4, strip))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), titles[0], fill=(0, 0, 0))
    draw.text((left.shape[1] + 6, 1), titles[1], fill=(0, 0, 0))
    return np.asarray(canvas)


def _paste_maps(
    image_hw: tuple[int, int],
    boxes: np.ndarray,
    scores: np.ndarray,
    colors: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-detection h×w×3 colour maps pasted at their integer boxes (highest score wins)."""
    out = np.zeros((*image_hw, 3), dtype=np.uint8)
    painted = np.zeros(image_hw, dtype=bool)
    xywh = detection_boxes_xywh(boxes)
    for k in np.argsort(np.asarray(scores), kind="stable"):  # ascending: best painted last
        region = _paste_region(xywh[k], image_hw)
        if region is None:
            continue
        ys, xs, cy, cx = region
        mask = np.asarray(masks[k], dtype=bool)[cy, cx]
        out[ys, xs][mask] = np.asarray(colors[k])[cy, cx][mask]
        painted[ys, xs] |= mask
    return out, painted


def _outline_boxes(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    from PIL import Image

    canvas = Image.fromarray(image)
    _draw_boxes(canvas, boxes.tolist(), np.asarray(scores).tolist(), (255, 64, 64))
    return np.asarray(canvas)


def draw_confidence(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
    min_score: float = 0.8,
    value_range: tuple[float, float] | None = None,
    alpha: float = 0.7,
) -> np.ndarray:
    """A per-pixel confidence of each detection (e.g. ``sigma_2``) through the colormap.

    ``maps`` are per detection h×w float arrays over its integer box (as
    ``fnl_detector.postprocess.chart_confidences`` gives them); ``masks`` (h×w bool, e.g.
    ``labels > 0``) choose the pixels shown, default: all of the box. Values are scaled from
    ``value_range`` (default: the 2nd and 98th percentiles of the shown pixels) to [0, 1];
    yellow = high (for ``sigma_2``: uncertain), blue = low.
    """
    keep = [k for k in range(len(scores)) if float(scores[k]) > min_score]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[keep]
    kept_scores = np.asarray(scores)[keep]
    values = [np.asarray(maps[k], dtype=np.float64) for k in keep]
    shown = [
        np.ones(v.shape, dtype=bool) if masks is None else np.asarray(masks[k], dtype=bool)
        for k, v in zip(keep, values, strict=True)
    ]
    if value_range is None:
        pool = np.concatenate([v[m] for v, m in zip(values, shown, strict=True)] or [np.zeros(1)])
        lo, hi = np.percentile(pool, [2, 98]) if pool.size else (0.0, 1.0)
    else:
        lo, hi = value_range
    scale = (hi - lo) or 1.0
    colors = [colormap((v - lo) / scale) for v in values]
    full, painted = _paste_maps(image.shape[:2], boxes, kept_scores, colors, shown)
    out = image.copy()
    _blend(out, full, painted, alpha)
    return _outline_boxes(out, boxes, kept_scores)


def vertex_colors_from_positions(positions: np.ndarray) -> np.ndarray:
    """V×3 uint8 colours of mesh vertices: x, y, z each scaled to 0..255 over the mesh, so
    that a vertex's colour tells where it lies on the body (DensePose's CSE visualisation)."""
    xyz = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    return np.round(255 * (xyz - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.uint8)


def draw_vertices(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    vertex_maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    vertex_colors: np.ndarray | None = None,
    num_vertices: int | None = None,
    min_score: float = 0.8,
    alpha: float = 0.7,
) -> np.ndarray:
    """CSE predictions: every masked pixel coloured by its closest mesh vertex.

    ``vertex_maps`` (h×w int vertex indices) and ``masks`` (h×w bool) are per detection over
    its integer box. With ``vertex_colors`` (V×3 uint8, e.g. :func:`vertex_colors_from_positions`
    of the mesh's vertex positions) each vertex has the colour of its position on the mesh;
    without them the vertex index goes through the colormap (index / (num_vertices - 1);
    ``num_vertices`` defaults to the largest index shown + 1).
    """
    keep = [k for k in range(len(scores)) if float(scores[k]) > min_score]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[keep]
    kept_scores = np.asarray(scores)[keep]
    indices = [np.asarray(vertex_maps[k], dtype=np.int64) for k in keep]
    shown = [np.asarray(masks[k], dtype=bool) for k in keep]
    if vertex_colors is not None:
        palette = np.asarray(vertex_colors, dtype=np.uint8)
        top = max(
            (int(i[m].max()) for i, m in zip(indices, shown, strict=True) if m.any()), default=0
        )
        if top >= len(palette):
            raise ValueError(
                f"vertex_colors has {len(palette)} colours but a vertex map uses index {top}"
            )
        colors = [palette[i] for i in indices]
    else:
        if num_vertices is None:
            num_vertices = 1 + max(
                (int(i[m].max()) for i, m in zip(indices, shown, strict=True) if m.any()), default=0
            )
        colors = [colormap(i / max(num_vertices - 1, 1)) for i in indices]
    full, painted = _paste_maps(image.shape[:2], boxes, kept_scores, colors, shown)
    out = image.copy()
    _blend(out, full, painted, alpha)
    return _outline_boxes(out, boxes, kept_scores)
