"""DetectorSpec: validation with full error paths, presets, overrides, round trips."""

from __future__ import annotations

import json

import pytest
from detector_standins import tiny_spec
from pydantic import ValidationError

from fnl_core import groups, registry
from fnl_core.presets import PresetFile
from fnl_core.spec import SpecFileError, format_validation_error, spec_json_schema
from fnl_detector.presets import builtin_preset_names
from fnl_detector.spec import SPEC_VERSION, DetectorSpec, load_spec


def errors(data) -> str:
    with pytest.raises(ValidationError) as info:
        DetectorSpec.model_validate(data)
    return format_validation_error(info.value)


def test_tiny_spec_validates_and_round_trips(tiny_components):
    spec = DetectorSpec.model_validate(tiny_spec())
    assert spec.backbone.type == "tiny_backbone"
    assert spec.rpn.head.type == "tiny_rpn"
    assert spec.densepose.pooler.in_features == ["p2"]
    again = DetectorSpec.model_validate(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_misspelled_settings_name_their_path(tiny_components):
    data = tiny_spec(rpn={"head": {"type": "tiny_rpn"}, "nms_thres": 0.5})
    assert "rpn.nms_thres: Extra inputs are not permitted" in errors(data)
    data = tiny_spec()
    data["densepose"]["pooler"]["resoluton"] = 14
    assert "densepose.pooler.resoluton: Extra inputs are not permitted" in errors(data)


def test_misspelled_keys_name_the_closest_known_key(tiny_components):
    data = tiny_spec(rpn={"head": {"type": "tiny_rpn"}, "nms_thres": 0.5})
    data["test"] = {"score_threshold": 0.1, "nms_thresh": 3, "zzz": 1}
    data["densepose"]["head"] = {"type": "tiny_dp", "chanels": 8}
    text = errors(data)
    assert "rpn.nms_thres: Extra inputs are not permitted (did you mean 'nms_thresh'?)" in text
    assert (
        "test.score_threshold: Extra inputs are not permitted (did you mean 'score_thresh'?)"
        in text
    )
    assert "test.zzz: Extra inputs are not permitted (known keys: score_thresh, " in text
    assert (
        "densepose.head.chanels: Extra inputs are not permitted (did you mean 'channels'?)" in text
    )
    # other errors keep their own message, with no hint
    assert "test.nms_thresh: Input should be less than or equal to 1\n" in text + "\n"


def test_misspelled_component_option_names_its_path(tiny_components):
    data = tiny_spec()
    data["densepose"]["head"] = {"type": "tiny_dp", "chanels": 8}
    assert "densepose.head.chanels: Extra inputs are not permitted" in errors(data)
    data = tiny_spec(neck={"type": "tiny_neck", "channels": 0})
    assert "neck.channels: Input should be greater than 0" in errors(data)


def test_unknown_component_lists_installed(tiny_components):
    text = errors(tiny_spec(box_head={"type": "tiny_boxx"}))
    assert text.startswith("box_head: ")
    assert "did you mean 'tiny_box'" in text


def test_cross_field_checks(tiny_components):
    data = tiny_spec(anchors={"sizes": [[32], [64]]})
    assert "anchors.sizes has 2 levels but rpn.in_features has 5" in errors(data)
    data = tiny_spec(
        anchors={"sizes": [[32], [64], [128], [256], [512]], "aspect_ratios": [[1], [1, 2]]}
    )
    assert "aspect_ratios" in errors(data)
    data = tiny_spec(test={"score_thresh": 1.5})
    assert "test.score_thresh" in errors(data)


def test_schema_key_and_versions(tiny_components):
    data = {
        "$schema": "https://example.invalid/fnl.json",
        "spec_version": SPEC_VERSION,
        **tiny_spec(),
    }
    assert DetectorSpec.model_validate(data).spec_version == SPEC_VERSION
    with pytest.raises(ValidationError, match="newer than this fnl-detector"):
        DetectorSpec.model_validate({**tiny_spec(), "spec_version": SPEC_VERSION + 1})


def test_json_schema_lists_components(tiny_components):
    schema = json.dumps(spec_json_schema(DetectorSpec))
    assert "tiny_backbone" in schema and "tiny_loss" in schema


def test_presets_from_files_overrides_and_chains(tiny_components, tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(tiny_spec()))
    derived = PresetFile(__name__, str(tmp_path / "derived.json"))
    (tmp_path / "derived.json").write_text(
        json.dumps({"preset": "tiny_base", "test": {"nms_thresh": 0.3}})
    )
    with (
        registry.registered(groups.PRESETS, "tiny_base", PresetFile(__name__, str(base))),
        registry.registered(groups.PRESETS, "tiny_derived", derived),
    ):
        spec = load_spec("tiny_derived", ["rpn.post_nms_top_n_test=50", "neck.channels=8"])
        assert spec.test.nms_thresh == 0.3
        assert spec.rpn.post_nms_top_n_test == 50
        assert spec.neck.channels == 8
        assert spec.rpn.pre_nms_top_n_test == 200  # from the base preset
        inline = load_spec({"preset": "tiny_base", "test": {"detections_per_image": 7}})
        assert inline.test.detections_per_image == 7
        assert load_spec(base).backbone.type == "tiny_backbone"
        with pytest.raises(ValidationError, match=r"neck\.chanels"):
            load_spec("tiny_base", ["neck.chanels=8"])


def test_unknown_preset_or_missing_file():
    with pytest.raises(FileNotFoundError, match="mobile_parsing_rcnn_bb"):
        load_spec("mobile_parsing_rcnn_bb")
    with pytest.raises(SpecFileError, match="does not exist"):
        load_spec("no/such/spec.json")


def test_builtin_presets_are_all_registered():
    shipped = set(builtin_preset_names())
    registered = {
        i.name for i in registry.entries(groups.PRESETS) if i.distribution == "fnl-detector"
    }
    assert shipped == registered
    assert {
        "densepose_rcnn_r50_fpn",
        "parsing_rcnn_r50_fpn",
        "mobile_parsing_rcnn_a",
        "mobile_parsing_rcnn_b",
        "mobile_parsing_rcnn_b_test_tuned",
        "mobile_parsing_rcnn_a_bifpn_256",
        "mobile_parsing_rcnn_a_bifpn_112",
        "mobile_parsing_rcnn_a_bifpn_88",
        "mobile_parsing_rcnn_a_spnasnet_100",
    } <= shipped
    assert len(shipped) == 8 + 23 + 25  # + detectron2 DensePose zoo (23) and Mobile B WC2M, CSE


def test_presets_never_download():
    for name in builtin_preset_names():
        data = registry.get(groups.PRESETS, name).load()
        if "preset" not in data:
            assert data["backbone"]["pretrained"] is False, name


def test_schema_offers_the_preset_key():
    from fnl_core.spec import spec_json_schema
    from fnl_detector.spec import DetectorSpec

    schema = spec_json_schema(DetectorSpec)
    assert "mobile_parsing_rcnn_b" in schema["properties"]["preset"]["enum"]
    assert "required" not in schema  # a preset may supply every key
