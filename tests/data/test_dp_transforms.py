"""Resize and horizontal flip of images and DensePose records."""

from __future__ import annotations

import numpy as np
import pytest

from fnl_core.densepose import COARSE_FLIP, FINE_FLIP, FINE_TO_COARSE
from fnl_core.structures import ImageRecord
from fnl_data.masks import decode_segmentation
from fnl_data.toy.body import (
    PART_MIRROR,
    ToySymmetry,
    body_to_local,
    chart_to_local,
    local_to_body,
    local_to_chart,
)
from fnl_data.toy.generate import ToySettings, render_sample, sample_rng
from fnl_data.transforms import (
    MissingSymmetry,
    TableSymmetry,
    hflip,
    resize_shortest_edge,
    resized_shape,
)


@pytest.fixture(scope="module")
def sample():
    s = ToySettings(width=128, height=96, min_people=2, max_people=3)
    smp = render_sample(sample_rng(11, "train", 0), s)
    rec = ImageRecord(1, "x.jpg", 96, 128, smp.annotations)
    assert any(a.densepose is not None for a in rec.annotations)
    return smp, rec


def _image_points(ann):
    x, y, w, h = ann.bbox_xywh
    dp = ann.densepose
    return x + dp.x * w / 256, y + dp.y * h / 256


def test_flip_twice_is_identity(sample):
    smp, rec = sample
    sym = ToySymmetry()
    r1, im1 = hflip(rec, smp.image, sym)
    r2, im2 = hflip(r1, im1, sym)
    np.testing.assert_array_equal(im2, smp.image)
    assert not np.array_equal(im1, smp.image)
    for a, b in zip(rec.annotations, r2.annotations, strict=True):
        np.testing.assert_allclose(b.bbox_xywh, a.bbox_xywh, atol=1e-9)
        assert b.segmentation == a.segmentation
        if a.densepose is None:
            continue
        for name in ("x", "y", "u", "v"):
            np.testing.assert_allclose(
                getattr(b.densepose, name), getattr(a.densepose, name), atol=1e-5
            )
        np.testing.assert_array_equal(b.densepose.i, a.densepose.i)
        np.testing.assert_array_equal(b.densepose.masks, a.densepose.masks)


def test_flipped_points_land_on_mirrored_pixels_with_mirror_charts(sample):
    smp, rec = sample
    flipped, _ = hflip(rec, smp.image, ToySymmetry())
    w = rec.width
    for a, b in zip(rec.annotations, flipped.annotations, strict=True):
        if a.densepose is None:
            continue
        xa, ya = _image_points(a)
        xb, yb = _image_points(b)
        np.testing.assert_allclose(xb, w - xa, atol=1e-3)
        np.testing.assert_allclose(yb, ya, atol=1e-4)
        np.testing.assert_array_equal(b.densepose.i, np.asarray(FINE_FLIP)[a.densepose.i])
        np.testing.assert_allclose(b.densepose.u, 1 - a.densepose.u, atol=1e-6)
        # the flipped coarse mask is the mirrored one with left/right labels swapped
        expect = np.asarray(COARSE_FLIP)[a.densepose.masks[:, ::-1]]
        np.testing.assert_array_equal(b.densepose.masks, expect)
        # segmentation of the flipped instance is the mirrored mask
        seg_a = decode_segmentation(a.segmentation, rec.height, w)
        seg_b = decode_segmentation(b.segmentation, rec.height, w)
        np.testing.assert_array_equal(seg_b, seg_a[:, ::-1])


def test_toy_symmetry_matches_the_mirrored_3d_body():
    rng = np.random.default_rng(0)
    i = rng.integers(1, 25, 2000)
    u, v = rng.random(2000), rng.uniform(0.01, 0.99, 2000)
    part, p = chart_to_local(i, u, v)
    mirrored = local_to_body(part, p) * np.array([-1.0, 1.0, 1.0])
    i2, u2, v2 = local_to_chart(PART_MIRROR[part], body_to_local(PART_MIRROR[part], mirrored))
    si, su, sv = ToySymmetry()(i, u, v)
    np.testing.assert_array_equal(i2, si)
    du = np.abs(u2 - su)
    np.testing.assert_array_less(np.minimum(du, 1 - du), 1e-5)  # single charts wrap at U = 0/1
    np.testing.assert_allclose(v2, sv, atol=1e-5)
    coarse = np.asarray(FINE_TO_COARSE)
    np.testing.assert_array_equal(coarse[si], np.asarray(COARSE_FLIP)[coarse[i]])


def test_table_symmetry_round_trips_through_mat_file(tmp_path):
    u_tab, v_tab = ToySymmetry().tables()
    path = TableSymmetry(u_tab, v_tab).save_mat(tmp_path / "UV_symmetry_transforms.mat")
    table = TableSymmetry.from_mat(tmp_path)
    rng = np.random.default_rng(1)
    i, u, v = rng.integers(1, 25, 500), rng.random(500), rng.random(500)
    ti, tu, tv = table(i, u, v)
    ei, eu, ev = ToySymmetry()(i, u, v)
    np.testing.assert_array_equal(ti, ei)
    np.testing.assert_allclose(tu, eu, atol=1 / 255 + 1e-6)  # the lookup quantises to 1/255
    np.testing.assert_allclose(tv, ev, atol=1 / 255 + 1e-6)
    assert path.name == "UV_symmetry_transforms.mat"


def test_missing_symmetry_tables_give_a_clear_error(tmp_path, sample):
    with pytest.raises(FileNotFoundError, match=r"UV_symmetry_transforms\.mat not found"):
        TableSymmetry.from_mat(tmp_path)
    smp, rec = sample
    with pytest.raises(FileNotFoundError, match="needs it"):
        hflip(rec, smp.image, MissingSymmetry("flip needs it"))


def test_resize_scales_boxes_and_points_consistently(sample):
    smp, rec = sample
    out, img = resize_shortest_edge(rec, smp.image, 150, 1000)
    assert (out.height, out.width) == (150, 200) == img.shape[:2]
    sx, sy = out.width / rec.width, out.height / rec.height
    for a, b in zip(rec.annotations, out.annotations, strict=True):
        np.testing.assert_allclose(
            b.bbox_xywh, np.asarray(a.bbox_xywh) * [sx, sy, sx, sy], rtol=1e-12
        )
        assert b.area == pytest.approx(a.area * sx * sy)
        seg = decode_segmentation(b.segmentation, out.height, out.width)
        assert seg.sum() == pytest.approx(a.area * sx * sy, rel=0.15)
        if a.densepose is None:
            continue
        xa, ya = _image_points(a)
        xb, yb = _image_points(b)
        np.testing.assert_allclose(xb, xa * sx, rtol=1e-5)
        np.testing.assert_allclose(yb, ya * sy, rtol=1e-5)


def test_resized_shape_caps_the_long_side():
    assert resized_shape(480, 640, 800, 1333) == (800, 1067)
    assert resized_shape(100, 1000, 800, 1333) == (133, 1333)
