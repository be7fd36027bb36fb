"""The output folder of fnl predict / fnl run: the caller's IUV raster is used as given, PNGs
are lossless."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from fnl_core.imaging import save_png
from fnl_core.prediction_writer import PredictionWriter
from fnl_core.visualize import iuv_image


def _prediction():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 45, 55], [30, 10, 70, 40], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.95, 0.9, 0.2], np.float32)
    charts = []
    for x0, y0, x1, y1 in boxes.astype(int):
        chart = rng.integers(0, 256, size=(3, y1 - y0, x1 - x0), dtype=np.uint8)
        chart[0] = rng.integers(0, 25, size=chart.shape[1:])
        charts.append(chart)
    return image, boxes, scores, charts


def test_a_given_iuv_raster_gives_the_same_outputs(tmp_path):
    image, boxes, scores, charts = _prediction()
    keep = scores > 0.5
    raster = iuv_image(
        image.shape[:2], boxes[keep], [c for c, k in zip(charts, keep) if k], scores[keep]
    )
    outputs = {}
    for name, given in (("computed", None), ("given", raster)):
        writer = PredictionWriter(tmp_path / name, min_score=0.5)
        assert writer.add("x.png", "x", image, boxes, scores, charts, iuv=given) == 2
        writer.finish()
        outputs[name] = [
            np.asarray(Image.open(tmp_path / name / f"x_{kind}.png"))
            for kind in ("iuv", "densepose")
        ]
        outputs[name].append(json.loads((tmp_path / name / "results.json").read_text()))
    assert np.array_equal(outputs["given"][0], raster)
    assert np.array_equal(outputs["given"][0], outputs["computed"][0])
    assert np.array_equal(outputs["given"][1], outputs["computed"][1])
    assert outputs["given"][2] == outputs["computed"][2] and len(outputs["given"][2]) == 3


def test_save_png_is_lossless(tmp_path):
    array = np.random.default_rng(2).integers(0, 256, size=(31, 17, 3), dtype=np.uint8)
    save_png(array, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), array)
