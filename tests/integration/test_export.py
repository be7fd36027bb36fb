"""ONNX deployment (``fnl_detector.export``): onnxruntime reproduces the PyTorch model.

Two models: ``mobile_parsing_rcnn_b`` with random weights and BatchNorm calibrated on the test
image (always available), and the reference fixture's weights (``fnl-mobile-b-reference``,
skipped when absent), whose output layers were scaled so that top-k, NMS and score decisions
have margins well above float32 noise.

Tolerances: graphs and glue are checked stage by stage on the PyTorch model's own inputs
(:data:`fnl_detector.export.STAGE_RTOL`: 1e-3 for the backbone + neck + RPN head graph, where
onnxruntime and PyTorch are both ~1e-4 relative away from the float64 model; 1e-4 for the rest,
measured ~1e-6). End to end (fixture weights only: random weights tie scores within 1e-5) the
detections must be identical, boxes/scores within 1e-3 relative and DensePose outputs within
5e-3 relative (the fixture README measured that 1e-4 feature noise moves them by < 4e-3).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fnl_detector.export import (
    GRAPH_FILES,
    MANIFEST,
    STAGE_RTOL,
    OnnxDensePoseRunner,
    batched_nms,
    decode_boxes,
    export_onnx,
    nms,
    require_export_deps,
    resize_image,
    verify_export,
    verify_stages,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("FNL_FIXTURES", REPO.parent / "shared" / "fixtures"))
MOBILE_B = FIXTURES / "fnl-mobile-b-reference"
SIZE = 256


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _uint8(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.permute(1, 2, 0).round().to(torch.uint8).numpy())


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """mobile_parsing_rcnn_b, random weights, BN calibrated, exported at SIZE."""
    from fnl_detector import build_detector, load_spec
    from fnl_detector.analysis import benchmark_image, calibrate_batch_norm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_detector(
        load_spec("mobile_parsing_rcnn_b", [f"input.min_size_test={SIZE}"])
    ).eval()
    image = benchmark_image(SIZE)
    calibrate_batch_norm(model, [image])
    out = tmp_path_factory.mktemp("onnx_random")
    export_onnx(model, out, image)
    return model, out, _uint8(image)


def test_graphs_pass_the_onnx_checker_and_manifest_is_complete(random_export):
    import onnx

    model, out, _ = random_export
    for name in GRAPH_FILES.values():
        onnx.checker.check_model(str(out / name), full_check=True)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["opset"] == 17
    assert manifest["input"]["min_size_test"] == SIZE
    assert manifest["input"]["pixel_mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert manifest["input"]["size_divisibility"] == model.transform.size_divisibility
    assert manifest["graphs"]["densepose"]["outputs"] == ["coarse_segm", "fine_segm", "u", "v"]
    assert manifest["spec"]["neck"]["type"] == "bifpn"
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert all(manifest["files_bytes"][n] > 0 for n in GRAPH_FILES.values())


@pytest.mark.parametrize("hw", [(SIZE, 341), (300, 200)], ids=["trace-size", "other-size"])
def test_every_stage_matches_pytorch_on_dynamic_sizes(random_export, hw):
    """The export traced on one size runs any size (the second is resized up, to a different
    padded shape and aspect); each graph and the numpy glue agree with PyTorch."""
    from fnl_detector.analysis import benchmark_image

    model, out, _ = random_export
    image = _uint8(benchmark_image(hw[0], seed=3)[:, :, : hw[1]])
    report = verify_stages(model, OnnxDensePoseRunner(out, threads=1), image)
    assert set(report) == set(STAGE_RTOL)
    for stage, bound in STAGE_RTOL.items():
        assert report[stage] <= bound, (stage, report)


def test_runner_output_structure_and_dynamic_roi_count(random_export):
    model, out, image = random_export
    runner = OnnxDensePoseRunner(out, threads=1)
    pred = runner.predict(image)
    with torch.inference_mode():
        ref = model([torch.from_numpy(image).permute(2, 0, 1).float()])[0]
    assert set(pred) == set(ref) and set(pred["densepose"]) == set(ref["densepose"])
    assert len(pred["boxes"]) > 1  # BN calibration keeps detections non-degenerate
    for k, v in ref["densepose"].items():
        assert pred["densepose"][k].shape == tuple(v.shape)
    assert pred["labels"].dtype == np.int64
    feats = runner.features(runner.preprocess(image)[0])
    for n in (1, 7):
        boxes = np.tile(np.array([[4.0, 8.0, 120.0, 200.0]], np.float32), (n, 1))
        assert runner.densepose(feats, boxes)["u"].shape == (n, 25, 64, 64)
    assert runner.densepose(feats, np.zeros((0, 4), np.float32))["coarse_segm"].shape[0] == 0


# ------------------------------------------------------------------ reference fixture weights
needs_fixture = pytest.mark.skipif(
    not (MOBILE_B / "model_final.pth").is_file(),
    reason=f"reference fixture weights not found at {MOBILE_B} (set FNL_FIXTURES)",
)


@needs_fixture
def test_end_to_end_with_fixture_weights(tmp_path):
    from PIL import Image

    from fnl_detector import build_detector, load_spec
    from fnl_detector.convert import load_weights

    overrides = ["test.score_thresh=0.0", "test.detections_per_image=5"]
    model = build_detector(
        load_spec("mobile_parsing_rcnn_b", [*overrides, f"input.min_size_test={SIZE}"])
    ).eval()
    load_weights(model, MOBILE_B / "model_final.pth")
    with Image.open(MOBILE_B / "input.png") as im:
        image = np.asarray(im.convert("RGB")).copy()
    export_onnx(model, tmp_path, torch.from_numpy(image).permute(2, 0, 1).float())
    runner = OnnxDensePoseRunner(tmp_path, threads=1)
    report = verify_export(model, runner, [image, image[:300, 100:600].copy()])
    assert report["stages_ok"], report["stages"]
    for row in report["end_to_end"]:
        assert row["same_detections"] and row["detections"] == 5, row
        assert row["ok"], row


# ------------------------------------------------------------------ numpy glue vs torch(vision)
def test_nms_and_batched_nms_match_torchvision():
    from torchvision.ops import batched_nms as tv_batched_nms
    from torchvision.ops import nms as tv_nms

    gen = torch.Generator().manual_seed(0)
    for n in (50, 1500):  # 1500 boxes: torchvision's per-group path (> 4000 numbers)
        xy = torch.rand(n, 2, generator=gen) * 200
        boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=gen) * 60], 1)
        scores = torch.rand(n, generator=gen)
        groups = torch.randint(0, 3, (n,), generator=gen)
        np.testing.assert_array_equal(
            nms(boxes.numpy(), scores.numpy(), 0.5), tv_nms(boxes, scores, 0.5).numpy()
        )
        np.testing.assert_array_equal(
            batched_nms(boxes.numpy(), scores.numpy(), groups.numpy(), 0.7),
            tv_batched_nms(boxes, scores, groups, 0.7).numpy(),
        )
    # empty boxes: IoU 0/0 is NaN, which suppresses nothing in torchvision
    boxes = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [1, 1, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    np.testing.assert_array_equal(
        nms(boxes.numpy(), scores.numpy(), 0.5), tv_nms(boxes, scores, 0.5).numpy()
    )


def test_decode_boxes_matches_torchvision_box_coder():
    from torchvision.models.detection._utils import BoxCoder

    gen = torch.Generator().manual_seed(1)
    anchors = torch.rand(40, 2, generator=gen) * 100
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(40, 2, generator=gen) * 50], 1)
    deltas = torch.randn(40, 8, generator=gen) * 2
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0), 4.135166556742356)
    ref = coder.decode_single(deltas, anchors)
    got = decode_boxes(deltas.numpy(), anchors.numpy(), (10.0, 10.0, 5.0, 5.0), 4.135166556742356)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("size", [(96, 130), (200, 300)], ids=["down", "up"])
@pytest.mark.parametrize("mode", ["aa", "bilinear", "nearest"])
def test_resize_matches_torch_interpolate(size, mode):
    import torch.nn.functional as F

    img = torch.rand(3, 150, 211, generator=torch.Generator().manual_seed(2)) * 255
    kw = {"mode": "nearest"} if mode == "nearest" else {"mode": "bilinear"}
    if mode != "nearest":
        kw.update(align_corners=False, antialias=mode == "aa")
    ref = F.interpolate(img[None], size=size, **kw)[0].permute(1, 2, 0).numpy()
    got = resize_image(
        img.permute(1, 2, 0).numpy(),
        size,
        "nearest" if mode == "nearest" else "bilinear",
        mode == "aa",
    )
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-2)


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"fnl-detector\[export\]"):
        require_export_deps()


def test_runner_rejects_a_folder_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        OnnxDensePoseRunner(tmp_path)


def test_opset_below_16_is_refused(random_export, tmp_path):
    model, _, image = random_export
    with pytest.raises(ValueError, match="opset must be >= 16"):
        export_onnx(model, tmp_path, torch.from_numpy(image).permute(2, 0, 1).float(), opset=13)


def test_fnl_export_command(tmp_path, capsys):
    from fnl_core.cli import main

    rc = main(["export", "mobile_parsing_rcnn_b", "--out", str(tmp_path), "--size", "128"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "stage by stage: ok" in out
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["verification"]["stages_ok"]
    assert manifest["input"]["min_size_test"] == 128
