"""Geometric transforms of an image and its record: resize by shortest edge, horizontal flip.

DensePose points and coarse masks live in the annotation box frame (256 units), so a resize
changes only boxes, areas, segmentations and the image size. A horizontal flip mirrors the box,
the segmentation, the points (``x → 256 − x``), the coarse mask (column ``c → 255 − c`` and
left/right labels swapped) and maps each point's chart and U/V to the mirror chart through a
:class:`ChartSymmetry` (docs/data_format.md, 'Horizontal flip'). The symmetry is pluggable: the
toy body supplies an exact analytic one; real DensePose-COCO data uses
``UV_symmetry_transforms.mat``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from fnl_core.densepose import COARSE_FLIP, FINE_FLIP, NUM_FINE_CHARTS
from fnl_core.structures import DensePoseAnnotation, ImageRecord, InstanceAnnotation
from fnl_data.masks import decode_segmentation, encode_rle

_FINE_FLIP = np.asarray(FINE_FLIP, dtype=np.int64)
_COARSE_FLIP = np.asarray(COARSE_FLIP, dtype=np.uint8)

UV_SYMMETRY_FILE = "UV_symmetry_transforms.mat"


@runtime_checkable
class ChartSymmetry(Protocol):
    """Maps chart ids 1..24 and U/V of surface points to those of their left-right mirror."""

    def __call__(
        self, i: np.ndarray, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class TableSymmetry:
    """The DensePose lookup tables: ``U' = U_tables[i − 1, ⌊255 V⌋, ⌊255 U⌋]`` (same for V).

    The lookup quantises U/V to 1/255 steps, so flipping twice is the identity only up to that
    quantisation (exactly as in detectron2).
    """

    def __init__(self, u_tables: np.ndarray, v_tables: np.ndarray, source: str = "<memory>"):
        u_tables = np.asarray(u_tables, dtype=np.float32)
        v_tables = np.asarray(v_tables, dtype=np.float32)
        shape = (NUM_FINE_CHARTS, 256, 256)
        if u_tables.shape != shape or v_tables.shape != shape:
            raise ValueError(
                f"{source}: U/V symmetry tables must have shape {shape}, got "
                f"{u_tables.shape} and {v_tables.shape}"
            )
        self.u_tables = u_tables
        self.v_tables = v_tables
        self.source = source

    @classmethod
    def from_mat(cls, path: str | Path) -> TableSymmetry:
        """Load ``UV_symmetry_transforms.mat`` (variables ``U_transforms``, ``V_transforms``)."""
        from scipy.io import loadmat

        path = Path(path)
        if path.is_dir():
            path = path / UV_SYMMETRY_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{UV_SYMMETRY_FILE} not found at {str(path)!r}: horizontal flips of "
                "DensePose-COCO data need it (https://dl.fbaipublicfiles.com/densepose/data/"
                f"{UV_SYMMETRY_FILE}); set the dataset's 'uv_symmetry' option to its path"
            )
        data = loadmat(str(path))
        tables = []
        for name in ("U_transforms", "V_transforms"):
            if name not in data:
                raise ValueError(f"{path}: variable {name!r} missing (found {sorted(data)})")
            cells = np.asarray(data[name]).reshape(-1)
            if cells.dtype == object:
                cells = np.stack([np.asarray(c, dtype=np.float32) for c in cells])
            tables.append(cells)
        return cls(tables[0], tables[1], source=str(path))

    def save_mat(self, path: str | Path) -> Path:
        """Write the tables in the layout of ``UV_symmetry_transforms.mat`` (1×24 cells)."""
        from scipy.io import savemat

        def cells(t: np.ndarray) -> np.ndarray:
            out = np.empty((1, NUM_FINE_CHARTS), dtype=object)
            for k in range(NUM_FINE_CHARTS):
                out[0, k] = t[k].astype(np.float64)
            return out

        path = Path(path)
        savemat(
            str(path), {"U_transforms": cells(self.u_tables), "V_transforms": cells(self.v_tables)}
        )
        return path

    def __call__(
        self, i: np.ndarray, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = np.asarray(i, dtype=np.int64)
        iu = np.floor(np.clip(u, 0, 1) * 255).astype(np.int64)
        iv = np.floor(np.clip(v, 0, 1) * 255).astype(np.int64)
        return _FINE_FLIP[i], self.u_tables[i - 1, iv, iu], self.v_tables[i - 1, iv, iu]


class MissingSymmetry:
    """Placeholder of a dataset built without symmetry tables: flipping raises a clear error."""

    def __init__(self, reason: str):
        self.reason = reason

    def __call__(
        self, i: np.ndarray, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise FileNotFoundError(self.reason)


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w): shortest side → ``short_edge``, longest side capped at ``max_size``."""
    scale = short_edge / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_segmentation(segm: Any, h: int, w: int, nh: int, nw: int) -> Any:
    if segm is None:
        return None
    if isinstance(segm, list):
        sx, sy = nw / w, nh / h
        return [[c * (sx if k % 2 == 0 else sy) for k, c in enumerate(poly)] for poly in segm]
    mask = decode_segmentation(segm, h, w)
    resized = Image.fromarray(mask * 255).resize((nw, nh), Image.NEAREST)
    return encode_rle(np.asarray(resized) > 127)


