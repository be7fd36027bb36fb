"""Mask helpers: COCO RLE encoding of binary masks and of the 14 DensePose coarse-part masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from fnl_core.densepose import NUM_COARSE_PARTS

DP_MASK_SIZE = 256
"""Side of the coarse-part label map, in the annotation box frame (docs/data_format.md, 'Coarse
part masks')."""


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a binary H×W mask, with ``counts`` as a JSON-ready str."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _to_pycoco(rle: dict[str, Any], height: int | None = None, width: int | None = None) -> Any:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        h, w = rle["size"]
        return mask_utils.frPyObjects(rle, h, w)
    if isinstance(counts, str):
        return {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return rle


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Binary uint8 mask of a compressed or uncompressed COCO RLE dict."""
    return mask_utils.decode(_to_pycoco(rle))


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """Binary uint8 H×W mask of a COCO ``segmentation`` (polygons or RLE)."""
    if isinstance(segm, list):
        rles = mask_utils.frPyObjects(segm, height, width)
        return mask_utils.decode(mask_utils.merge(rles))
    return decode_rle(segm)


def encode_dp_masks(labels: np.ndarray) -> list[Any]:
    """The 14 ``dp_masks`` entries of a 256×256 coarse label map; ``[]`` for absent parts."""
    if labels.shape != (DP_MASK_SIZE, DP_MASK_SIZE):
        raise ValueError(f"coarse label map must be 256×256, got {labels.shape}")
    fortran = np.asfortranarray(labels)
    present = set(np.unique(fortran).tolist())
    out: list[Any] = []
    for k in range(1, NUM_COARSE_PARTS + 1):
        if k in present:
            rle = mask_utils.encode((fortran == k).view(np.uint8))
            out.append(
                {"size": [DP_MASK_SIZE, DP_MASK_SIZE], "counts": rle["counts"].decode("ascii")}
            )
        else:
            out.append([])
    return out


def decode_dp_masks(dp_masks: list[Any]) -> np.ndarray:
    """256×256 uint8 coarse label map; later parts overwrite earlier ones (docs/data_format.md,
    'Coarse part masks')."""
    labels = np.zeros((DP_MASK_SIZE, DP_MASK_SIZE), dtype=np.uint8)
    for k, entry in enumerate(dp_masks, start=1):
        if entry:
            labels[decode_rle(entry) > 0] = k
    return labels
