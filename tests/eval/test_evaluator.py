"""AP of whole result sets: perfect, empty, crowd and ignore handling, DensePose pass 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fnl_eval_fixtures import gt_json, perfect_iuv, person
from pycocotools import mask as mask_utils

from fnl_eval.config import DensePoseEvaluatorConfig
from fnl_eval.evaluator import DENSEPOSE_STATS, DETECTION_STATS, format_table
from fnl_eval.results import make_result

ALL = ["bbox", "segm", "gps", "gpsm", "dp_segm"]
A = [20.0, 30.0, 90.0, 130.0]  # large (area > 96²)
B = [140.0, 40.0, 70.0, 100.0]


def _evaluate(surface, gt, results, metrics=ALL):
    return DensePoseEvaluatorConfig(metrics=metrics).build(surface).evaluate(gt, results)


def _perfect(anns, score=0.9):
    return [make_result(a["image_id"], a["bbox"], score, perfect_iuv(a)) for a in anns]


def test_perfect_predictions_give_ap_one_everywhere(surface):
    anns = [person(1, 1, A), person(2, 1, B, chart=23), person(3, 2, A, chart=9)]
    out = _evaluate(surface, gt_json(anns, n_images=2), _perfect(anns))
    assert list(out) == ALL
    for metric in ALL:
        assert out[metric]["AP"] == pytest.approx(1.0), metric
        assert out[metric]["AP50"] == pytest.approx(1.0), metric
    assert list(out["bbox"]) == list(DETECTION_STATS)
    assert list(out["gps"]) == list(DENSEPOSE_STATS)
    assert out["gps"]["APm"] == pytest.approx(1.0)  # B is medium (32² < area < 96²)
    assert "maxDets= 20" in format_table("gps", out["gps"])


def test_a_bad_densepose_prediction_lowers_gps_but_not_box_ap(surface):
    ann = person(1, 1, A)
    iuv = perfect_iuv(ann)
    iuv[0][iuv[0] > 1] = 14  # every annotated point on a wrong chart
    out = _evaluate(surface, gt_json([ann]), [make_result(1, A, 0.9, iuv)])
    assert out["bbox"]["AP"] == pytest.approx(1.0)
    assert out["gps"]["AP"] == 0.0 and out["gpsm"]["AP"] == 0.0
    assert out["dp_segm"]["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("results", [[], None, "empty-file"])
def test_empty_or_missing_results_give_zero_ap(surface, tmp_path, results):
    if results == "empty-file":
        results = tmp_path / "res.json"
        results.write_text("[]")
    out = _evaluate(surface, gt_json([person(1, 1, A)]), results)
    for metric in ALL:
        assert out[metric]["AP"] == 0.0, metric
        assert out[metric]["AR" if metric not in ("bbox", "segm") else "AR100"] == 0.0


def test_detection_without_densepose_scores_zero_gps_but_counts_for_boxes(surface):
    ann = person(1, 1, A)
    det = {"image_id": 1, "category_id": 1, "bbox": A, "score": 0.8}
    out = _evaluate(surface, gt_json([ann]), [det])
    assert out["bbox"]["AP"] == pytest.approx(1.0)
    assert out["gps"]["AP"] == 0.0 and out["segm"]["AP"] == 0.0


def _non_dp_person(ann_id, bbox, crowd=0):
    seg = [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1], bbox[0] + bbox[2],
            bbox[1] + bbox[3], bbox[0], bbox[1] + bbox[3]]]  # fmt: skip
    if crowd:
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, 200, 240))
        seg = {"size": rle["size"], "counts": rle["counts"].decode()}
    return {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": crowd,
            "area": bbox[2] * bbox[3], "segmentation": seg}  # fmt: skip


@pytest.mark.parametrize("crowd", [0, 1])
def test_pass_two_ignores_a_detection_on_a_person_without_densepose(surface, crowd):
    ann = person(1, 1, A)
    other = _non_dp_person(2, B, crowd)
    near = [B[0] + 3, B[1] + 3, B[2], B[3]]  # box IoU ≈ 0.87 ≥ 0.8
    res = [*_perfect([ann], score=0.5), make_result(1, near, 0.9, np.ones((3, 100, 70), "u1"))]
    out = _evaluate(surface, gt_json([ann, other]), res, ["gps", "gpsm"])
    assert out["gps"]["AP"] == pytest.approx(1.0)
    assert out["gpsm"]["AP"] == pytest.approx(1.0)


def test_pass_two_needs_box_iou_of_at_least_point_eight(surface):
    ann = person(1, 1, A)
    other = _non_dp_person(2, B)
    far = [B[0] + 15, B[1] + 15, B[2], B[3]]  # box IoU ≈ 0.59 < 0.8: a false positive
    res = [*_perfect([ann], score=0.5), make_result(1, far, 0.9, np.ones((3, 100, 70), "u1"))]
    out = _evaluate(surface, gt_json([ann, other]), res, ["gps"])
    assert out["gps"]["AP"] == pytest.approx(0.5)


def test_detections_on_images_without_usable_gt_are_ignored(surface):
    ann = person(1, 1, A)
    gt = gt_json([ann, {**_non_dp_person(2, B), "image_id": 2}], n_images=3)
    junk = np.ones((3, 50, 50), np.uint8)
    res = [
        *_perfect([ann], score=0.5),
        make_result(2, [10, 10, 50, 50], 0.9, junk),  # image with a non-DensePose person only
        make_result(3, [10, 10, 50, 50], 0.9, junk),  # image without any GT
    ]
    out = _evaluate(surface, gt, res, ["bbox", "gps"])
    assert out["gps"]["AP"] == pytest.approx(1.0)
    assert out["bbox"]["AP"] < 0.9  # plain COCO counts both as false positives


def test_crowd_region_absorbs_detections_in_box_ap(surface):
    ann = person(1, 1, A)
    crowd = _non_dp_person(2, B, crowd=1)
    inside = [B[0] + 10, B[1] + 10, 30, 40]  # inside the crowd region, small box IoU
    res = [*_perfect([ann], score=0.5), make_result(1, inside, 0.9, np.ones((3, 40, 30), "u1"))]
    assert _evaluate(surface, gt_json([ann, crowd]), res, ["bbox"])["bbox"]["AP"] == pytest.approx(
        1.0
    )
    crowd["iscrowd"] = 0
    assert _evaluate(surface, gt_json([ann, crowd]), res, ["bbox"])["bbox"]["AP"] < 1.0


def test_detections_inside_ignore_regions_are_dropped(surface):
    ann = person(1, 1, A)
    junk = make_result(1, [150, 20, 60, 60], 0.9, np.ones((3, 60, 60), np.uint8))
    res = [*_perfect([ann], score=0.5), junk]
    region = {"ignore_regions_x": [[140, 230, 230, 140]], "ignore_regions_y": [[10, 10, 90, 90]]}
    assert _evaluate(surface, gt_json([ann], **region), res, ["gps"])["gps"]["AP"] == pytest.approx(
        1.0
    )
    assert _evaluate(surface, gt_json([ann]), res, ["gps"])["gps"]["AP"] == pytest.approx(0.5)


def test_only_the_twenty_best_detections_per_image_count(surface):
    ann = person(1, 1, A)
    junk = [make_result(1, [200, 150, 20, 20], 0.9, np.ones((3, 20, 20), "u1"))] * 20
    out = _evaluate(surface, gt_json([ann]), [*junk, *_perfect([ann], score=0.1)], ["gps"])
    assert out["gps"]["AR"] == 0.0
    out = _evaluate(surface, gt_json([ann]), [*junk[:19], *_perfect([ann], score=0.1)], ["gps"])
    assert out["gps"]["AR"] == pytest.approx(1.0)


def test_gt_and_results_load_from_files(surface, tmp_path):
    ann = person(1, 1, A)
    (tmp_path / "gt.json").write_text(json.dumps(gt_json([ann])))
    (tmp_path / "res.json").write_text(json.dumps(_perfect([ann])))
    ev = DensePoseEvaluatorConfig(metrics=["gps"]).build(surface)
    assert ev.evaluate(tmp_path / "gt.json", tmp_path / "res.json")["gps"]["AP"] == pytest.approx(
        1.0
    )


def test_results_on_unknown_images_fail_clearly(surface):
    res = [make_result(9, A, 0.9, np.ones((3, 4, 4), np.uint8))]
    with pytest.raises(ValueError, match="absent from the ground truth"):
        _evaluate(surface, gt_json([person(1, 1, A)]), res, ["bbox"])
    with pytest.raises(ValueError, match=r"results\[0\] lacks 'score'"):
        _evaluate(
            surface,
            gt_json([person(1, 1, A)]),
            [{"image_id": 1, "category_id": 1, "bbox": A}],
            ["bbox"],
        )


def test_config_validates_metrics_and_needs_a_surface_for_gps():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="metrics"):
        DensePoseEvaluatorConfig(metrics=["keypoints"])
    with pytest.raises(ValidationError, match="repeat"):
        DensePoseEvaluatorConfig(metrics=["gps", "gps"])
    with pytest.raises(ValidationError, match="rescue_box_iou"):
        DensePoseEvaluatorConfig(rescue_box_iou=1.5)
    with pytest.raises(ValueError, match="need a body surface"):
        DensePoseEvaluatorConfig().build(None)
    assert DensePoseEvaluatorConfig(metrics=["bbox"]).build(None).metrics == ("bbox",)
