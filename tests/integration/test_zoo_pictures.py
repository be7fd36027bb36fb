"""Pictures of what zoo models predict beyond charts (fnl_core.visualize, torch-free):
per-pixel confidences and CSE closest-vertex maps. Pixels are checked in the lower half of
each box, away from the score label drawn at its top-left corner."""

from __future__ import annotations

import numpy as np
import pytest

from fnl_core.visualize import (
    colormap,
    draw_confidence,
    draw_vertices,
    vertex_colors_from_positions,
)

IMAGE = np.full((60, 90, 3), 100, dtype=np.uint8)
BOXES = np.array([[2.0, 3.0, 42.0, 43.0], [50.0, 1.0, 80.0, 41.0]])
SCORES = np.array([0.95, 0.5])


def test_confidence_picture_paints_the_masked_pixels_of_kept_detections():
    sigma = [np.linspace(0, 1, 1600).reshape(40, 40), np.ones((40, 30))]
    mask = np.zeros((40, 40), dtype=bool)
    mask[20:36, 4:36] = True
    out = draw_confidence(IMAGE, BOXES, SCORES, sigma, [mask, np.ones((40, 30), bool)], alpha=1.0)
    assert out.shape == IMAGE.shape and out.dtype == np.uint8
    inside = out[3 + 20 : 3 + 36, 2 + 4 : 2 + 36]
    assert not (inside == 100).all(axis=-1).any()  # every masked pixel painted
    assert (out[3 + 38, 2 + 20] == 100).all()  # outside the mask: untouched
    assert (out[30, 65] == 100).all()  # detection 1 scores below min_score
    # fixed range: value 1 -> the colormap's high end
    full = draw_confidence(
        IMAGE, BOXES[:1], SCORES[:1], [np.ones((40, 40))], value_range=(0, 1), alpha=1.0
    )
    assert (full[3 + 30, 2 + 20] == colormap(np.array(1.0))).all()


def test_vertex_picture_colours_pixels_by_their_vertex():
    vertices = np.zeros((40, 40), dtype=np.int64)
    vertices[:, 20:] = 2
    mask = np.zeros((40, 40), dtype=bool)
    mask[20:38, 2:38] = True
    palette = vertex_colors_from_positions(np.array([[0, 0, 0], [1, 0, 0], [1, 1, 1]], float))
    assert palette.tolist() == [[0, 0, 0], [255, 0, 0], [255, 255, 255]]
    out = draw_vertices(IMAGE, BOXES[:1], SCORES[:1], [vertices], [mask], palette, alpha=1.0)
    assert (out[3 + 30, 2 + 10] == 0).all()  # vertex 0: black
    assert (out[3 + 30, 2 + 30] == 255).all()  # vertex 2: white
    assert (out[3 + 39, 2 + 10] == 100).all()  # off the mask: untouched
    # without colours the index goes through the colormap
    by_index = draw_vertices(
        IMAGE, BOXES[:1], SCORES[:1], [vertices], [mask], num_vertices=3, alpha=1.0
    )
    assert (by_index[3 + 30, 2 + 30] == colormap(np.array(1.0))).all()
    with pytest.raises(ValueError, match="vertex_colors has 2 colours"):
        draw_vertices(IMAGE, BOXES[:1], SCORES[:1], [vertices], [mask], palette[:2])
