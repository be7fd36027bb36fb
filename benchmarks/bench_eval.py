#!/usr/bin/env python3
"""Speed of the fnl-eval DensePose evaluator on synthetic data (prints JSON).

1,000 GT persons × 100 points on 250 images, one jittered detection per person plus one false
positive per image, evaluated on a synthetic 24-chart surface (20 × 20 UV grid per chart,
geodesic = planar distance). Reports the wall time of each metric and compares the vectorized
GPS similarity stage with a straightforward per-pair loop (the reference) on the same data,
checking that both give the same values.

    uv run python benchmarks/bench_eval.py [--images 250] [--persons 4] [--points 100]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from fnl_core.densepose import FINE_TO_EVAL_GROUP, SMPL_KAPPA
from fnl_eval.evaluator import DensePoseEvaluator
from fnl_eval.results import decode_iuv, make_result

GRID = 20
SIDE = 0.4
H, W = 240, 320


class PlanarCharts:
    """24 flat charts, a GRID × GRID vertex grid each, 10 m apart."""

    def __init__(self) -> None:
        g = np.linspace(0, 1, GRID)
        uu, vv = np.meshgrid(g, g, indexing="ij")
        charts = np.repeat(np.arange(1, 25), GRID * GRID)
        self.uv_u, self.uv_v = np.tile(uu.ravel(), 24), np.tile(vv.ravel(), 24)
        self.uv_part, self.uv_to_mesh = charts, np.arange(len(charts))
        self.kappa = np.asarray(SMPL_KAPPA)
        self.part_group = np.asarray(FINE_TO_EVAL_GROUP)
        self.xyz = np.stack([self.uv_u * SIDE, self.uv_v * SIDE, charts * 10.0], 1)

    def geodesic(self, a: Any, b: Any) -> np.ndarray:
        return np.linalg.norm(self.xyz[np.asarray(a)] - self.xyz[np.asarray(b)], axis=-1)


def synthetic(images: int, persons: int, points: int, seed: int = 0) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    anns, results = [], []
    for img in range(1, images + 1):
        for _ in range(persons):
            w, h = rng.uniform(40, 110), rng.uniform(60, 140)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            ann = {
                "id": len(anns) + 1, "image_id": img, "category_id": 1, "iscrowd": 0,
                "bbox": [x, y, w, h], "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                "dp_x": rng.uniform(0, 255, points).tolist(),
                "dp_y": rng.uniform(0, 255, points).tolist(),
                "dp_I": rng.integers(1, 25, points).astype(float).tolist(),
                "dp_U": rng.uniform(0, 1, points).tolist(),
                "dp_V": rng.uniform(0, 1, points).tolist(),
            }  # fmt: skip
            anns.append(ann)
            dbox = [x + rng.normal(0, 3), y + rng.normal(0, 3), w, h]
            dh, dw = max(int(dbox[3]), 1), max(int(dbox[2]), 1)
            # smooth like a real prediction: charts in 16-px blocks, U/V ramps
            iuv = np.empty((3, dh, dw), np.uint8)
            blocks = rng.integers(0, 25, (dh // 16 + 1, dw // 16 + 1))
            iuv[0] = np.kron(blocks, np.ones((16, 16), int))[:dh, :dw]
            iuv[1] = np.linspace(0, 255, dw).astype(np.uint8)[None]
            iuv[2] = np.linspace(0, 255, dh).astype(np.uint8)[:, None]
            px = (np.asarray(ann["dp_x"]) * w / 255 + x - dbox[0]).astype(int)
            py = (np.asarray(ann["dp_y"]) * h / 255 + y - dbox[1]).astype(int)
            ok = (px >= 0) & (py >= 0) & (px < dw) & (py < dh) & (rng.random(points) < 0.8)
            noise = rng.normal(0, 0.05, (2, points))
            iuv[0, py[ok], px[ok]] = np.asarray(ann["dp_I"])[ok]
            for c, key in ((1, "dp_U"), (2, "dp_V")):
                val = np.clip(np.asarray(ann[key]) + noise[c - 1], 0, 1) * 255
                iuv[c, py[ok], px[ok]] = val[ok].astype(np.uint8)
            results.append(make_result(img, dbox, float(rng.uniform(0.3, 1)), iuv))
        fp = [rng.uniform(0, W - 50), rng.uniform(0, H - 80), 50.0, 80.0]
        results.append(make_result(img, fp, float(rng.uniform(0, 0.5)), np.ones((3, 80, 50), "u1")))
    gt = {"images": [{"id": i, "height": H, "width": W, "file_name": f"{i}.png"}
                     for i in range(1, images + 1)],
          "annotations": anns, "categories": [{"id": 1, "name": "person"}]}  # fmt: skip
    return gt, results


def reference_gps(surface: PlanarCharts, gt: dict, results: list) -> dict:
    """Per-pair loop: nearest vertex by cdist per point set, one pair at a time."""
    kappa = np.asarray(SMPL_KAPPA)[np.asarray(FINE_TO_EVAL_GROUP)]
    charts = {c: np.flatnonzero(surface.uv_part == c) for c in range(1, 25)}
    uv = np.stack([surface.uv_u, surface.uv_v], 1)

    def vertices(i, u, v):
        out = np.full(len(i), -1)
        for c, idx in charts.items():
            sel = i == c
            if sel.any():
                d = cdist(np.stack([u[sel], v[sel]], 1), uv[idx])
                out[sel] = surface.uv_to_mesh[idx[np.argmin(d, axis=1)]]
        return out

    by_image: dict[int, list] = {}
    for k, r in enumerate(results):
        by_image.setdefault(r["image_id"], []).append(k)
    out = {}
    for ann_list in _group(gt["annotations"]).items():
        img, anns = ann_list
        dets = sorted(by_image.get(img, []), key=lambda k: -results[k]["score"])[:20]
        mat = np.zeros((len(dets), len(anns)))
        for j, a in enumerate(anns):
            gx, gy, gw, gh = a["bbox"]
            gi = np.asarray(a["dp_I"]).astype(int)
            gv = vertices(gi, np.asarray(a["dp_U"]), np.asarray(a["dp_V"]))
            for i, k in enumerate(dets):
                dx, dy, dw, dh = results[k]["bbox"]
                iuv = decode_iuv(results[k]["densepose"])
                px = (np.asarray(a["dp_x"]) * gw / 255 + gx - dx).astype(int)
                py = (np.asarray(a["dp_y"]) * gh / 255 + gy - dy).astype(int)
                ok = (px >= 0) & (py >= 0) & (px < int(dw)) & (py < int(dh))
                pi = np.where(
                    ok, iuv[0, py.clip(0, iuv.shape[1] - 1), px.clip(0, iuv.shape[2] - 1)], 0
                )
                pu = iuv[1, py.clip(0, iuv.shape[1] - 1), px.clip(0, iuv.shape[2] - 1)] / 255.0
                pv = iuv[2, py.clip(0, iuv.shape[1] - 1), px.clip(0, iuv.shape[2] - 1)] / 255.0
                pvx = vertices(pi, pu, pv)
                d = np.where(pvx < 0, np.inf, surface.geodesic(gv, pvx.clip(0)))
                mat[i, j] = np.mean(np.exp(-(d**2) / (2 * kappa[gi] ** 2)))
        out[img] = mat
    return out


def _group(anns: list) -> dict:
    out: dict[int, list] = {}
    for a in anns:
        out.setdefault(a["image_id"], []).append(a)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=250)
    parser.add_argument("--persons", type=int, default=4)
    parser.add_argument("--points", type=int, default=100)
    args = parser.parse_args()
    surface = PlanarCharts()
    gt, results = synthetic(args.images, args.persons, args.points)
    report: dict[str, Any] = {
        "images": args.images, "instances": len(gt["annotations"]),
        "points_per_instance": args.points, "detections": len(results), "seconds": {},
    }  # fmt: skip
    t = time.perf_counter()
    evaluator = DensePoseEvaluator(surface, metrics=["gps"])
    report["seconds"]["surface_index"] = time.perf_counter() - t
    for metric in ("bbox", "segm", "gps", "gpsm"):
        ev = DensePoseEvaluator(surface, metrics=[metric])
        t = time.perf_counter()
        stats = ev.evaluate(gt, results)[metric]
        report["seconds"][metric] = round(time.perf_counter() - t, 3)
        report[f"{metric}_AP"] = round(stats["AP"], 4)
    t = time.perf_counter()
    fast = evaluator.similarities(gt, results, "gps")
    report["similarity_seconds_vectorized"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    ref = reference_gps(surface, gt, results)
    report["similarity_seconds_per_pair_loop"] = round(time.perf_counter() - t, 3)
    report["speedup"] = round(
        report["similarity_seconds_per_pair_loop"] / report["similarity_seconds_vectorized"], 1
    )
    report["max_abs_diff_vs_loop"] = float(
        max(np.abs(fast[img, 1] - ref[img]).max() for img in ref if (img, 1) in fast)
    )
    report["seconds"]["surface_index"] = round(report["seconds"]["surface_index"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
