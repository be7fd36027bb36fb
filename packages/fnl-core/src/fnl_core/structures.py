"""Records passed between packages: annotated images, DensePose training targets, surfaces.

These are the contracts between fnl-data (which produces records), fnl-detector (which turns them
into training targets), fnl-heads (whose losses consume targets) and fnl-eval (which measures
geodesic distances on a body surface). They hold numpy arrays or torch tensors but import
neither, so fnl-core stays free of heavy dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass
class DensePoseAnnotation:
    """DensePose fields of one person, as in DensePose-COCO.

    Point coordinates ``x``/``y`` are in the annotation box frame scaled to 256 units
    (``X = bbox_x + x * bbox_w / 256``). ``i`` holds fine chart ids 1..24, ``u``/``v`` in [0, 1].
    ``masks`` is the 256×256 coarse-part label map (uint8, 0 = background, 1..14 = coarse
    parts, decoded from the 14 ``dp_masks`` RLEs), or None when the person has no masks.
    """

    x: Any
    y: Any
    i: Any
    u: Any
    v: Any
    masks: Any | None = None


@dataclass
class InstanceAnnotation:
    """One person of an image."""

    id: int
    bbox_xywh: tuple[float, float, float, float]
    category_id: int = 1
    iscrowd: int = 0
    area: float = 0.0
    segmentation: Any = None
    densepose: DensePoseAnnotation | None = None


@dataclass
class ImageRecord:
    """One image and its annotations; ``file_name`` is absolute or relative to ``image_root``."""

    image_id: int
    file_name: str
    height: int
    width: int
    annotations: list[InstanceAnnotation] = field(default_factory=list)
    image_root: Path | None = None

    @property
    def path(self) -> Path:
        p = Path(self.file_name)
        return p if p.is_absolute() or self.image_root is None else self.image_root / p


@runtime_checkable
class DensePoseDataset(Protocol):
    """What an entry of ``fnl.datasets`` builds (``config.build(split=..., ...)``)."""

    records: list[ImageRecord]
    gt_json: Path
    """DensePose-COCO ground-truth JSON of this split (what ``fnl eval --gt`` reads)."""

    def load_image(self, record: ImageRecord) -> Any:
        """The image as an H×W×3 uint8 RGB numpy array."""

    def hflip(self, record: ImageRecord, image: Any) -> tuple[ImageRecord, Any]:
        """Mirror image and annotations (boxes, masks, points, chart ids and U/V)."""


@dataclass
class DensePoseTargets:
    """Training targets of the DensePose branch for N foreground RoIs (torch tensors).

    ``proposals`` are the pooled boxes (XYXY, network-input frame); ``gt_boxes`` their matched
    ground-truth boxes in the same frame. Points are packed over all RoIs: point k belongs to
    RoI ``point_roi[k]`` and lies at ``point_xy[k]`` in that GT box's 256-unit frame.
    ``masks`` (N×256×256 int64, coarse labels in the GT-box frame) and ``has_mask`` (N bool)
    carry the coarse segmentation targets.
    """

    proposals: Any
    gt_boxes: Any
    point_roi: Any
    point_xy: Any
    point_i: Any
    point_u: Any
    point_v: Any
    masks: Any
    has_mask: Any


@runtime_checkable
class BodySurface(Protocol):
    """A body surface for geodesic evaluation (what an entry of ``fnl.surfaces`` builds).

    Mirrors the DensePose SMPL evaluator data: a set of UV vertices (one per mesh vertex and
    chart containing it) and geodesic distances between mesh vertices, in metres.
    """

    uv_u: Any
    """(N,) float, U of each UV vertex."""
    uv_v: Any
    """(N,) float, V of each UV vertex."""
    uv_part: Any
    """(N,) int, chart id 1..24 of each UV vertex."""
    uv_to_mesh: Any
    """(N,) int, 0-based mesh vertex of each UV vertex."""
    kappa: Any
    """(9,) float, per-group GPS normaliser (group 0 = 0)."""
    part_group: Any
    """(25,) int, group of each fine chart id (index 0 = background)."""

    def geodesic(self, a: Any, b: Any) -> Any:
        """Element-wise geodesic distance (metres) between mesh vertices ``a[k]`` and ``b[k]``."""
