"""``fnl info`` and ``fnl bench`` (on stand-in components, in-process)."""

from __future__ import annotations

import json

import pytest
import torch
from detector_standins import tiny_spec

from fnl_core.cli import main
from fnl_detector.analysis import (
    benchmark_image,
    calibrate_batch_norm,
    fold_batch_norm,
    parameter_counts,
)
from fnl_detector.build import build_detector


@pytest.fixture
def spec_file(tiny_components, tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_spec()))
    return path


def test_info_json_keys(spec_file, capsys):
    assert main(["info", str(spec_file), "--json", "--size", "96", "--detections", "3"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["params"]) == {"total", "backbone", "neck", "rpn", "box_head", "densepose_head"}
    p = info["params"]
    assert p["total"] == sum(v for k, v in p.items() if k != "total")
    assert info["weights_mb"] == pytest.approx(p["total"] * 4 / 1e6, abs=1e-3)
    assert info["gflops"] > 0
    assert info["features"]["neck"]["p2"] == {"channels": 16, "stride": 4}


def test_info_table_and_overrides(spec_file, capsys):
    assert main(["info", str(spec_file), "--no-flops", "--set", "neck.channels=8"]) == 0
    text = capsys.readouterr().out
    assert "parameters" in text and "p2: 8ch/4" in text
    assert main(["info", str(spec_file), "--set", "neck.chanels=8"]) == 2
    assert "neck.chanels" in capsys.readouterr().err


def test_bench_json(spec_file, capsys):
    args = [
        "bench",
        str(spec_file),
        str(spec_file),
        "--size",
        "96",
        "--detections",
        "3",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        "--set",
        "rpn.post_nms_top_n_test=60",
    ]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    for row in rows:
        assert set(row) >= {"name", "params", "median_ms", "detections", "ratio"}, row
        assert row["detections"] == 3
    assert rows[0]["ratio"] == 1.0


def test_bn_calibration_and_folding_keep_features(tiny_components):
    torch.manual_seed(0)
    model = build_detector(tiny_spec()).eval()
    image = benchmark_image(96)
    bn = model.backbone.bn
    assert calibrate_batch_norm(model, [image]) == 1
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    batch = model.transform([image])[0]
    with torch.no_grad():
        before = model.extract_features(batch)
    params = parameter_counts(model)["total"]
    assert fold_batch_norm(model, [image]) == 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        after = model.extract_features(batch)
    for k in before:
        assert torch.allclose(before[k], after[k], rtol=1e-4, atol=1e-4)
    assert parameter_counts(model)["total"] == params - 2 * bn.num_features  # BN affine gone
