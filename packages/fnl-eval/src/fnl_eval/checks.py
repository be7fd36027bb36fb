"""Checks of the evaluator's two inputs before any scoring: the ground-truth COCO object and the
results list. Every problem raises :class:`~fnl_core.errors.AnnotationError` or
:class:`~fnl_core.errors.ResultsError` with one line naming the entry, the field and what was
expected, instead of a ``KeyError`` deep inside pycocotools.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fnl_core.densepose import NUM_FINE_CHARTS
from fnl_core.errors import AnnotationError, ResultsError

__all__ = ["check_ground_truth", "check_results"]

_DP_FIELDS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value == int(value)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _box_problem(bbox: Any) -> str | None:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"expected [x, y, w, h], got {bbox!r:.60}"
    if not all(_is_number(b) for b in bbox):
        return f"expected four finite numbers, got {bbox!r:.60}"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"width and height must be >= 0, got {bbox!r:.60}"
    return None


def check_ground_truth(data: Any, source: str = "ground truth") -> None:
    """Raise :class:`AnnotationError` unless ``data`` is a usable COCO / DensePose-COCO object."""
    if not isinstance(data, Mapping):
        raise AnnotationError(f"{source}: expected a COCO JSON object, got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{source}: expected an {key!r} list")
    categories = data.get("categories", [])
    if not isinstance(categories, list) or not all(
        isinstance(c, Mapping) and _is_int(c.get("id")) for c in categories
    ):
        raise AnnotationError(f"{source}: 'categories' must be a list of objects with an id")
    sizes: dict[Any, tuple[int, int]] = {}
    for k, img in enumerate(data["images"]):
        where = f"{source}: images[{k}]"
        if not isinstance(img, Mapping):
            raise AnnotationError(f"{where}: expected an object, got {type(img).__name__}")
        for key in ("id", "height", "width"):
            if key not in img:
                raise AnnotationError(f"{where} lacks {key!r} (an integer)")
            if not _is_int(img[key]):
                raise AnnotationError(f"{where}.{key}: expected an integer, got {img[key]!r:.40}")
        if img["height"] <= 0 or img["width"] <= 0:
            raise AnnotationError(
                f"{where}: height and width must be > 0, got {img['height']}x{img['width']}"
            )
        if img["id"] in sizes:
            raise AnnotationError(f"{where}: duplicate image id {img['id']}")
        sizes[img["id"]] = (int(img["height"]), int(img["width"]))
    ids: set[Any] = set()
    for k, ann in enumerate(data["annotations"]):
        _check_annotation(ann, f"{source}: annotations[{k}]", sizes)
        if ann["id"] in ids:
            raise AnnotationError(f"{source}: annotations[{k}]: duplicate id {ann['id']}")
        ids.add(ann["id"])


def _check_annotation(ann: Any, where: str, sizes: Mapping[Any, tuple[int, int]]) -> None:
    if not isinstance(ann, Mapping):
        raise AnnotationError(f"{where}: expected an object, got {type(ann).__name__}")
    if "id" in ann:
        where = f"{where} (id {ann['id']!r:.20})"
    for key, what in (("id", "an integer"), ("image_id", "an image id"), ("bbox", "[x, y, w, h]")):
        if key not in ann:
            raise AnnotationError(f"{where} lacks {key!r} ({what})")
    if not _is_int(ann["id"]):
        raise AnnotationError(f"{where}.id: expected an integer")
    if not _is_int(ann["image_id"]) or ann["image_id"] not in sizes:
        raise AnnotationError(
            f"{where}.image_id: {ann['image_id']!r:.40} is not the id of an entry of 'images'"
        )
    problem = _box_problem(ann["bbox"])
    if problem:
        raise AnnotationError(f"{where}.bbox: {problem}")
    for key in ("category_id", "iscrowd"):
        if key in ann and not _is_int(ann[key]):
            raise AnnotationError(f"{where}.{key}: expected an integer, got {ann[key]!r:.40}")
    if "area" in ann and not _is_number(ann["area"]):
        raise AnnotationError(f"{where}.area: expected a number, got {ann['area']!r:.40}")
    present = [f for f in _DP_FIELDS if f in ann]
    if not present:
        return
    missing = [f for f in _DP_FIELDS if f not in ann]
    if missing:
        raise AnnotationError(f"{where} has {present[0]} but lacks {missing[0]!r}")
    lengths = set()
    for key in _DP_FIELDS:
        values = ann[key]
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise AnnotationError(f"{where}.{key}: expected a list of finite numbers")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise AnnotationError(f"{where}: dp_x, dp_y, dp_I, dp_U, dp_V must have equal lengths")
    for n, part in enumerate(ann["dp_I"]):
        if not _is_int(part) or not 1 <= part <= NUM_FINE_CHARTS:
            raise AnnotationError(
                f"{where}.dp_I[{n}]: chart ids are integers 1..{NUM_FINE_CHARTS}, got {part!r}"
            )
    if "segmentation" in ann and not isinstance(ann["segmentation"], (list, Mapping)):
        raise AnnotationError(f"{where}.segmentation: expected polygons or an RLE")
    if "dp_masks" in ann and not isinstance(ann["dp_masks"], list):
        raise AnnotationError(f"{where}.dp_masks: expected a list of 14 RLEs")


def check_results(data: Any, source: str = "results") -> None:
    """Raise :class:`ResultsError` unless ``data`` is a list of usable detections."""
    if not isinstance(data, list):
        raise ResultsError(
            f"{source}: expected a JSON list of detections, got {type(data).__name__}"
        )
    for k, det in enumerate(data):
        where = f"{source}[{k}]"
        if not isinstance(det, Mapping):
            raise ResultsError(f"{where}: expected an object, got {type(det).__name__}")
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in det:
                raise ResultsError(f"{where} lacks {key!r}")
        for key in ("image_id", "category_id"):
            if not _is_int(det[key]):
                raise ResultsError(f"{where}.{key}: expected an integer, got {det[key]!r:.40}")
        problem = _box_problem(det["bbox"])
        if problem:
            raise ResultsError(f"{where}.bbox: {problem}")
        if not _is_number(det["score"]):
            raise ResultsError(f"{where}.score: expected a number, got {det['score']!r:.40}")
        entry = det.get("densepose")
        if entry is not None and not isinstance(entry, Mapping):
            raise ResultsError(
                f"{where}.densepose: expected an object with uv_shape and uv_data, "
                f"got {type(entry).__name__}"
            )
        seg = det.get("segmentation")
        if seg is not None and not (
            isinstance(seg, Mapping)
            and isinstance(seg.get("counts"), (str, bytes))
            and isinstance(seg.get("size"), list)
            and len(seg["size"]) == 2
            and all(_is_int(v) and v >= 0 for v in seg["size"])
        ):
            raise ResultsError(
                f"{where}.segmentation: expected a compressed RLE {{size: [h, w], counts: str}}"
            )
