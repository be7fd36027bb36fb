"""Evaluator inputs fail in one line; mask AP bins detections by mask area as detectron2 does."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from fnl_eval_fixtures import person
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fnl_core.cli import main as fnl
from fnl_core.errors import AnnotationError, ResultsError
from fnl_eval import DensePoseEvaluator
from fnl_eval.evaluator import DETECTION_STATS
from fnl_eval.results import make_result

H, W = 400, 400


def _gt(**image) -> dict:
    return {
        "images": [{"id": 1, "height": H, "width": W, "file_name": "a.jpg", **image}],
        "annotations": [person(1, 1, [50.0, 50.0, 200.0, 200.0])],
        "categories": [{"id": 1, "name": "person"}],
    }


def _segm_only() -> DensePoseEvaluator:
    return DensePoseEvaluator(None, metrics=("segm",))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g["annotations"][0].pop("bbox"), r"annotations\[0\] \(id 1\) lacks 'bbox'"),
        (lambda g: g["images"][0].pop("height"), r"images\[0\] lacks 'height' \(an integer\)"),
        (lambda g: g["images"][0].update(width="wide"), r"images\[0\]\.width: expected an int"),
        (lambda g: g["annotations"][0]["dp_I"].__setitem__(3, 30.0),
         r"annotations\[0\] \(id 1\)\.dp_I\[3\]: chart ids are integers 1\.\.24, got 30\.0"),
        (lambda g: g["annotations"][0]["dp_I"].__setitem__(0, 0),
         r"dp_I\[0\]: chart ids are integers 1\.\.24, got 0"),
        (lambda g: g["annotations"][0]["dp_I"].__setitem__(0, 2.5), r"dp_I\[0\]"),
        (lambda g: g["annotations"][0].pop("dp_U"), r"has dp_x but lacks 'dp_U'"),
        (lambda g: g["annotations"][0].update(image_id=7), r"image_id: 7 is not the id"),
        (lambda g: g.pop("annotations"), r"expected an 'annotations' list"),
    ],
)  # fmt: skip
def test_bad_ground_truth_fails_in_one_line(edit, message):
    gt = _gt()
    edit(gt)
    with pytest.raises(AnnotationError, match=message) as info:
        _segm_only().evaluate(gt, [])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"image_id": 1}, r"expected a JSON list of detections, got dict"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}], r"\[0\] lacks 'score'"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}], r"\[0\]\.bbox"),
        ([{"image_id": "a", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}],
         r"\[0\]\.image_id: expected an integer"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")}],
         r"\[0\]\.score"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 1,
           "densepose": {"uv_shape": [3, 4, 4], "uv_data": "not base64!"}}],
         r"results\[0\]\.densepose"),
    ],
)  # fmt: skip
def test_bad_results_fail_in_one_line(results, message):
    with pytest.raises(ResultsError, match=message):
        _segm_only().evaluate(_gt(), results)


def test_results_file_that_is_not_utf8_or_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"\xff\xfe[1, 2")
    with pytest.raises(ResultsError, match="not UTF-8"):
        _segm_only().evaluate(_gt(), path)
    path.write_text("[1, 2")
    with pytest.raises(ResultsError, match="invalid JSON"):
        _segm_only().evaluate(_gt(), path)


def test_cli_reports_ground_truth_errors_on_one_line(tmp_path, capsys):
    gt = _gt()
    del gt["images"][0]["height"]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text("[]")
    rc = fnl(["eval", "--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json"),
              "--metrics", "segm"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "lacks 'height'" in err


def _square_iuv(box_w: int, box_h: int, x0: int, y0: int, side: int) -> np.ndarray:
    """IUV raster of a box whose foreground is a ``side`` square at (x0, y0) of the box."""
    iuv = np.zeros((3, box_h, box_w), np.uint8)
    iuv[0, y0 : y0 + side, x0 : x0 + side] = 2
    return iuv


def _detectron2_segm(gt: dict, results: list[dict]) -> dict[str, float]:
    """Reference: detectron2's COCOEvaluator drops ``bbox`` from mask results, then COCOeval."""
    with_masks = []
    for det in results:
        iuv = _square_iuv(*det.pop("_mask"))
        x, y = int(det["bbox"][0]), int(det["bbox"][1])
        full = np.zeros((H, W), np.uint8)
        full[y : y + iuv.shape[1], x : x + iuv.shape[2]] = iuv[0] > 0
        rle = mask_utils.encode(np.asfortranarray(full))
        entry = {k: v for k, v in det.items() if k not in ("bbox", "densepose")}
        with_masks.append({**entry, "segmentation": rle})
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    for ann in coco.dataset["annotations"]:
        ann["segmentation"] = evaluator_gt_mask(ann)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(with_masks), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(DETECTION_STATS, map(float, ev.stats)))


def evaluator_gt_mask(ann: dict) -> dict:
    from fnl_eval.masks import gt_mask_rle

    return gt_mask_rle(ann, H, W)


def test_mask_ap_bins_detections_by_mask_area_like_detectron2():
    # GT: a person whose mask is a 70 px square (area 4900: "medium") inside a 200 px box
    gt = _gt()
    ann = gt["annotations"][0]
    for key in ("dp_masks",):
        ann.pop(key, None)
    ann["segmentation"] = [[50, 50, 120, 50, 120, 120, 50, 120]]
    ann["area"] = 4900.0
    # a true positive (its mask is the GT's) and, scored higher, a false positive whose box is
    # large (200 px) but whose mask is a 60 px square: medium by mask area, large by box area
    tp = make_result(1, [50, 50, 200, 200], 0.5, _square_iuv(200, 200, 0, 0, 70))
    fp = make_result(1, [190, 190, 200, 200], 0.9, _square_iuv(200, 200, 100, 100, 60))
    tp["_mask"], fp["_mask"] = (200, 200, 0, 0, 70), (200, 200, 100, 100, 60)
    expected = _detectron2_segm(gt, [dict(tp), dict(fp)])
    got = _segm_only().evaluate(gt, [
        {k: v for k, v in d.items() if k != "_mask"} for d in (tp, fp)
    ])["segm"]  # fmt: skip
    assert got == pytest.approx(expected, abs=1e-12)
    # the false positive counts against medium objects (it would be ignored by box area)
    assert got["APm"] == pytest.approx(expected["APm"]) and got["APm"] < 0.6
