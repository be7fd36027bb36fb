"""Instance masks on the image for mask IoU and GPSm (docs/evaluation.md, GPSm).

All box coordinates are truncated toward zero (``int``), never rounded. Masks are returned as
pycocotools RLEs so that IoUs (with crowd semantics) come from ``pycocotools.mask.iou``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.ndimage import zoom

from fnl_core.densepose import NUM_COARSE_PARTS
from fnl_core.errors import AnnotationError

__all__ = [
    "decode_dp_masks",
    "encode_mask",
    "gt_mask_rle",
    "ignore_region_mask",
    "paste_mask",
    "segmentation_rle",
]

DP_MASK_SIZE = 256


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a 2-D binary mask."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode_dp_masks(dp_masks: Sequence[Any]) -> np.ndarray:
    """The 256×256 coarse label map (float32, 0..14) of an annotation's ``dp_masks``.

    Entry k (0-based) paints label k+1 where its RLE is set; later parts overwrite earlier ones
    (docs/data_format.md, 'Coarse part masks'). Empty entries are skipped.
    """
    labels = np.zeros((DP_MASK_SIZE, DP_MASK_SIZE), dtype=np.float32)
    for k, rle in enumerate(list(dp_masks)[:NUM_COARSE_PARTS]):
        if rle:
            labels[mask_utils.decode(rle) > 0] = k + 1
    return labels


def paste_mask(mask: np.ndarray, bbox_xywh: Sequence[float], height: int, width: int) -> np.ndarray:
    """Place a box-frame mask into an image-sized uint8 mask at the truncated box corner.

    The pasted region is clipped to the image, to the box's right/bottom edge
    (``int(x + w)``, ``int(y + h)``) and to the mask's own size.
    """
    x, y, w, h = (float(b) for b in bbox_xywh)
    out = np.zeros((height, width), dtype=np.uint8)
    ix, iy = int(x), int(y)
    x0, y0 = max(ix, 0), max(iy, 0)
    x1 = min(int(x + w), width, ix + mask.shape[1])
    y1 = min(int(y + h), height, iy + mask.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = mask[y0 - iy : y1 - iy, x0 - ix : x1 - ix] > 0
    return out


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict[str, Any] | None:
    """RLE of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE); None if empty."""
    if isinstance(segmentation, list):
        if not segmentation:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, Mapping):
        if isinstance(segmentation.get("counts"), list):
            return mask_utils.frPyObjects(dict(segmentation), height, width)
        return dict(segmentation)
    return None


def gt_mask_rle(ann: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """Image mask of a GT person: ``dp_masks`` zoomed into its box, else ``segmentation``.

    ``dp_masks``: foreground of the coarse label map, bilinear ``zoom`` (no prefilter) to the
    box size (at least 1 px), threshold 0.5, pasted at the truncated box corner. Without either
    field the mask is empty. Undecodable masks raise :class:`~fnl_core.errors.AnnotationError`.
    """
    field = "dp_masks" if ann.get("dp_masks") else "segmentation"
    try:
        return _gt_mask_rle(ann, height, width)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        if isinstance(exc, AnnotationError):
            raise
        raise AnnotationError(
            f"ground-truth annotation {ann.get('id')!r:.20} (image {ann.get('image_id')!r:.20}): "
            f"{field} cannot be decoded ({exc})"
        ) from None


def _gt_mask_rle(ann: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    if ann.get("dp_masks"):
        fg = np.minimum(decode_dp_masks(ann["dp_masks"]), 1.0)
        _, _, w, h = (float(b) for b in ann["bbox"])
        scaled = zoom(
            fg, (max(h, 1.0) / DP_MASK_SIZE, max(w, 1.0) / DP_MASK_SIZE), order=1, prefilter=False
        )
        return encode_mask(paste_mask(scaled > 0.5, ann["bbox"], height, width))
    segmentation = ann.get("segmentation")
    rle = segmentation_rle(segmentation, height, width)
    if rle is not None:
        return rle
    if segmentation:
        raise AnnotationError(
            f"ground-truth annotation {ann.get('id')!r:.20}: segmentation must be polygons or "
            f"an RLE, got {type(segmentation).__name__}"
        )
    return encode_mask(np.zeros((height, width), dtype=np.uint8))


def ignore_region_mask(image: Mapping[str, Any]) -> np.ndarray | None:
    """Union of an image's ``ignore_regions_x/_y`` polygons as an H×W uint8 mask, or None."""
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if not xs or not ys:
        return None
    if len(xs) != len(ys):
        raise AnnotationError(
            f"image {image.get('id')}: ignore_regions_x has {len(xs)} regions but "
            f"ignore_regions_y has {len(ys)}"
        )
    try:
        polys = [[float(c) for xy in zip(rx, ry) for c in xy] for rx, ry in zip(xs, ys)]
        polys = [p for p in polys if len(p) >= 6]
        if not polys:
            return None
        h, w = int(image["height"]), int(image["width"])
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
    except (ValueError, TypeError, OverflowError) as exc:
        raise AnnotationError(
            f"image {image.get('id')!r:.20}: ignore_regions_x/_y must be lists of coordinate "
            f"lists ({exc})"
        ) from None
