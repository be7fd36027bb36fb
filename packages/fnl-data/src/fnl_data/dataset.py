"""The dataset object every ``fnl.datasets`` entry builds (a ``DensePoseDataset``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fnl_core.structures import ImageRecord
from fnl_data.coco import ReadSummary, read_densepose_coco
from fnl_data.transforms import ChartSymmetry, hflip


class DensePoseCocoDataset:
    """Records of one DensePose-COCO split, its GT JSON, image loading and flipping.

    Satisfies :class:`fnl_core.structures.DensePoseDataset`. ``summary`` tells what a lenient
    read skipped.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        gt_json: Path,
        symmetry: ChartSymmetry,
        summary: ReadSummary | None = None,
        name: str = "",
    ) -> None:
        self.records = records
        self.gt_json = Path(gt_json)
        self.symmetry = symmetry
        self.summary = summary
        self.name = name

    @classmethod
    def from_json(
        cls,
        gt_json: str | Path,
        image_root: str | Path | None,
        symmetry: ChartSymmetry,
        *,
        lenient: bool = False,
        name: str = "",
    ) -> DensePoseCocoDataset:
        records, summary = read_densepose_coco(gt_json, image_root, lenient=lenient)
        return cls(records, Path(gt_json), symmetry, summary, name)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"DensePoseCocoDataset({self.name or self.gt_json}, {len(self)} images)"

    def load_image(self, record: ImageRecord) -> np.ndarray:
        """H×W×3 uint8 RGB array of ``record``'s image."""
        path = record.path
        if not path.is_file():
            raise FileNotFoundError(f"image {record.image_id}: file {str(path)!r} does not exist")
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))

    def hflip(self, record: ImageRecord, image: np.ndarray) -> tuple[ImageRecord, np.ndarray]:
        """Mirror image and annotations (boxes, masks, points, chart ids and U/V)."""
        out, flipped = hflip(record, np.asarray(image), self.symmetry)
        return out, np.asarray(flipped)
