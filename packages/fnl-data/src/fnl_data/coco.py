"""DensePose-COCO JSON: validated reading into :class:`~fnl_core.structures.ImageRecord`, writing.

In memory (see :class:`~fnl_core.structures.DensePoseAnnotation`): ``x``, ``y``, ``u``, ``v``
are float32 arrays, ``i`` an int64 array, ``masks`` the 256×256 uint8 coarse label map decoded
from ``dp_masks`` (or None). The writer stores ``dp_I`` as floats, like the official files, and
the masks as 14 compressed RLEs; reading what was written gives equal records.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.densepose import NUM_COARSE_PARTS, NUM_FINE_CHARTS
from fnl_core.errors import AnnotationError
from fnl_core.files import atomic_write_text
from fnl_core.structures import DensePoseAnnotation, ImageRecord, InstanceAnnotation
from fnl_data.masks import DP_MASK_SIZE, decode_dp_masks, encode_dp_masks

logger = logging.getLogger("fnl_data")

DP_POINT_FIELDS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
_UV_TOLERANCE = 1e-6

PERSON_CATEGORY = {"id": 1, "name": "person", "supercategory": "person"}


class DensePoseFormatError(AnnotationError):
    """An annotation file breaks the DensePose-COCO format.

    ``image_id``/``annotation_id`` are None when the problem is not tied to one of them.
    """

    def __init__(
        self,
        source: str,
        message: str,
        *,
        image_id: int | None = None,
        annotation_id: int | None = None,
        field: str | None = None,
    ) -> None:
        where = [source]
        if image_id is not None:
            where.append(f"image {image_id}")
        if annotation_id is not None:
            where.append(f"annotation {annotation_id}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}")
        self.source = source
        self.image_id = image_id
        self.annotation_id = annotation_id
        self.field = field
        self.reason = message


@dataclass
class ReadSummary:
    """What a lenient read kept and skipped (a strict read never skips)."""

    source: str
    num_images: int = 0
    num_annotations: int = 0
    num_densepose: int = 0
    skipped: list[DensePoseFormatError] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __str__(self) -> str:
        text = (
            f"{self.source}: {self.num_images} images, {self.num_annotations} annotations "
            f"({self.num_densepose} with DensePose), {self.num_skipped} skipped"
        )
        if self.skipped:
            text += "; first skipped: " + str(self.skipped[0])
        return text


def _fail(source: str, ann: dict[str, Any], field: str, message: str) -> DensePoseFormatError:
    return DensePoseFormatError(
        source, message, image_id=ann.get("image_id"), annotation_id=ann.get("id"), field=field
    )


def _float_array(source: str, ann: dict[str, Any], name: str) -> np.ndarray:
    values = ann[name]
    if not isinstance(values, list):
        raise _fail(source, ann, name, f"expected a list of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _fail(source, ann, name, f"expected a list of numbers ({exc})") from exc
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise _fail(source, ann, name, "expected a flat list of finite numbers")
    return arr


def _first_bad(mask: np.ndarray, values: np.ndarray) -> str:
    k = int(np.flatnonzero(mask)[0])
    return f"got {float(values[k])!r} at index {k} ({int(mask.sum())} bad values)"


def parse_densepose(source: str, ann: dict[str, Any]) -> DensePoseAnnotation | None:
    """Validated DensePose fields of one annotation; None when it has no ``dp_*`` point fields."""
    present = [f for f in DP_POINT_FIELDS if f in ann]
    if not present:
        if "dp_masks" in ann:
            raise _fail(source, ann, "dp_masks", "dp_masks without dp_x/dp_y/dp_I/dp_U/dp_V")
        return None
    missing = [f for f in DP_POINT_FIELDS if f not in ann]
    if missing:
        raise _fail(source, ann, missing[0], f"missing (present: {', '.join(present)})")
    arrays = {f: _float_array(source, ann, f) for f in DP_POINT_FIELDS}
    lengths = {f: len(a) for f, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{f}={n}" for f, n in lengths.items())
        raise _fail(source, ann, "dp_I", f"dp_* lists must have equal lengths, got {detail}")
    i = arrays["dp_I"]
    bad = (i != np.round(i)) | (i < 1) | (i > NUM_FINE_CHARTS)
    if bad.any():
        raise _fail(source, ann, "dp_I", f"chart ids must be integers 1..24, {_first_bad(bad, i)}")
    for name in ("dp_U", "dp_V"):
        a = arrays[name]
        bad = (a < -_UV_TOLERANCE) | (a > 1 + _UV_TOLERANCE)
        if bad.any():
            raise _fail(source, ann, name, f"values must be in [0, 1], {_first_bad(bad, a)}")
    for name in ("dp_x", "dp_y"):
        a = arrays[name]
        bad = (a < 0) | (a > DP_MASK_SIZE)
        if bad.any():
            raise _fail(
                source,
                ann,
                name,
                f"points must lie in the [0, 256] box frame, {_first_bad(bad, a)}",
            )
    masks = None
    if "dp_masks" in ann:
        masks = _parse_dp_masks(source, ann, ann["dp_masks"])
    return DensePoseAnnotation(
        x=arrays["dp_x"].astype(np.float32),
        y=arrays["dp_y"].astype(np.float32),
        i=i.astype(np.int64),
        u=np.clip(arrays["dp_U"], 0, 1).astype(np.float32),
        v=np.clip(arrays["dp_V"], 0, 1).astype(np.float32),
        masks=masks,
    )


def _parse_dp_masks(source: str, ann: dict[str, Any], dp_masks: Any) -> np.ndarray:
    if not isinstance(dp_masks, list) or len(dp_masks) > NUM_COARSE_PARTS:
        raise _fail(source, ann, "dp_masks", "expected a list of at most 14 RLE entries")
    for k, entry in enumerate(dp_masks):
        if not entry:
            continue
        if not isinstance(entry, dict) or "counts" not in entry or "size" not in entry:
            raise _fail(source, ann, "dp_masks", f"entry {k} is not an RLE dict (size, counts)")
        if list(entry["size"]) != [DP_MASK_SIZE, DP_MASK_SIZE]:
            raise _fail(source, ann, "dp_masks", f"entry {k} has size {entry['size']}, not 256×256")
    try:
        return decode_dp_masks(dp_masks)
    except Exception as exc:
        raise _fail(source, ann, "dp_masks", f"RLE could not be decoded ({exc})") from exc


def parse_instance(source: str, ann: dict[str, Any]) -> InstanceAnnotation:
    """Validated :class:`InstanceAnnotation` of one COCO annotation dict."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise _fail(source, ann, "bbox", f"expected [x, y, w, h], got {bbox!r}")
    try:
        box = tuple(float(b) for b in bbox)
    except (TypeError, ValueError) as exc:
        raise _fail(source, ann, "bbox", f"expected four numbers, got {bbox!r}") from exc
    if not all(math.isfinite(b) for b in box) or box[2] <= 0 or box[3] <= 0:
        raise _fail(source, ann, "bbox", f"width and height must be > 0, got {bbox!r}")
    return InstanceAnnotation(
        id=int(ann["id"]),
        bbox_xywh=box,  # type: ignore[arg-type]
        category_id=int(ann.get("category_id", 1)),
        iscrowd=int(ann.get("iscrowd", 0)),
        area=float(ann.get("area", box[2] * box[3])),
        segmentation=ann.get("segmentation"),
        densepose=parse_densepose(source, ann),
    )


