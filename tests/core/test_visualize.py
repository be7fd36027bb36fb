"""fnl_core.visualize: boxes and labels scale with the picture (issue #24, item 6)."""

from __future__ import annotations

import numpy as np
import pytest

from fnl_core.visualize import draw_prediction


def _red(picture: np.ndarray) -> np.ndarray:
    return (picture[..., 0] == 255) & (picture[..., 1] == 64) & (picture[..., 2] == 64)


@pytest.mark.parametrize(("shape", "line"), [((480, 640), (1, 2)), ((4000, 6000), (6, 12))])
def test_box_lines_and_labels_scale_with_the_image(shape, line):
    h, w = shape
    image = np.zeros((h, w, 3), np.uint8)
    box = np.array([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]], np.float32)
    chart = np.zeros((3, h // 2, w // 2), np.uint8)  # no parts: only the box and its label
    picture = draw_prediction(image, box, np.array([0.99]), [chart], 0.5, use_matplotlib=False)
    red = _red(picture)
    row = red[h // 2, : w // 2]  # through the left edge, away from the label
    assert line[0] <= row.sum() < line[1], row.sum()
    x0, y0 = int(w * 0.25), int(h * 0.25)
    # the label's ink, inside the box under its top edge
    ink = picture[..., 0] > 0  # antialiased glyphs: any red on the black image
    label = ink[y0 + line[0] + 1 : y0 + h // 4, x0 + line[0] + 1 : x0 + w // 4]
    rows = np.flatnonzero(label.any(axis=1))
    assert rows.size, "no label drawn"
    assert rows[-1] - rows[0] + 1 >= 5 * line[0], rows[-1] - rows[0] + 1
