"""The cpu-toy recipe sets only the options the chosen components have and says what it
skipped: a third-party backbone without ``pretrained`` (or ``norm``) still trains."""

from __future__ import annotations

import json

import pytest
from detector_standins import standins, write_tiny_spec

from fnl_core.cli import main as fnl
from fnl_detector.commands.train import cpu_toy_spec
from fnl_detector.train.recipes import TOY_CPU_SPEC_OVERRIDES, applicable_overrides


def test_applicable_overrides_keep_the_keys_the_spec_has():
    spec = {"backbone": {"type": "x", "width": 8}, "input": {"min_size_train": [800]}}
    kept, skipped = applicable_overrides(
        spec, ["backbone.pretrained=false", "backbone.width=4", "input.min_size_train=[240]",
               "input.min_size_train.x=1", "rpn.pre_nms_top_n_train=1000"],
    )  # fmt: skip
    assert kept == ["backbone.width=4", "input.min_size_train=[240]"]
    assert skipped == ["backbone.pretrained=false", "input.min_size_train.x=1",
                       "rpn.pre_nms_top_n_train=1000"]  # fmt: skip


def test_cpu_toy_spec_skips_what_a_registered_backbone_lacks(tmp_path):
    with standins():  # tiny_backbone: options width only, no pretrained, no norm
        spec, skipped = cpu_toy_spec(write_tiny_spec(tmp_path / "tiny.json"), [])
    assert "backbone.pretrained=false" in skipped and "backbone.norm=bn" in skipped
    assert spec.input.min_size_train == [240]  # what it has is set
    assert spec.backbone.type == "tiny_backbone"


def test_cpu_toy_spec_sets_every_option_of_the_reference_preset():
    pytest.importorskip("fnl_backbones", reason="the preset's backbone (fnl-backbones)")
    spec, skipped = cpu_toy_spec("mobile_parsing_rcnn_b", [])
    assert skipped == []
    assert spec.backbone.pretrained is False and spec.backbone.norm == "bn"


def test_fnl_train_with_a_backbone_without_pretrained(tmp_path, capsys):
    pytest.importorskip("fnl_data", reason="needs the toy dataset (fnl-data)")
    run = tmp_path / "run"
    with standins():
        spec = write_tiny_spec(tmp_path / "tiny.json")
        rc = fnl(["train", spec, "--data", "toy", "--out", str(run), "--no-progress",
                  "--device", "cpu", "--iters", "2", "--val-split", "",
                  "--data-set", 'num_images={"train": 2, "val": 1}', "width=96", "height=80",
                  f"cache_dir={tmp_path / 'cache'}", "--set", "train.num_threads=1"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "recipe cpu-toy: skipped backbone.pretrained=false, backbone.norm=bn" in out
    assert json.loads((run / "spec.json").read_text())["input"]["min_size_train"] == [240]
    assert (run / "model.safetensors").is_file()
    assert set(TOY_CPU_SPEC_OVERRIDES) >= {"backbone.pretrained=false", "backbone.norm=bn"}
