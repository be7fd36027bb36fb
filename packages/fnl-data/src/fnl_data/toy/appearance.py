"""Colours and textures of the toy humans and their backgrounds.

Parts share clothing colours (shirt on the torso and arms, trousers on the legs, skin on hands
and head...), so a part cannot be recognised from its colour alone; a faint UV-dependent
pattern per garment, Lambert shading, hair on the back of the head and two eyes give the cues
that make charts, U/V and the facing direction learnable.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fnl_data.toy.body import NUM_PARTS

_SKIN = np.array(
    [[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
     [92, 58, 34]], dtype=np.float32,
)  # fmt: skip
_HAIR = np.array([[20, 15, 10], [60, 40, 20], [120, 80, 40], [200, 170, 110], [90, 90, 90]],
                 dtype=np.float32)  # fmt: skip

# Garment of each part (order of body.PARTS): 0 skin, 1 shirt, 2 trousers, 3 shoes,
# 4 sleeves (shirt or skin), 5 lower legs (trousers or skin).
_GARMENT = np.array([1, 0, 0, 3, 3, 2, 2, 5, 5, 1, 1, 4, 4, 0])
_HEAD = NUM_PARTS - 1


def person_appearance(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-part base colour (14×3), pattern kind/frequency/amplitude, hair colour, skin."""
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.1)
    shirt = rng.uniform(20, 235, 3)
    trousers = rng.uniform(20, 200, 3)
    shoes = rng.uniform(10, 120, 3)
    bare_arms = rng.random() < 0.4
    bare_legs = rng.random() < 0.3
    sleeves = skin if bare_arms else shirt
    lower_legs = skin if bare_legs else trousers
    garments = np.stack([skin, shirt, trousers, shoes, sleeves, lower_legs])
    kinds = rng.integers(0, 4, size=6)  # per garment: plain, V stripes, U stripes, checks
    kinds[0] = 0
    kinds[4] = 0 if bare_arms else kinds[1]
    kinds[5] = 0 if bare_legs else kinds[2]
    freq = rng.integers(2, 6, size=6).astype(np.float32)
    amp = rng.uniform(0.08, 0.22, size=6).astype(np.float32)
    freq[4], amp[4], freq[5], amp[5] = freq[1], amp[1], freq[2], amp[2]
    g = _GARMENT
    return {
        "color": garments[g].astype(np.float32),
        "kind": kinds[g],
        "freq": freq[g],
        "amp": amp[g],
        "hair": _HAIR[rng.integers(len(_HAIR))],
    }


def albedo(
    part: np.ndarray,
    local: np.ndarray,
    v: np.ndarray,
    person: np.ndarray,
    looks: list[dict[str, np.ndarray]],
) -> np.ndarray:
    """Unshaded RGB (N×3 float) of N body points from their part, unit-sphere coordinates and V:
    the garment colour, its UV-dependent pattern, hair and eyes on the head."""
    color = np.stack([looks[j]["color"] for j in range(len(looks))])[person, part]
    kind = np.stack([looks[j]["kind"] for j in range(len(looks))])[person, part]
    freq = np.stack([looks[j]["freq"] for j in range(len(looks))])[person, part]
    amp = np.stack([looks[j]["amp"] for j in range(len(looks))])[person, part]
    phi = np.arctan2(local[:, 1], local[:, 0])
    stripes_v = np.sin(2 * np.pi * freq * v)
    stripes_u = np.sin(freq * phi)
    checks = np.sign(stripes_v * np.sin(freq * 2 * phi)) * 0.8
    pattern = np.select([kind == 1, kind == 2, kind == 3], [stripes_v, stripes_u, checks], 0.0)
    rgb = color * (1 + amp * pattern)[:, None]
    head = part == _HEAD
    if head.any():
        p = local[head]  # head frame: e1 forward, e2 left, e3 up
        hair = (p[:, 2] > 0.45) | ((p[:, 0] < -0.1) & (p[:, 2] > -0.55))
        eyes = (p[:, 0] > 0.75) & (np.abs(np.abs(p[:, 1]) - 0.35) < 0.13)
        eyes &= np.abs(p[:, 2] - 0.18) < 0.12
        hair_rgb = np.stack([looks[j]["hair"] for j in range(len(looks))])[person[head]]
        head_rgb = rgb[head]
        head_rgb[hair] = hair_rgb[hair]
        head_rgb[eyes] = 25.0
        rgb[head] = head_rgb
    return rgb


def shade_people(
    part: np.ndarray,
    local: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    normal: np.ndarray,
    person: np.ndarray,
    looks: list[dict[str, np.ndarray]],
    light: np.ndarray,
    rng: np.random.Generator,
    shading: bool = True,
) -> np.ndarray:
    """RGB (N×3 float) of N visible body pixels from their part, surface coordinates, normal:
    the :func:`albedo` under Lambert shading plus sensor noise; ``shading=False`` gives the
    albedo itself (the noise is still drawn, so the generator's later draws do not change)."""
    rgb = albedo(part, local, v, person, looks)
    lambert = np.clip(normal @ light, 0, 1)
    facing = np.clip(-normal[:, 2], 0, 1)
    shade = 0.3 + 0.45 * lambert + 0.35 * facing
    noise = rng.normal(0, 4, size=rgb.shape)
    if not shading:
        return rgb
    rgb = rgb * shade[:, None] + noise
    return rgb


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Textured background: smooth coloured noise, a gradient and a few distractor shapes."""
    base = rng.uniform(30, 220, 3).astype(np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = base
    yy = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    img += yy * rng.uniform(-40, 40, 3).astype(np.float32)
    for cells, amp in ((4, 45.0), (16, 20.0)):
        shape = (cells * height // width + 2, cells + 2)
        noise = rng.normal(0, 1, (*shape, 1)) + 0.6 * rng.normal(0, 1, (*shape, 3))
        noise = (np.clip(noise * 40 + 128, 0, 255)).astype(np.uint8)
        up = Image.fromarray(noise).resize((width, height), Image.BILINEAR)
        img += (np.asarray(up, dtype=np.float32) - 128) / 40 * amp
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 6)):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        fill = tuple(int(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
        else:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
    return np.asarray(canvas, dtype=np.float32)
