#!/usr/bin/env python3
"""Texture error and speed of fnl_core.texture on toy humans, where the truth is known (prints
JSON; docs/texture.md).

* ``gt_iuv_unshaded`` / ``gt_iuv_shaded``: each person (≥ 300 visible pixels) of ``--images``
  toy scenes, extracted with the ground-truth IUV chart, against the person's albedo atlas
  (:func:`fnl_data.toy.texture.person_atlas`): mean absolute RGB error over covered texels
  (per person, then averaged) and coverage (fraction of the atlas's texels).
* ``model_single``: the same with the shipped model's charts on the shaded scenes (each person
  matched to the best-scoring detection with box IoU ≥ 0.5), skipped with ``--no-model``.
* ``turning_clip_*``: a 30-frame toy clip of one person turning on the spot, accumulated over
  frames (:func:`fnl_core.texture.accumulate`), with ground-truth charts on unshaded frames and
  with the model on shaded frames (its best track): covered texels against the best single
  frame.
* ``speed``: extraction per person at 320×240 on one thread (median over the persons of the
  unshaded scenes), painting, and as the reference in the same run the full-image IUV raster
  of ``fnl predict`` (:func:`fnl_core.visualize.iuv_image`) of the same charts.

    uv run python benchmarks/bench_texture.py [--images 20] [--tile 200] [--no-model]
        [--pictures DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread (numpy's BLAS is not used anyway)

import argparse
import json
import time
from typing import Any

import numpy as np

from fnl_core.texture import (
    Chart,
    IoUTracker,
    TextureAccumulator,
    apply_texture,
    box_iou,
    extract_texture,
)
from fnl_core.visualize import iuv_image
from fnl_data.toy.generate import ToySettings, render_sample, sample_rng
from fnl_data.toy.texture import person_atlas, person_charts, turning_person_clip


def _error(atlas: np.ndarray, coverage: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    covered = coverage > 0
    if not covered.any():
        return float("nan"), 0.0
    err = np.abs(atlas[covered].astype(np.int64) - truth[covered].astype(np.int64)).mean()
    return float(err), float(covered.mean())


def _summary(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    errs = [e for e, _ in pairs if e == e]
    return {
        "persons": len(pairs),
        "mae_grey_levels": round(float(np.mean(errs)), 2) if errs else None,
        "mae_worst_person": round(float(np.max(errs)), 2) if errs else None,
        "coverage_fraction": round(float(np.mean([c for _, c in pairs])), 5),
    }


def _box(chart: Chart) -> tuple[float, float, float, float]:
    h, w = chart.iuv.shape[1:]
    return (chart.x, chart.y, chart.x + w, chart.y + h)


def _scenes(n: int, shading: bool):
    return [render_sample(sample_rng(0, "texture", i), ToySettings(), shading) for i in range(n)]


def gt_iuv(scenes, tile: int) -> dict[str, Any]:
    pairs = []
    for s in scenes:
        for j, chart in person_charts(s, 300).items():
            atlas, coverage = extract_texture(s.image, chart, tile=tile)
            pairs.append(_error(atlas, coverage, person_atlas(s.looks[j], tile)))
    return _summary(pairs)


def _detections(predictor: Any, image: np.ndarray) -> list[tuple[tuple, Chart, float]]:
    from fnl_core.texture import chart_of
    from fnl_detector.results import to_coco_results

    result = predictor(image, iuv=True)
    out = []
    for entry in to_coco_results(0, result):
        x, y, w, h = entry["bbox"]
        out.append(((x, y, x + w, y + h), chart_of(entry), entry["score"]))
    return out


def model_single(predictor: Any, scenes, tile: int, min_score: float) -> dict[str, Any]:
    pairs, missed = [], 0
    for s in scenes:
        found = [d for d in _detections(predictor, s.image) if d[2] > min_score]
        for j, gt in person_charts(s, 300).items():
            ious = box_iou([_box(gt)], [b for b, _, _ in found])[0] if found else np.zeros(0)
            hits = [k for k in range(len(found)) if ious[k] >= 0.5]
            if not hits:
                missed += 1
                continue
            best = max(hits, key=lambda k: found[k][2])
            atlas, coverage = extract_texture(s.image, found[best][1], tile=tile)
            pairs.append(_error(atlas, coverage, person_atlas(s.looks[j], tile)))
    return {**_summary(pairs), "persons_missed": missed}


def turning_clip(clip, tile: int, predictor: Any = None, min_score: float = 0.8):
    truth = person_atlas(clip[0].looks[0], tile)
    tracks: dict[int, TextureAccumulator] = {}
    single: dict[int, list[tuple[float, float]]] = {}
    tracker = IoUTracker(0.3)
    for s in clip:
        if predictor is None:
            found = [(_box(c), c) for c in person_charts(s).values()]
        else:
            found = [(b, c) for b, c, sc in _detections(predictor, s.image) if sc > min_score]
        for track, (_, chart) in zip(tracker.update([b for b, _ in found]), found, strict=True):
            atlas, coverage = extract_texture(s.image, chart, tile=tile)
            tracks.setdefault(track, TextureAccumulator()).add(atlas, coverage)
            single.setdefault(track, []).append(_error(atlas, coverage, truth))
    main = max(tracks, key=lambda t: tracks[t].frames)
    atlas, coverage = tracks[main].result()
    err, cov = _error(atlas, coverage, truth)
    best = max(c for _, c in single[main])
    return {
        "frames": len(clip),
        "tracks": len(tracks),
        "main_track_frames": tracks[main].frames,
        "accumulated_mae_grey_levels": round(err, 2),
        "accumulated_coverage_fraction": round(cov, 5),
        "best_single_frame_coverage_fraction": round(best, 5),
        "single_frame_mae_grey_levels_mean": round(
            float(np.nanmean([e for e, _ in single[main]])), 2
        ),
        "coverage_ratio_vs_best_frame": round(cov / best, 2),
    }, (atlas, coverage)


def speed(scenes, tile: int, repeat: int = 5) -> dict[str, Any]:
    charts = [(s, c) for s in scenes for c in person_charts(s, 300).values()]
    atlas = person_atlas(scenes[0].looks[0], tile)

    def timed(fn) -> float:
        times = []
        for s, c in charts:
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn(s, c)
                best = min(best, time.perf_counter() - t0)
            times.append(best)
        return float(np.median(times)) * 1e3

    extract = timed(lambda s, c: extract_texture(s.image, c, tile=tile))
    paint = timed(lambda s, c: apply_texture(s.image, c, atlas))
    reference = timed(lambda s, c: iuv_image((240, 320), np.array([_box(c)]), [c.iuv], [1.0]))
    return {
        "persons": len(charts),
        "image": "320x240",
        "tile": tile,
        "threads": 1,
        "extract_ms_median": round(extract, 2),
        "apply_ms_median": round(paint, 2),
        "reference_iuv_image_ms_median": round(reference, 3),
        "extract_over_reference": round(extract / reference, 1),
    }


def _pictures(folder: str, clip, acc: tuple, predictor: Any, tile: int) -> None:
    """Small pictures for docs/texture.md: true atlas, accumulated atlas and its coverage
    (tile ``tile``), and a shaded clip frame retextured with another toy person's atlas."""
    from pathlib import Path

    from fnl_core.imaging import save_png
    from fnl_core.texture import to_rgba

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_png(person_atlas(clip[0].looks[0], tile), out / "true_atlas.png")
    atlas, coverage = acc
    rgba = to_rgba(atlas, coverage)
    rgba[coverage == 0, :3] = 255  # white where nothing was seen
    save_png(rgba[..., :3], out / "accumulated_atlas.png")
    grey = np.where(coverage > 0, 255 - np.clip(coverage / coverage.max() * 200, 0, 200), 0)
    save_png(np.repeat(grey.astype(np.uint8)[..., None], 3, -1), out / "coverage.png")
    other = render_sample(sample_rng(0, "texture", 5), ToySettings()).looks[0]
    frame = clip[len(clip) // 8].image
    if predictor is not None:
        charts = [c for _, c, sc in _detections(predictor, frame) if sc > 0.8]
    else:
        charts = list(person_charts(clip[len(clip) // 8]).values())
    painted = apply_texture(frame, charts, person_atlas(other, tile))
    save_png(np.concatenate([frame, painted], axis=1), out / "retextured_frame.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--tile", type=int, default=200)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--model", default="mobile_parsing_rcnn_b_toy")
    parser.add_argument("--no-model", action="store_true")
    parser.add_argument("--min-score", type=float, default=0.8)
    parser.add_argument("--pictures", help="write the docs pictures (tile 64) here")
    args = parser.parse_args()
    unshaded, shaded = _scenes(args.images, False), _scenes(args.images, True)
    report: dict[str, Any] = {
        "images": args.images,
        "tile": args.tile,
        "gt_iuv_unshaded": gt_iuv(unshaded, args.tile),
        "gt_iuv_shaded": gt_iuv(shaded, args.tile),
    }
    clip_flat = turning_person_clip(args.frames, shading=False)
    clip = turning_person_clip(args.frames, shading=True)
    report["turning_clip_gt_iuv_unshaded"], _ = turning_clip(clip_flat, args.tile)
    predictor = None
    if not args.no_model:
        from fnl_detector.loading import resolve_model
        from fnl_detector.predictor import Predictor

        resolved = resolve_model(model=args.model)
        predictor = Predictor(resolved.spec, resolved.weights, device="cpu")
        report["model"] = args.model
        report["model_single"] = model_single(predictor, shaded, args.tile, args.min_score)
        report["turning_clip_model_shaded"], _ = turning_clip(
            clip, args.tile, predictor, args.min_score
        )
    report["speed"] = speed(unshaded, args.tile)
    print(json.dumps(report, indent=1))
    if args.pictures:
        small = 64
        _, acc_small = turning_clip(clip if predictor else clip_flat, small, predictor)
        _pictures(args.pictures, clip, acc_small, predictor, small)


if __name__ == "__main__":
    main()
