"""Shared fixtures: a tiny generated toy split and record comparison."""

from __future__ import annotations

import numpy as np
import pytest

from fnl_core.structures import ImageRecord


@pytest.fixture(scope="session")
def toy_config(tmp_path_factory):
    from fnl_data.config import ToyDatasetConfig

    cache = tmp_path_factory.mktemp("fnl-cache")
    return ToyDatasetConfig(
        num_images={"train": 4, "val": 2}, width=128, height=96, seed=3, cache_dir=str(cache)
    )


@pytest.fixture(scope="session")
def toy_train(toy_config):
    return toy_config.build(split="train")


def _assert_records_equal(a: list[ImageRecord], b: list[ImageRecord]) -> None:
    """Field-by-field equality of records (numpy arrays compared exactly)."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert (ra.image_id, ra.file_name, ra.height, ra.width) == (
            rb.image_id, rb.file_name, rb.height, rb.width,
        )  # fmt: skip
        assert len(ra.annotations) == len(rb.annotations)
        for x, y in zip(ra.annotations, rb.annotations, strict=True):
            assert (x.id, x.bbox_xywh, x.category_id, x.iscrowd, x.area, x.segmentation) == (
                y.id, y.bbox_xywh, y.category_id, y.iscrowd, y.area, y.segmentation,
            )  # fmt: skip
            assert (x.densepose is None) == (y.densepose is None)
            if x.densepose is None:
                continue
            for name in ("x", "y", "i", "u", "v", "masks"):
                va, vb = getattr(x.densepose, name), getattr(y.densepose, name)
                assert np.asarray(va).dtype == np.asarray(vb).dtype, name
                np.testing.assert_array_equal(va, vb, err_msg=name)


@pytest.fixture
def assert_records_equal():
    return _assert_records_equal
