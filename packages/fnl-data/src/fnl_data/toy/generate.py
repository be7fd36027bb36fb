"""Generating toy-human images with DensePose ground truth, and writing them as a COCO split.

Every image is a pure function of (settings, seed, split, index): its random generator is
seeded with ``SeedSequence([seed, crc32(split), index])``, so splits differ, a larger split
starts with the images of a smaller one, and images can be generated in any order or process.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fnl_core.densepose import FINE_TO_COARSE
from fnl_core.structures import DensePoseAnnotation, ImageRecord, InstanceAnnotation
from fnl_data.coco import write_densepose_coco
from fnl_data.masks import DP_MASK_SIZE, encode_rle
from fnl_data.toy.appearance import background, person_appearance, shade_people
from fnl_data.toy.body import local_to_chart
from fnl_data.toy.render import BODY_TO_CAMERA, pose_body, raycast, rotation, sample_pose

GENERATOR_VERSION = 1
"""Bumped whenever generated images or annotations change (part of the cache key)."""

_FINE_TO_COARSE = np.asarray(FINE_TO_COARSE, dtype=np.uint8)
_BODY_HEIGHT = 1.71


@dataclass(frozen=True)
class ToySettings:
    """What a toy image looks like (everything but the seed and the split)."""

    width: int = 320
    height: int = 240
    min_people: int = 1
    max_people: int = 4
    points_per_person: int = 100
    min_area: int = 30
    """Visible pixels below which a person gets no annotation at all."""
    min_densepose_area: int = 300
    """Visible pixels below which a person is a plain COCO person (box and mask, no dp_*)."""
    jpeg_quality: int = 90


@dataclass
class ToySample:
    """One generated image with its annotations and the dense ground truth it came from."""

    image: np.ndarray  # H×W×3 uint8
    annotations: list[InstanceAnnotation]
    person: np.ndarray  # H×W int, −1 = background, else index of the person
    chart: np.ndarray  # H×W int, fine chart 0..24
    u: np.ndarray  # H×W float32
    v: np.ndarray  # H×W float32
    looks: list[dict[str, np.ndarray]] | None = None
    """Appearance of each person (index as in ``person``): their albedo atlas is
    :func:`fnl_data.toy.texture.person_atlas` of it."""


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def _place_people(rng: np.random.Generator, s: ToySettings, focal: float) -> list[dict]:
    n = int(rng.integers(s.min_people, s.max_people + 1))
    people = []
    for _ in range(n):
        scale = rng.uniform(0.8, 1.1)
        screen_h = rng.uniform(0.3, 1.0) * s.height
        z = focal * _BODY_HEIGHT * scale / screen_h
        if people and rng.random() < 0.5:  # next to someone: more occlusion
            tx = people[rng.integers(len(people))]["tx"] + rng.normal(0, 0.12) * s.width
        else:
            tx = rng.uniform(0.1, 0.9) * s.width
        ty = s.height / 2 + rng.uniform(-0.15, 0.15) * s.height
        root_rot = BODY_TO_CAMERA @ rotation(
            rng.uniform(-0.2, 0.25), rng.uniform(-0.2, 0.2), rng.uniform(0, 2 * np.pi)
        )
        root = np.array([(tx - s.width / 2) * z / focal, (ty - s.height / 2) * z / focal, z])
        radius_scale = np.ones((14, 3))
        radius_scale[:, :2] = rng.uniform(0.85, 1.2)  # build of the person
        people.append(
            {
                "tx": tx,
                "body": pose_body(sample_pose(rng), root_rot, root, scale, radius_scale),
                "look": person_appearance(rng),
            }
        )
    return people


def render_sample(rng: np.random.Generator, s: ToySettings, shading: bool = True) -> ToySample:
    """Render one image and its per-person annotations (ids 1..n within the image).
    ``shading=False``: body pixels get their albedo (no light, no noise; the same random draws,
    so the scene and annotations are those of the shaded image)."""
    focal = s.width * rng.uniform(0.9, 1.4)
    people = _place_people(rng, s, focal)
    return render_people(rng, s, focal, people, shading)


def render_people(
    rng: np.random.Generator, s: ToySettings, focal: float, people: list[dict], shading: bool = True
) -> ToySample:
    """Render placed people (dicts with ``body``, a :class:`~fnl_data.toy.render.PosedBody`, and
    ``look``, a :func:`~fnl_data.toy.appearance.person_appearance`) over a random background."""
    centers = np.concatenate([p["body"].centers for p in people])
    axes = np.concatenate([p["body"].axes for p in people])
    radii = np.concatenate([p["body"].radii for p in people])
    zbuf = raycast(centers, axes, radii, s.height, s.width, focal)

    fg = zbuf.owner >= 0
    owner = zbuf.owner[fg]
    part = owner % 14
    person_of = owner // 14
    local = zbuf.local[fg].astype(np.float64)
    chart_f, u_f, v_f = local_to_chart(part, local)

    image = background(rng, s.height, s.width)
    normal = np.einsum("nij,nj->ni", axes[owner], local / radii[owner])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    light = rng.normal(0, 1, 3) + np.array([0.0, -1.5, -1.5])
    light /= np.linalg.norm(light)
    looks = [p["look"] for p in people]
    image[fg] = shade_people(
        part, local, u_f, v_f, normal, person_of, looks, light, rng, shading=shading
    )
    image = np.clip(image, 0, 255).astype(np.uint8)

    person = np.full((s.height, s.width), -1, dtype=np.int32)
    person[fg] = person_of
    chart = np.zeros((s.height, s.width), dtype=np.int64)
    chart[fg] = chart_f
    u = np.zeros((s.height, s.width), dtype=np.float32)
    v = np.zeros((s.height, s.width), dtype=np.float32)
    u[fg], v[fg] = u_f, v_f
    anns = _annotate(rng, s, person, chart, u, v, len(people))
    return ToySample(image, anns, person, chart, u, v, looks)


def _annotate(
    rng: np.random.Generator,
    s: ToySettings,
    person: np.ndarray,
    chart: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    n: int,
) -> list[InstanceAnnotation]:
    coarse = _FINE_TO_COARSE[chart]
    anns = []
    for j in range(n):
        vis = person == j
        rows, cols = np.nonzero(vis)
        area = len(rows)
        if area < s.min_area:
            continue
        x0, y0 = int(cols.min()), int(rows.min())
        w, h = int(cols.max()) + 1 - x0, int(rows.max()) + 1 - y0
        inst = InstanceAnnotation(
            id=len(anns) + 1,
            bbox_xywh=(float(x0), float(y0), float(w), float(h)),
            area=float(area),
            segmentation=encode_rle(vis),
        )
        if area >= s.min_densepose_area:
            grid = (np.arange(DP_MASK_SIZE) + 0.5) / DP_MASK_SIZE
            ys = (y0 + grid * h).astype(np.int64)[:, None]
            xs = (x0 + grid * w).astype(np.int64)[None, :]
            masks = np.where(vis[ys, xs], coarse[ys, xs], 0).astype(np.uint8)
            pick = rng.choice(area, size=min(s.points_per_person, area), replace=False)
            pr, pc = rows[pick], cols[pick]
            inst.densepose = DensePoseAnnotation(
                x=((pc + 0.5 - x0) * DP_MASK_SIZE / w).astype(np.float32),
                y=((pr + 0.5 - y0) * DP_MASK_SIZE / h).astype(np.float32),
                i=chart[pr, pc].astype(np.int64),
                u=u[pr, pc].astype(np.float32),
                v=v[pr, pc].astype(np.float32),
                masks=masks,
            )
        anns.append(inst)
    return anns


def settings_key(settings: ToySettings, seed: int) -> str:
    """Short hash naming the cache folder of these settings and seed."""
    blob = json.dumps({"v": GENERATOR_VERSION, "seed": seed, **asdict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_root() -> Path:
    """``$FNL_CACHE_DIR`` if set, else ``~/.cache/fnl``."""
    env = os.environ.get("FNL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fnl"


def _generate_one(args: tuple[ToySettings, int, str, int, Path]) -> ImageRecord:
    s, seed, split, index, folder = args
    sample = render_sample(sample_rng(seed, split, index), s)
    name = f"{split}/{index:06d}.jpg"
    Image.fromarray(sample.image).save(folder / name, quality=s.jpeg_quality)
    record = ImageRecord(index + 1, name, s.height, s.width, image_root=folder)
    for a in sample.annotations:
        a.id = (index + 1) * 100 + a.id
    record.annotations = sample.annotations
    return record


def generate_split(
    settings: ToySettings,
    seed: int,
    split: str,
    num_images: int,
    folder: Path,
    workers: int = 0,
) -> Path:
    """Write ``num_images`` JPEGs under ``folder/split/`` and ``folder/{split}_{n}.json``.

    Returns the JSON path; an existing JSON is reused (it is written last, atomically, so its
    presence means the split is complete). ``workers > 0`` uses a process pool.
    """
    folder = Path(folder)
    gt_json = folder / f"{split}_{num_images}.json"
    if gt_json.is_file():
        return gt_json
    (folder / split).mkdir(parents=True, exist_ok=True)
    jobs = [(settings, seed, split, k, folder) for k in range(num_images)]
    if workers > 0:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            records = pool.map(_generate_one, jobs, chunksize=8)
    else:
        records = [_generate_one(job) for job in jobs]
    write_densepose_coco(records, gt_json)
    (folder / "settings.json").write_text(
        json.dumps({"version": GENERATOR_VERSION, "seed": seed, **asdict(settings)}, indent=1)
    )
    return gt_json


__all__ = [
    "GENERATOR_VERSION",
    "ToySample",
    "ToySettings",
    "default_cache_root",
    "generate_split",
    "render_people",
    "render_sample",
    "sample_rng",
    "settings_key",
]
