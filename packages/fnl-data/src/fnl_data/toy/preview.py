"""A picture of a toy sample next to its ground truth (boxes + points, I, U, V), PIL only.

python -m fnl_data.toy.preview docs/toy_sample.png [--seed 0] [--index 0]
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fnl_data.toy.generate import ToySample, ToySettings, render_sample, sample_rng

_PALETTE = np.array(
    [[0, 0, 0]]
    + [
        [int(255 * c) for c in colorsys.hsv_to_rgb((k * 7 % 24) / 24, 0.85, 0.95)]
        for k in range(24)
    ],
    dtype=np.uint8,
)
_RAMP = np.array([[48, 18, 59], [70, 130, 240], [30, 220, 170], [170, 240, 50], [250, 160, 30],
                  [180, 20, 10]], dtype=np.float32)  # fmt: skip


def _ramp(x: np.ndarray) -> np.ndarray:
    pos = np.clip(x, 0, 1) * (len(_RAMP) - 1)
    lo = np.minimum(pos.astype(int), len(_RAMP) - 2)
    t = (pos - lo)[..., None]
    return (_RAMP[lo] * (1 - t) + _RAMP[lo + 1] * t).astype(np.uint8)


def preview(sample: ToySample) -> np.ndarray:
    """H×5W×3 picture: image, image with boxes and points (coloured by I), I, U, V."""
    fg = sample.chart > 0
    panels = [sample.image]
    annotated = Image.fromarray(sample.image.copy())
    draw = ImageDraw.Draw(annotated)
    for ann in sample.annotations:
        x, y, w, h = ann.bbox_xywh
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(255, 255, 255))
        dp = ann.densepose
        if dp is None:
            continue
        for px, py, i in zip(x + dp.x * w / 256, y + dp.y * h / 256, dp.i, strict=True):
            draw.ellipse((px - 1.5, py - 1.5, px + 1.5, py + 1.5), fill=tuple(_PALETTE[i].tolist()))
    panels.append(np.asarray(annotated))
    panels.append(_PALETTE[sample.chart])
    for uv in (sample.u, sample.v):
        panel = _ramp(uv)
        panel[~fg] = 0
        panels.append(panel)
    gap = np.full((sample.image.shape[0], 4, 3), 255, dtype=np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [gap, p]
    return np.concatenate(out, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description="Save a toy sample next to its I/U/V ground truth.")
    ap.add_argument("output", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--rows", type=int, default=2, help="samples stacked vertically")
    args = ap.parse_args()
    settings = ToySettings()
    rows = [
        preview(render_sample(sample_rng(args.seed, "train", args.index + k), settings))
        for k in range(args.rows)
    ]
    gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    stacked = [rows[0]]
    for r in rows[1:]:
        stacked += [gap, r]
    Image.fromarray(np.concatenate(stacked, axis=0)).save(args.output)


if __name__ == "__main__":
    main()
