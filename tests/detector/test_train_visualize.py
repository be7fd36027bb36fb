"""Pictures and IUV rasters of fnl_detector.visualize, and the loss-curve fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fnl_core.structures import DensePoseAnnotation, ImageRecord, InstanceAnnotation
from fnl_core.visualize import (
    PART_COLORS,
    draw_ground_truth,
    draw_prediction,
    iuv_image,
    marching_squares,
)
from fnl_detector.train.metrics import _plot_with_pil, plot_loss_curve


def _chart(h: int, w: int, part: int, u: int) -> np.ndarray:
    chart = np.zeros((3, h, w), np.uint8)
    chart[0] = part
    chart[1] = u
    chart[2] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    return chart


def test_iuv_image_pastes_charts_and_highest_score_wins():
    boxes = np.array([[2, 2, 12, 12], [6, 6, 16, 16]], np.float32)
    charts = [_chart(10, 10, 3, 50), _chart(10, 10, 7, 200)]
    out = iuv_image((20, 20), boxes, charts, np.array([0.9, 0.6]))
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert tuple(out[8, 8][:2]) == (3, 50)  # overlap: the 0.9 detection
    assert tuple(out[14, 14][:2]) == (7, 200)
    assert out[0, 0].tolist() == [0, 0, 0]
    swapped = iuv_image((20, 20), boxes, charts, np.array([0.5, 0.6]))
    assert tuple(swapped[8, 8][:2]) == (7, 200)


def test_iuv_image_clips_boxes_outside_the_image():
    out = iuv_image((8, 8), np.array([[-4, -4, 6, 6.0]]), [_chart(10, 10, 2, 9)], np.ones(1))
    assert (out[:6, :6, 0] == 2).all() and (out[6:, :, 0] == 0).all()


def test_marching_squares_finds_a_straight_iso_line():
    field = np.tile(np.arange(6.0)[:, None], (1, 5))  # value = row
    segs = marching_squares(field, np.ones_like(field, bool), 2.5)
    assert len(segs) == 4
    assert np.allclose(segs[..., 0], 2.5)
    valid = np.ones_like(field, bool)
    valid[:, 2:] = False
    assert len(marching_squares(field, valid, 2.5)) == 1


@pytest.mark.parametrize("use_matplotlib", [False, True])
def test_draw_prediction_colours_parts_and_skips_low_scores(use_matplotlib):
    if use_matplotlib:
        pytest.importorskip("matplotlib")
    image = np.full((40, 40, 3), 128, np.uint8)
    charts = [_chart(20, 20, 24, 128), _chart(20, 20, 1, 128)]
    boxes = np.array([[5, 5, 25, 25], [15, 15, 35, 35]], np.float32)
    out = draw_prediction(image, boxes, np.array([0.95, 0.3]), charts, 0.8, use_matplotlib)
    assert out.shape == image.shape
    inside = out[10:20, 10:20].reshape(-1, 3).astype(int)
    target = (0.7 * PART_COLORS[24] + 0.3 * 128).round()
    assert (np.abs(inside - target).sum(1) < 60).mean() > 0.3  # the rest: contour lines
    assert (out[30:34, 30:34] == 128).all()  # the 0.3 detection is not drawn


@pytest.mark.parametrize("use_matplotlib", [False, True])
def test_contours_of_a_large_chart_are_traced_on_a_subsampled_field(use_matplotlib, monkeypatch):
    """A chart larger than CONTOUR_FIELD_SIZE is contoured on a subsampled field: the lines land
    where the full-resolution ones do, and pixels away from the detection keep the photo."""
    if use_matplotlib:
        pytest.importorskip("matplotlib")
    from fnl_core import visualize

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(700, 600, 3), dtype=np.uint8)
    h, w = 600, 500
    chart = np.zeros((3, h, w), np.uint8)
    chart[0] = 5
    chart[1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    chart[2] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    boxes = np.array([[50, 60, 50 + w, 60 + h]], np.float32)

    def lines(field_size: int) -> np.ndarray:
        monkeypatch.setattr(visualize, "CONTOUR_FIELD_SIZE", field_size)
        parts_only = visualize.overlay_parts(
            image, iuv_image(image.shape[:2], boxes, [chart], np.ones(1))
        )
        drawn = draw_prediction(image, boxes, np.ones(1), [chart], 0.5, use_matplotlib)
        assert (drawn[:50] == image[:50]).all(), "pixels above the box changed"
        return (drawn != parts_only).any(-1)[70:650, 60:540]

    coarse, full = lines(visualize.CONTOUR_FIELD_SIZE), lines(4096)
    assert coarse.mean() > 0.005, "no contour lines drawn"
    near = np.zeros_like(full)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            near |= np.roll(np.roll(full, dy, 0), dx, 1)
    assert (coarse & near).sum() / coarse.sum() > 0.9


def test_draw_ground_truth_marks_boxes_and_points():
    image = np.zeros((32, 32, 3), np.uint8)
    masks = np.zeros((256, 256), np.uint8)
    masks[64:192, 64:192] = 2
    dp = DensePoseAnnotation(
        x=np.array([128.0]),
        y=np.array([128.0]),
        i=np.array([5]),
        u=np.array([0.5]),
        v=np.array([0.5]),
        masks=masks,
    )
    ann = InstanceAnnotation(id=1, bbox_xywh=(4, 4, 16, 16), densepose=dp)
    out = draw_ground_truth(image, ImageRecord(1, "a.png", 32, 32, [ann]))
    assert out[4, 10].any()  # box outline
    assert tuple(out[12, 12]) == tuple(PART_COLORS[5])  # the point
    assert out[9, 14].any() and not out[28, 28].any()  # mask inside, nothing outside


def test_loss_curve_png_with_and_without_matplotlib(tmp_path):
    lines = [{"iteration": i, "total_loss": 10.0 / i, "loss_a": 5.0 / i} for i in range(1, 6)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    _plot_with_pil(
        {"total_loss": [(r["iteration"], r["total_loss"]) for r in lines]}, tmp_path / "pil.png"
    )
    assert Image.open(tmp_path / "pil.png").size == (800, 500)
    assert plot_loss_curve(path, tmp_path / "curve.png") == tmp_path / "curve.png"
    assert (tmp_path / "curve.png").stat().st_size > 1000
    path.write_text("")
    assert plot_loss_curve(path, tmp_path / "none.png") is None
