"""A run's spec.json records which package (and version) provided each part, and stays a
loadable spec."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import torch
from train_fakes import FakeDataset, FakeDetector

from fnl_core import groups, registry
from fnl_core.spec import spec_json_schema
from fnl_detector.spec import DetectorSpec, load_spec
from fnl_detector.train.config import TrainConfig
from fnl_detector.train.loop import SPEC_FILE, Trainer

pytestmark = pytest.mark.skipif(
    "mobile_parsing_rcnn_b" not in registry.names(groups.PRESETS)
    or "timm" not in registry.names(groups.BACKBONES),
    reason="needs the fnl zoo components (fnl-backbones, fnl-necks, fnl-heads)",
)


def test_run_spec_json_records_provenance_and_loads_back(tmp_path):
    spec = load_spec("mobile_parsing_rcnn_b")
    torch.manual_seed(0)
    config = TrainConfig(iters=1, batch_size=2, lr=0.01, steps=(), warmup_iters=0, device="cpu")
    Trainer(config, FakeDataset(n=2), tmp_path, spec=spec, model=FakeDetector(), progress=False)
    saved = json.loads((tmp_path / SPEC_FILE).read_text())
    record = saved["$provenance"]
    assert record["backbone"] == {
        "name": "timm",
        "distribution": "fnl-backbones",
        "version": version("fnl-backbones"),
    }
    assert record["neck"]["distribution"] == "fnl-necks"
    assert {"rpn.head", "box_head", "densepose.head", "densepose.predictor"} <= set(record)
    assert load_spec(tmp_path / SPEC_FILE) == spec
    assert "$provenance" in spec_json_schema(DetectorSpec)["properties"]