def resize_shortest_edge(
    record: ImageRecord, image: np.ndarray | None, short_edge: int, max_size: int
) -> tuple[ImageRecord, np.ndarray | None]:
    """Resize so the shortest side is ``short_edge`` (longest ≤ ``max_size``), image bilinear.

    Boxes, areas and segmentations follow; DensePose points and masks are box-relative and stay.
    """
    h, w = record.height, record.width
    nh, nw = resized_shape(h, w, short_edge, max_size)
    sx, sy = nw / w, nh / h
    anns = [
        dataclasses.replace(
            a,
            bbox_xywh=(
                a.bbox_xywh[0] * sx,
                a.bbox_xywh[1] * sy,
                a.bbox_xywh[2] * sx,
                a.bbox_xywh[3] * sy,
            ),
            area=a.area * sx * sy,
            segmentation=_resize_segmentation(a.segmentation, h, w, nh, nw),
        )
        for a in record.annotations
    ]
    out = dataclasses.replace(record, height=nh, width=nw, annotations=anns)
    if image is not None:
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    return out, image


def _flip_segmentation(segm: Any, h: int, w: int) -> Any:
    if segm is None:
        return None
    if isinstance(segm, list):
        return [[(w - c) if k % 2 == 0 else c for k, c in enumerate(poly)] for poly in segm]
    return encode_rle(decode_segmentation(segm, h, w)[:, ::-1])


def hflip_densepose(dp: DensePoseAnnotation, symmetry: ChartSymmetry) -> DensePoseAnnotation:
    """Mirror box-relative DensePose data: ``x → 256 − x``, charts/UV by ``symmetry``, masks."""
    i, u, v = symmetry(np.asarray(dp.i), np.asarray(dp.u), np.asarray(dp.v))
    masks = None
    if dp.masks is not None:
        masks = _COARSE_FLIP[np.asarray(dp.masks)[:, ::-1]]
    return DensePoseAnnotation(
        x=(np.float32(256) - np.asarray(dp.x)).astype(np.float32),
        y=np.array(dp.y, dtype=np.float32),
        i=np.asarray(i, dtype=np.int64),
        u=np.asarray(u, dtype=np.float32),
        v=np.asarray(v, dtype=np.float32),
        masks=masks,
    )


def _flip_instance(a: InstanceAnnotation, h: int, w: int, sym: ChartSymmetry) -> InstanceAnnotation:
    x, y, bw, bh = a.bbox_xywh
    return dataclasses.replace(
        a,
        bbox_xywh=(w - x - bw, y, bw, bh),
        segmentation=_flip_segmentation(a.segmentation, h, w),
        densepose=None if a.densepose is None else hflip_densepose(a.densepose, sym),
    )


def hflip(
    record: ImageRecord, image: np.ndarray | None, symmetry: ChartSymmetry
) -> tuple[ImageRecord, np.ndarray | None]:
    """Mirror ``image`` (H×W×C) and every annotation of ``record`` left-right."""
    h, w = record.height, record.width
    anns = [_flip_instance(a, h, w, symmetry) for a in record.annotations]
    out = dataclasses.replace(record, annotations=anns)
    if image is not None:
        image = np.ascontiguousarray(np.asarray(image)[:, ::-1])
    return out, image
