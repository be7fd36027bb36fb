"""Ground truth for textures on toy humans (docs/texture.md).

The toy generator paints each garment with a UV-dependent pattern, so each person has a true
albedo atlas in the DensePose convention (:mod:`fnl_core.texture`): :func:`person_atlas`
evaluates the generator's own colour function (:func:`fnl_data.toy.appearance.albedo`) at the
surface point of every texel. :func:`person_charts` gives each rendered person's ground-truth
IUV chart (quantised as model charts are), and :func:`turning_person_clip` renders one person
turning on the spot, for accumulation over frames. ``render_sample(..., shading=False)``
renders scenes whose body pixels are the albedo itself.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fnl_core.densepose import NUM_FINE_CHARTS
from fnl_core.texture import DEFAULT_TILE, Chart, atlas_shape
from fnl_data.toy.appearance import albedo, person_appearance
from fnl_data.toy.body import chart_to_local
from fnl_data.toy.generate import _BODY_HEIGHT, ToySample, ToySettings, render_people
from fnl_data.toy.render import BODY_TO_CAMERA, pose_body, rotation, sample_pose

__all__ = ["person_atlas", "person_charts", "turning_person_clip"]


def person_atlas(look: dict[str, np.ndarray], tile: int = DEFAULT_TILE) -> np.ndarray:
    """The albedo atlas (``6·tile × 4·tile × 3`` uint8) of a person's appearance (one entry
    of :attr:`ToySample.looks`), quantised as the renderer quantises pixels (clip, truncate).
    Every texel holds texture."""
    height, width = atlas_shape(tile)
    rows, cols = np.mgrid[0:height, 0:width]
    part = (cols // tile) * 6 + rows // tile + 1
    u = (cols % tile) / (tile - 1)
    v = 1.0 - (rows % tile) / (tile - 1)
    body_part, local = chart_to_local(part.ravel(), u.ravel(), v.ravel())
    person = np.zeros(len(body_part), dtype=np.int64)
    rgb = albedo(body_part, local, v.ravel(), person, [look])
    return np.clip(rgb, 0, 255).astype(np.uint8).reshape(height, width, 3)


def person_charts(sample: ToySample, min_pixels: int = 1) -> dict[int, Chart]:
    """Ground-truth chart of each person of a rendered sample with at least ``min_pixels``
    visible pixels, keyed by person index: the box of their visible pixels, I = the fine chart,
    U and V quantised to uint8 as model charts are (``clip(255·U)``, truncated)."""
    out: dict[int, Chart] = {}
    for j in np.unique(sample.person[sample.person >= 0]).tolist():
        vis = sample.person == j
        rows, cols = np.nonzero(vis)
        if len(rows) < min_pixels:
            continue
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        sub = vis[y0:y1, x0:x1]
        iuv = np.zeros((3, y1 - y0, x1 - x0), dtype=np.uint8)
        labels = np.clip(sample.chart[y0:y1, x0:x1], 0, NUM_FINE_CHARTS)
        iuv[0] = np.where(sub, labels, 0)
        for k, field in ((1, sample.u), (2, sample.v)):
            quant = np.clip(field[y0:y1, x0:x1] * np.float32(255), 0, 255).astype(np.uint8)
            iuv[k] = np.where(sub, quant, 0)
        out[int(j)] = Chart(int(x0), int(y0), iuv)
    return out


def turning_person_clip(
    frames: int = 30,
    seed: int = 0,
    settings: ToySettings | None = None,
    shading: bool = True,
    turns: float = 1.0,
) -> list[ToySample]:
    """One person turning on the spot (``turns`` full turns about the vertical axis over
    ``frames`` frames) in front of a fixed background, light and camera; the pose and
    appearance are drawn from ``seed``. ``ToySample.looks[0]`` is the person's appearance."""
    s = replace(settings or ToySettings(), min_people=1, max_people=1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 26]))
    focal = s.width * 1.1
    scale = rng.uniform(0.9, 1.05)
    screen_h = 0.85 * s.height
    z = focal * _BODY_HEIGHT * scale / screen_h
    root = np.array([0.0, 0.095 * scale, z])  # the body centred in the frame
    pose = sample_pose(rng)
    look = person_appearance(rng)
    radius_scale = np.ones((14, 3))
    radius_scale[:, :2] = rng.uniform(0.9, 1.1)
    scene_seed = int(rng.integers(2**31))
    clip = []
    for k in range(frames):
        yaw = 2 * np.pi * turns * k / frames
        body = pose_body(pose, BODY_TO_CAMERA @ rotation(0.0, 0.0, yaw), root, scale, radius_scale)
        frame_rng = np.random.default_rng(scene_seed)  # same background, light and noise
        clip.append(render_people(frame_rng, s, focal, [{"body": body, "look": look}], shading))
    return clip
