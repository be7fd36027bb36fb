"""Registered configs of fnl-data: the ``toy`` and ``coco`` datasets and the ``toy`` surface.

This module imports only pydantic and fnl-core, so listing and validating specs stays light;
numpy, pycocotools and the generators are imported inside ``build``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fnl_core import groups
from fnl_core.spec import ComponentConfig

if TYPE_CHECKING:
    from fnl_data.dataset import DensePoseCocoDataset
    from fnl_data.toy.generate import ToySettings
    from fnl_data.toy.surface import ToySurface


class ToyDatasetConfig(ComponentConfig):
    """Synthetic "toy humans" with DensePose ground truth, generated once into a cache folder.

    Images and annotations are deterministic functions of the options and the seed; each split
    has its own random stream. Files: ``<cache_dir>/toy/<hash>/{split}/*.jpg`` and
    ``{split}_{n}.json`` (DensePose-COCO).
    """

    group: ClassVar[str] = groups.DATASETS
    type: Literal["toy"] = "toy"
    num_images: dict[str, int] = Field(
        default_factory=lambda: {"train": 1000, "val": 100},
        description="number of images of each split name",
    )
    width: int = Field(320, ge=32, le=4096, description="image width in pixels")
    height: int = Field(240, ge=32, le=4096, description="image height in pixels")
    seed: int = Field(0, ge=0, description="base seed; each split derives its own stream")
    min_people: int = Field(1, ge=1, le=20)
    max_people: int = Field(4, ge=1, le=20)
    points_per_person: int = Field(100, gt=0, le=1000, description="annotated points per person")
    cache_dir: str | None = Field(
        None, description="cache root (default $FNL_CACHE_DIR or ~/.cache/fnl)"
    )
    workers: int = Field(0, ge=0, le=64, description="generation processes (0 = in process)")

    @model_validator(mode="after")
    def _check(self) -> ToyDatasetConfig:
        if self.min_people > self.max_people:
            raise ValueError(
                f"min_people ({self.min_people}) must not exceed max_people ({self.max_people})"
            )
        bad = {k: n for k, n in self.num_images.items() if n <= 0}
        if bad:
            raise ValueError(f"num_images must be > 0 for every split, got {bad}")
        return self

    def cache_folder(self) -> Path:
        """The folder holding this configuration's generated splits."""
        from fnl_data.toy.generate import default_cache_root, settings_key

        root = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_root()
        return root / "toy" / settings_key(self.settings(), self.seed)

    def settings(self) -> ToySettings:
        from fnl_data.toy.generate import ToySettings

        return ToySettings(
            width=self.width,
            height=self.height,
            min_people=self.min_people,
            max_people=self.max_people,
            points_per_person=self.points_per_person,
        )

    def build(self, split: str = "train") -> DensePoseCocoDataset:
        """Generate ``split`` if it is not cached yet and return it as a dataset."""
        if split not in self.num_images:
            raise ValueError(
                f"toy dataset has no split {split!r}; configured splits: "
                f"{', '.join(sorted(self.num_images))} (set num_images to add one)"
            )
        from fnl_data.dataset import DensePoseCocoDataset
        from fnl_data.toy.body import ToySymmetry
        from fnl_data.toy.generate import generate_split

        folder = self.cache_folder()
        gt_json = generate_split(
            self.settings(), self.seed, split, self.num_images[split], folder, self.workers
        )
        return DensePoseCocoDataset.from_json(gt_json, folder, ToySymmetry(), name=f"toy/{split}")


class CocoSplitFiles(BaseModel):
    """Annotation file and image folder of one split, relative to the dataset root."""

    model_config = ConfigDict(extra="forbid")

    json_file: str
    images: str


def _densepose_coco_splits() -> dict[str, CocoSplitFiles]:
    ann = "annotations/densepose_{}.json"
    return {
        "train": CocoSplitFiles(json_file=ann.format("train2014"), images="train2014"),
        "valminusminival": CocoSplitFiles(
            json_file=ann.format("valminusminival2014"), images="val2014"
        ),
        "minival": CocoSplitFiles(json_file=ann.format("minival2014"), images="val2014"),
        "minival_100": CocoSplitFiles(json_file=ann.format("minival2014_100"), images="val2014"),
    }


class CocoDatasetConfig(ComponentConfig):
    """DensePose-COCO (or any file in its format) read from a local folder.

    Paths in ``splits`` and ``uv_symmetry`` are relative to ``root`` unless absolute. Horizontal
    flips need ``UV_symmetry_transforms.mat``; without it the dataset still loads and flipping
    raises an error saying where the file was expected.
    """

    group: ClassVar[str] = groups.DATASETS
    type: Literal["coco"] = "coco"
    root: str = Field("datasets/coco", description="dataset folder")
    splits: dict[str, CocoSplitFiles] = Field(default_factory=_densepose_coco_splits)
    uv_symmetry: str = Field(
        "UV_symmetry_transforms.mat", description="U/V flip tables (needed for flips only)"
    )
    lenient: bool = Field(
        False, description="skip (and count) invalid annotations instead of failing"
    )

    def _path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(self.root).expanduser() / path

    def build(self, split: str = "minival") -> DensePoseCocoDataset:
        if split not in self.splits:
            raise ValueError(
                f"coco dataset has no split {split!r}; configured splits: "
                f"{', '.join(sorted(self.splits))}"
            )
        from fnl_data.dataset import DensePoseCocoDataset
        from fnl_data.transforms import MissingSymmetry, TableSymmetry

        files = self.splits[split]
        sym_path = self._path(self.uv_symmetry)
        if sym_path.is_file():
            symmetry = TableSymmetry.from_mat(sym_path)
        else:
            symmetry = MissingSymmetry(
                f"horizontal flip of coco split {split!r} needs UV_symmetry_transforms.mat, "
                f"not found at {str(sym_path)!r}; download it from "
                "https://dl.fbaipublicfiles.com/densepose/data/UV_symmetry_transforms.mat and "
                "set the dataset's 'uv_symmetry' option to its path"
            )
        return DensePoseCocoDataset.from_json(
            self._path(files.json_file),
            self._path(files.images),
            symmetry,
            lenient=self.lenient,
            name=f"coco/{split}",
        )


class ToySurfaceConfig(ComponentConfig):
    """The toy body's surface for GPS evaluation (geodesics cached under the cache folder)."""

    group: ClassVar[str] = groups.SURFACES
    type: Literal["toy"] = "toy"
    spacing: float = Field(
        0.03, ge=0.01, le=0.2, description="mesh vertex spacing in metres (finer = slower)"
    )
    kappa: Literal["smpl", "toy"] = Field(
        "smpl", description="per-group κ: the 9 SMPL values, or recomputed on the toy body"
    )
    cache_dir: str | None = Field(None, description="cache root (default ~/.cache/fnl)")

    def build(self) -> ToySurface:
        from fnl_data.toy.surface import ToySurface

        return ToySurface(spacing=self.spacing, kappa=self.kappa, cache_dir=self.cache_dir)
