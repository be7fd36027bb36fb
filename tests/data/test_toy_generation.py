"""The toy-humans generator: determinism, annotation consistency, speed, dataset contract."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fnl_core.densepose import FINE_TO_COARSE
from fnl_core.structures import DensePoseDataset
from fnl_data.masks import decode_segmentation
from fnl_data.toy.generate import ToySettings, generate_split, render_sample, sample_rng

SMALL = ToySettings(width=128, height=96)


def test_same_seed_same_image_different_seed_or_split_differs():
    a = render_sample(sample_rng(5, "train", 2), SMALL)
    b = render_sample(sample_rng(5, "train", 2), SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    assert [x.bbox_xywh for x in a.annotations] == [x.bbox_xywh for x in b.annotations]
    assert not np.array_equal(a.image, render_sample(sample_rng(6, "train", 2), SMALL).image)
    assert not np.array_equal(a.image, render_sample(sample_rng(5, "val", 2), SMALL).image)


def test_annotations_agree_with_the_rendered_ground_truth():
    s = ToySettings(width=160, height=120, min_people=1, max_people=2)
    smp = render_sample(sample_rng(1, "train", 0), s)
    coarse = np.asarray(FINE_TO_COARSE)
    assert smp.annotations
    for ann in smp.annotations:
        dp = ann.densepose
        assert dp is not None
        assert len(dp.x) == s.points_per_person
        assert dp.i.min() >= 1 and dp.i.max() <= 24
        assert dp.u.min() >= 0 and dp.u.max() <= 1 and dp.v.min() >= 0 and dp.v.max() <= 1
        x, y, w, h = ann.bbox_xywh
        cols = np.floor(x + dp.x * w / 256).astype(int)
        rows = np.floor(y + dp.y * h / 256).astype(int)
        seg = decode_segmentation(ann.segmentation, s.height, s.width)
        assert seg[rows, cols].all()  # every point lies on the person
        assert ann.area == seg.sum()
        np.testing.assert_array_equal(smp.chart[rows, cols], dp.i)
        np.testing.assert_allclose(smp.u[rows, cols], dp.u)
        # the coarse mask at each point holds the coarse part of the point's chart
        mask_at = dp.masks[dp.y.astype(int), dp.x.astype(int)]
        assert np.mean(mask_at == coarse[dp.i]) > 0.9
        assert set(np.unique(dp.masks)) <= set(range(15))
        assert len(np.unique(smp.person[rows, cols])) == 1


def test_every_chart_appears_over_a_few_images():
    seen = set()
    for k in range(12):
        smp = render_sample(sample_rng(0, "train", k), ToySettings(width=160, height=120))
        seen |= set(np.unique(smp.chart).tolist())
    assert seen == set(range(25))


def test_tiny_split_is_generated_quickly(tmp_path):
    t0 = time.perf_counter()
    gt = generate_split(SMALL, 0, "train", 4, tmp_path)
    elapsed = time.perf_counter() - t0
    assert gt.is_file() and len(list((tmp_path / "train").glob("*.jpg"))) == 4
    assert elapsed < 5.0
    mtime = gt.stat().st_mtime_ns
    generate_split(SMALL, 0, "train", 4, tmp_path)  # cached: not rewritten
    assert gt.stat().st_mtime_ns == mtime


def test_toy_dataset_satisfies_the_contract(toy_config, toy_train):
    assert isinstance(toy_train, DensePoseDataset)
    assert len(toy_train.records) == 4 and toy_train.gt_json.is_file()
    rec = toy_train.records[0]
    img = toy_train.load_image(rec)
    assert img.shape == (96, 128, 3) and img.dtype == np.uint8
    _, fimg = toy_train.hflip(rec, img)
    np.testing.assert_array_equal(fimg, img[:, ::-1])
    val = toy_config.build(split="val")
    assert len(val.records) == 2
    assert toy_config.cache_folder() in val.gt_json.parents


def test_toy_dataset_is_deterministic_across_cache_folders(toy_config, toy_train, tmp_path):
    other = toy_config.model_copy(update={"cache_dir": str(tmp_path)})
    again = other.build(split="train")
    a = toy_train.load_image(toy_train.records[1])
    b = again.load_image(again.records[1])
    np.testing.assert_array_equal(a, b)
    assert toy_train.gt_json.read_bytes() == again.gt_json.read_bytes()


def test_unknown_split_is_a_clear_error(toy_config):
    with pytest.raises(ValueError, match=r"no split 'test'.*train, val"):
        toy_config.build(split="test")
