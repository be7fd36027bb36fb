"""Registered configs of fnl-data: discovery, validation errors, the coco dataset."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fnl_core import registry
from fnl_data.config import CocoDatasetConfig, ToyDatasetConfig, ToySurfaceConfig


def test_entry_points_are_listed_and_resolve():
    assert {"toy", "coco"} <= set(registry.names("datasets"))
    assert "toy" in registry.names("surfaces")
    assert registry.get("fnl.datasets", "toy") is ToyDatasetConfig
    assert registry.get("fnl.datasets", "coco") is CocoDatasetConfig
    assert registry.get("fnl.surfaces", "toy") is ToySurfaceConfig


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"min_people": 3, "max_people": 2}, "min_people"),
        ({"width": 0}, "width"),
        ({"num_images": {"train": 0}}, "num_images"),
        ({"points_per_person": -1}, "points_per_person"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_toy_config_rejects_bad_options(options, match):
    with pytest.raises(ValidationError, match=match):
        ToyDatasetConfig(**options)


def test_surface_config_rejects_bad_options():
    with pytest.raises(ValidationError, match="spacing"):
        ToySurfaceConfig(spacing=0)
    with pytest.raises(ValidationError, match="kappa"):
        ToySurfaceConfig(kappa="paper")


def test_coco_dataset_reads_a_local_copy(toy_train, tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "mini.json").write_bytes(toy_train.gt_json.read_bytes())
    cfg = CocoDatasetConfig(
        root=str(tmp_path),
        splits={
            "mini": {
                "json_file": "annotations/mini.json",
                "images": str(toy_train.records[0].image_root),
            }
        },
    )
    ds = cfg.build(split="mini")
    assert len(ds.records) == len(toy_train.records) and ds.summary.num_skipped == 0
    rec = ds.records[0]
    img = ds.load_image(rec)
    with pytest.raises(FileNotFoundError, match=r"UV_symmetry_transforms\.mat"):
        ds.hflip(rec, img)
    with pytest.raises(ValueError, match="no split 'train'"):
        cfg.build(split="train")
