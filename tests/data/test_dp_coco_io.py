"""DensePose-COCO reading/writing: round trips, validation errors, lenient mode."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest

from fnl_data.coco import DensePoseFormatError, read_densepose_coco, write_densepose_coco
from fnl_data.masks import decode_dp_masks, encode_dp_masks
from fnl_data.toy.generate import ToySettings, render_sample, sample_rng


def test_toy_split_round_trips_through_writer_and_reader(toy_train, tmp_path, assert_records_equal):
    out = write_densepose_coco(toy_train.records, tmp_path / "copy.json")
    again, summary = read_densepose_coco(out, toy_train.records[0].image_root)
    assert summary.num_skipped == 0
    assert summary.num_images == len(toy_train.records)
    assert_records_equal(toy_train.records, again)


def test_generated_records_equal_read_records(tmp_path, assert_records_equal):
    from fnl_core.structures import ImageRecord

    s = ToySettings(width=128, height=96)
    records = []
    for k in range(3):
        sample = render_sample(sample_rng(7, "train", k), s)
        for a in sample.annotations:
            a.id += 100 * (k + 1)
        records.append(ImageRecord(k + 1, f"{k}.jpg", 96, 128, sample.annotations, tmp_path))
    assert any(a.densepose is not None for r in records for a in r.annotations)
    again, _ = read_densepose_coco(write_densepose_coco(records, tmp_path / "gt.json"))
    assert_records_equal(records, again)


def test_dp_masks_encode_decode_and_overwrite_order():
    labels = np.zeros((256, 256), dtype=np.uint8)
    labels[10:50, 20:80] = 1
    labels[30:40, 30:40] = 14
    entries = encode_dp_masks(labels)
    assert len(entries) == 14 and entries[1] == [] and entries[0]["size"] == [256, 256]
    np.testing.assert_array_equal(decode_dp_masks(entries), labels)
    # an earlier part's mask that overlaps a later one is overwritten by the later label
    full = encode_dp_masks(np.where(labels > 0, 1, 0).astype(np.uint8))
    entries[0] = full[0]
    np.testing.assert_array_equal(decode_dp_masks(entries), labels)


def _write(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def coco_dict(toy_train):
    return json.loads(toy_train.gt_json.read_text())


def _dp_ann(data):
    return next(a for a in data["annotations"] if "dp_x" in a)


CORRUPTIONS = [
    ("dp_I", lambda a: a["dp_I"].__setitem__(0, 25.0), "integers 1..24"),
    ("dp_I", lambda a: a["dp_I"].__setitem__(0, 2.5), "integers 1..24"),
    ("dp_U", lambda a: a["dp_U"].__setitem__(3, 1.5), "[0, 1]"),
    ("dp_V", lambda a: a["dp_V"].__setitem__(3, -0.2), "[0, 1]"),
    ("dp_x", lambda a: a["dp_x"].__setitem__(1, 300.0), "[0, 256]"),
    ("dp_y", lambda a: a["dp_y"].__setitem__(1, -4.0), "[0, 256]"),
    ("dp_I", lambda a: a["dp_V"].pop(), "equal lengths"),
    ("dp_U", lambda a: a.pop("dp_U"), "missing"),
    ("bbox", lambda a: a["bbox"].__setitem__(2, 0.0), "width and height must be > 0"),
    ("dp_masks", lambda a: a["dp_masks"].__setitem__(0, {"size": [256, 256], "counts": 5}), "RLE"),
    ("dp_masks", lambda a: a["dp_masks"].__setitem__(0, {"size": [64, 64], "counts": "a"}), "256"),
]


@pytest.mark.parametrize(("field", "corrupt", "message"), CORRUPTIONS)
def test_corrupted_annotation_raises_naming_image_annotation_and_field(
    tmp_path, coco_dict, field, corrupt, message
):
    data = copy.deepcopy(coco_dict)
    ann = _dp_ann(data)
    corrupt(ann)
    with pytest.raises(DensePoseFormatError) as info:
        read_densepose_coco(_write(tmp_path, data))
    err = info.value
    assert (err.image_id, err.annotation_id, err.field) == (ann["image_id"], ann["id"], field)
    text = str(err)
    assert f"image {ann['image_id']}" in text and f"annotation {ann['id']}" in text
    assert repr(field) in text and message in text


def test_lenient_mode_skips_and_counts_bad_annotations(tmp_path, coco_dict, caplog):
    data = copy.deepcopy(coco_dict)
    ann = _dp_ann(data)
    ann["dp_I"][0] = 0.0
    total = len(data["annotations"])
    with caplog.at_level(logging.WARNING, logger="fnl_data"):
        records, summary = read_densepose_coco(_write(tmp_path, data), lenient=True)
    assert summary.num_skipped == 1 and summary.num_annotations == total - 1
    assert summary.skipped[0].annotation_id == ann["id"] and summary.skipped[0].field == "dp_I"
    assert all(a.id != ann["id"] for r in records for a in r.annotations)
    assert "skipped 1" in caplog.text
    assert "1 skipped" in str(summary)


def test_unknown_image_id_and_missing_file(tmp_path, coco_dict):
    data = copy.deepcopy(coco_dict)
    data["annotations"][0]["image_id"] = 10**9
    with pytest.raises(DensePoseFormatError, match="'image_id': refers to no image"):
        read_densepose_coco(_write(tmp_path, data))
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        read_densepose_coco(tmp_path / "nope.json")


def test_annotations_without_densepose_are_kept(tmp_path, coco_dict):
    data = copy.deepcopy(coco_dict)
    ann = _dp_ann(data)
    for key in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V", "dp_masks"):
        ann.pop(key)
    records, summary = read_densepose_coco(_write(tmp_path, data))
    inst = next(a for r in records for a in r.annotations if a.id == ann["id"])
    assert inst.densepose is None and summary.num_skipped == 0