def _read_annotation(
    source: str, k: int, ann: Any, records: dict[int, ImageRecord]
) -> tuple[InstanceAnnotation, ImageRecord]:
    """Annotation ``k`` and the record it belongs to; any malformation is a format error."""
    if not isinstance(ann, dict):
        raise DensePoseFormatError(
            source, f"annotations[{k}] must be an object, got {type(ann).__name__}"
        )
    try:
        if "id" not in ann or "image_id" not in ann:
            raise _fail(source, ann, "id" if "id" not in ann else "image_id", "missing")
        rec = records.get(int(ann["image_id"]))
        if rec is None:
            raise _fail(source, ann, "image_id", "refers to no image of the file")
        return parse_instance(source, ann), rec
    except DensePoseFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise DensePoseFormatError(
            source, f"annotations[{k}]: malformed ({type(exc).__name__}: {exc})"
        ) from None


def read_densepose_coco(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    lenient: bool = False,
) -> tuple[list[ImageRecord], ReadSummary]:
    """Read and validate a DensePose-COCO JSON file.

    A bad annotation raises :class:`DensePoseFormatError` naming the image, the annotation and
    the field; with ``lenient=True`` it is skipped instead, counted in the returned summary and
    logged. ``image_root`` defaults to the JSON file's folder.
    """
    json_path = Path(json_path)
    source = str(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"DensePose-COCO annotation file {source!r} does not exist")
    try:
        data = json.loads(json_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DensePoseFormatError(
            source, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except json.JSONDecodeError as exc:
        raise DensePoseFormatError(source, f"invalid JSON: {exc}") from exc
    except RecursionError:
        raise DensePoseFormatError(source, "JSON nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DensePoseFormatError(source, "expected a COCO object with an 'images' list")
    root = Path(image_root) if image_root is not None else json_path.parent
    summary = ReadSummary(source)
    records: dict[int, ImageRecord] = {}
    for img in data["images"]:
        try:
            image_id = int(img["id"])
            rec = ImageRecord(
                image_id=image_id,
                file_name=str(img["file_name"]),
                height=int(img["height"]),
                width=int(img["width"]),
                image_root=root,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise DensePoseFormatError(
                source, f"image entry {img!r:.120} needs id, file_name, height, width ({exc})"
            ) from exc
        if rec.height <= 0 or rec.width <= 0:
            raise DensePoseFormatError(
                source,
                f"height and width must be > 0, got {rec.height}x{rec.width}",
                image_id=image_id,
            )
        if image_id in records:
            raise DensePoseFormatError(source, "duplicate image id", image_id=image_id)
        records[image_id] = rec
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DensePoseFormatError(source, "'annotations' must be a list")
    for k, ann in enumerate(annotations):
        try:
            inst, rec = _read_annotation(source, k, ann, records)
        except DensePoseFormatError as err:
            if not lenient:
                raise
            summary.skipped.append(err)
            continue
        rec.annotations.append(inst)
        summary.num_annotations += 1
        summary.num_densepose += inst.densepose is not None
    summary.num_images = len(records)
    if summary.skipped:
        logger.warning("lenient read skipped %d annotations: %s", summary.num_skipped, summary)
    return list(records.values()), summary


def _floats(a: np.ndarray) -> list[float]:
    """JSON numbers of an array; float32 values get their shortest round-trip decimal."""
    arr = np.asarray(a).ravel()
    if arr.dtype == np.float32:
        return [float(s) for s in arr.astype(str)]
    return [float(x) for x in arr]


def instance_to_coco(inst: InstanceAnnotation, image_id: int) -> dict[str, Any]:
    """COCO annotation dict of one instance (with ``dp_*`` fields when it has DensePose)."""
    out: dict[str, Any] = {
        "id": int(inst.id),
        "image_id": int(image_id),
        "category_id": int(inst.category_id),
        "bbox": [float(b) for b in inst.bbox_xywh],
        "area": float(inst.area),
        "iscrowd": int(inst.iscrowd),
    }
    if inst.segmentation is not None:
        out["segmentation"] = inst.segmentation
    dp = inst.densepose
    if dp is not None:
        out["dp_x"] = _floats(dp.x)
        out["dp_y"] = _floats(dp.y)
        out["dp_I"] = _floats(dp.i)
        out["dp_U"] = _floats(dp.u)
        out["dp_V"] = _floats(dp.v)
        if dp.masks is not None:
            out["dp_masks"] = encode_dp_masks(np.asarray(dp.masks))
    return out


def records_to_coco(records: list[ImageRecord]) -> dict[str, Any]:
    """DensePose-COCO dict (``images``, ``annotations``, ``categories``) of ``records``."""
    images = [
        {"id": r.image_id, "file_name": r.file_name, "height": r.height, "width": r.width}
        for r in records
    ]
    annotations = [instance_to_coco(a, r.image_id) for r in records for a in r.annotations]
    return {"images": images, "annotations": annotations, "categories": [PERSON_CATEGORY]}


def write_densepose_coco(records: list[ImageRecord], json_path: str | Path) -> Path:
    """Write ``records`` as a DensePose-COCO JSON file (file names are stored as given)."""
    json_path = Path(json_path)
    atomic_write_text(json_path, json.dumps(records_to_coco(records), separators=(",", ":")))
    return json_path
