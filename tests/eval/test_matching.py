"""Results of ``fnl predict`` on a subset of a dataset are matched to the ground truth by file
name (issue #24, item 3): its ids 1..N are not the dataset's."""

from __future__ import annotations

import argparse
import json

import pytest
from fnl_eval_fixtures import gt_json, perfect_iuv, person

from fnl_core.errors import ResultsError
from fnl_eval.cli import command
from fnl_eval.results import make_result


def _fnl_eval(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fnl eval")
    command.configure(parser)
    return command.run(parser.parse_args(argv))


@pytest.fixture
def subset(tmp_path):
    """Ground truth of 3 images; predictions for images 2 and 3 only, numbered 1 and 2 as fnl
    predict numbers them, with images.json naming their files."""
    anns = [
        person(1, 1, [20.0, 30.0, 90.0, 130.0]),
        person(2, 2, [140.0, 40.0, 70.0, 100.0]),
        person(3, 3, [30.0, 20.0, 60.0, 120.0]),
    ]
    gt = gt_json(anns, n_images=3)
    for img in gt["images"]:
        img["file_name"] = f"val/{img['id']:04d}.png"
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    out = tmp_path / "pred"
    out.mkdir()
    res = [make_result(k + 1, a["bbox"], 0.9, perfect_iuv(a)) for k, a in enumerate(anns[1:])]
    (out / "results.json").write_text(json.dumps(res))
    index = [
        {"id": k + 1, "file_name": f"data/toy/val/{img['id']:04d}.png",
         "height": img["height"], "width": img["width"], "detections": 1}
        for k, img in enumerate(gt["images"][1:])
    ]  # fmt: skip
    (out / "images.json").write_text(json.dumps(index))
    return tmp_path


def _box_ap(tmp_path, *extra: str) -> float:
    out = tmp_path / "m.json"
    code = _fnl_eval("--gt", str(tmp_path / "gt.json"), "--results",
                     str(tmp_path / "pred" / "results.json"), "--metrics", "bbox",
                     "--out", str(out), "--overwrite", *extra)  # fmt: skip
    assert code == 0
    return json.loads(out.read_text())["bbox"]["AP"]


def test_images_json_next_to_results_matches_by_file_name(subset, capsys):
    assert _box_ap(subset) == pytest.approx(1.0)
    assert "matched to the ground truth by file name" in capsys.readouterr().err


def test_raw_ids_warn_about_boxes_outside_their_image(subset, capsys):
    gt = json.loads((subset / "gt.json").read_text())
    gt["images"][0].update(height=100, width=100)  # image 1 is small: box 2 does not fit
    (subset / "gt.json").write_text(json.dumps(gt))
    assert _box_ap(subset, "--images", "none") < 0.5
    err = capsys.readouterr().err
    assert "warning: 1 of 2 detections lie outside their image" in err


def test_unmatched_file_names_are_refused(subset):
    index = json.loads((subset / "pred" / "images.json").read_text())
    index[0]["file_name"] = "photos/holiday.jpg"
    (subset / "pred" / "images.json").write_text(json.dumps(index))
    with pytest.raises(ResultsError, match=r"holiday\.jpg has no ground-truth image"):
        _box_ap(subset)


def test_another_size_is_refused(subset):
    index = json.loads((subset / "pred" / "images.json").read_text())
    index[1]["height"] = 7
    (subset / "pred" / "images.json").write_text(json.dumps(index))
    with pytest.raises(ResultsError, match="cannot be matched"):
        _box_ap(subset)
