"""GPS of single pairs against closed forms, and the nearest-UV-vertex lookup."""

from __future__ import annotations

import numpy as np
import pytest
from fnl_eval_fixtures import STEP, N, gt_json, perfect_iuv, person, point_pixels

from fnl_core.densepose import FINE_TO_EVAL_GROUP, SMPL_KAPPA
from fnl_eval.evaluator import DensePoseEvaluator
from fnl_eval.results import make_result
from fnl_eval.surface import SurfaceIndex

BOX = [30.0, 20.0, 80.0, 120.0]


def _gps(surface, ann, iuv, det_bbox=BOX):
    ev = DensePoseEvaluator(surface, metrics=["gps"])
    sims = ev.similarities(gt_json([ann]), [make_result(1, det_bbox, 0.9, iuv)], "gps")
    return float(sims[1, 1][0, 0])


def test_perfect_prediction_has_gps_one(surface):
    ann = person(1, 1, BOX, chart=2, n_points=20)
    assert _gps(surface, ann, perfect_iuv(ann)) == pytest.approx(1.0)


def test_points_moved_by_a_known_geodesic_distance_give_the_closed_form(surface):
    chart = 7  # upper leg: κ = 0.237
    ann = person(1, 1, BOX, chart=chart, n_points=16)
    ann["dp_U"] = [0.0] * 16  # U on the first grid column, so U + 2 steps stays on the chart
    iuv = perfect_iuv(ann)
    px, py = point_pixels(ann, BOX)
    moved = np.arange(16) < 10
    # move the prediction of 10 points two grid steps along U: geodesic 2 · STEP metres
    iuv[1, py[moved], px[moved]] = round(2 / (N - 1) * 255)
    kappa = SMPL_KAPPA[FINE_TO_EVAL_GROUP[chart]]
    d = 2 * STEP
    expected = (6 + 10 * np.exp(-(d**2) / (2 * kappa**2))) / 16
    assert _gps(surface, ann, iuv) == pytest.approx(expected, rel=1e-9)


def test_wrong_part_scores_zero_for_those_points(surface):
    ann = person(1, 1, BOX, chart=2, n_points=12)
    iuv = perfect_iuv(ann)
    px, py = point_pixels(ann, BOX)
    iuv[0, py[:4], px[:4]] = 15  # another chart: far away on the surface
    iuv[0, py[4:6], px[4:6]] = 0  # predicted background: no vertex
    assert _gps(surface, ann, iuv) == pytest.approx(6 / 12)


def test_points_outside_the_detection_box_score_zero(surface):
    ann = person(1, 1, BOX, chart=2, n_points=12)
    px, _ = point_pixels(ann, BOX)
    cut = int(np.median(px)) + 1  # the detection box ends at column `cut` of the GT box
    det = [BOX[0], BOX[1], float(cut), BOX[3]]
    inside = int((px < cut).sum())
    assert 0 < inside < 12
    assert _gps(surface, ann, perfect_iuv(ann, det), det) == pytest.approx(inside / 12)


def test_uv_lookup_is_nearest_vertex_with_lowest_index_on_ties(surface):
    index = SurfaceIndex(surface)
    half = 0.5 / (N - 1)  # exactly between grid vertex 0 and 1 along U
    vertex = index.mesh_vertex([3, 3, 0, 25], [half, 0.9, 0.5, 0.5], [0.0, 1.0, 0.5, 0.5])
    first = (3 - 1) * N * N
    assert vertex[0] == first  # tie between (0, 0) and (1, 0): the lower index wins
    assert vertex[1] == first + (N - 1) * N + (N - 1)  # (u, v) = (1, 1)
    assert vertex[2] == -1 and vertex[3] == -1  # background, unknown chart
