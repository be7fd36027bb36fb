"""ONNX deployment (``fnl_detector.export``, ``fnl export``): one graph that onnxruntime runs
like the PyTorch model, with TopK / NonMaxSuppression / RoiAlign as graph operators.

Random weights (BatchNorm calibrated on the verification image) are checked with detection
matching that tolerates near-ties at the top-k cut (:func:`compare_outputs`); the reference
fixture's weights (``fnl-mobile-b-reference``, skipped when absent), built with decision margins
far above float32 noise, must give the very same detections, and ``fnl run`` (fnl-runtime) on
their export must reproduce ``fnl predict``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fnl_detector.export import (
    INT8_FILE,
    MANIFEST,
    MODEL_FILE,
    compare_outputs,
    onnx_session,
    run_onnx,
)

REPO = Path(__file__).resolve().parents[2]


def _fixtures_root() -> Path:
    env = os.environ.get("FNL_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


MOBILE_B = _fixtures_root() / "fnl-mobile-b-reference"
SIZE = 128
SMALL = ["input.min_size_test=128"]
#: The reference fixture's run: score threshold 0, 5 detections, short side 512.
REFERENCE_OVERRIDES = [
    "test.score_thresh=0.0",
    "test.detections_per_image=5",
    "input.min_size_test=512",
    "input.max_size_test=1333",
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """mobile_parsing_rcnn_b, random weights, exported and verified at SIZE by the command."""
    from fnl_detector.commands.export import run_export

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("onnx_random")
    result = run_export("mobile_parsing_rcnn_b", out, overrides=SMALL)
    return out, result


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    from fnl_detector.analysis import benchmark_image

    return benchmark_image(h, seed=seed)[:, :, :w].permute(1, 2, 0).round().byte().numpy().copy()


def test_one_graph_and_its_manifest(random_export):
    import onnx

    out, result = random_export
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, MODEL_FILE]
    onnx.checker.check_model(str(out / MODEL_FILE), full_check=True)
    ops = {n.op_type for n in onnx.load(str(out / MODEL_FILE)).graph.node}
    assert {"TopK", "NonMaxSuppression", "RoiAlign"} <= ops
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == {k: v for k, v in result.items() if k != "manifest_path"}
    assert manifest["opset"] == 17 and manifest["model"] == MODEL_FILE
    assert manifest["input"]["resize"]["min_size_test"] == SIZE
    assert manifest["input"]["pixel_mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert manifest["densepose_outputs"] == ["coarse_segm", "fine_segm", "u", "v"]
    assert manifest["outputs"]["u"]["shape"] == ["D", 25, 64, 64]
    assert manifest["batch_norms_folded"] > 0
    digest = hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest()
    assert manifest["sha256"] == {MODEL_FILE: digest}  # checked by readers (issue #24)
    assert manifest["spec"]["neck"]["type"] == "bifpn"
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    ver = manifest["verification"]
    assert ver["ok"] and ver["matched"] > 0 and ver["forced_detections"] is None, ver
    assert [r["image_hw"][0] for r in ver["images"]] == [SIZE, SIZE]
    assert ver["images"][0]["image_hw"] != ver["images"][1]["image_hw"]


def test_graph_runs_any_size(random_export):
    out, _ = random_export
    session = onnx_session(out / MODEL_FILE, threads=1)
    for h, w in [(SIZE, 171), (200, 130), (64, 64)]:
        pred = run_onnx(session, _image(h, w, seed=2))
        n = len(pred["boxes"])
        assert pred["boxes"].shape == (n, 4) and pred["labels"].dtype == np.int64
        assert pred["u"].shape == (n, 25, 64, 64)
        assert (pred["boxes"][:, 2] <= w).all() and (pred["boxes"][:, 3] <= h).all()


def test_export_keeps_the_spec_test_size(tmp_path):
    """Issue 16: ``fnl export`` replaced the spec's test size (e.g. 240) with 512."""
    from fnl_core.cli import main

    rc = main(["export", "mobile_parsing_rcnn_b", "--out", str(tmp_path), "--no-verify",
               "--set", "input.min_size_test=96"])  # fmt: skip
    assert rc == 0
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["input"]["resize"]["min_size_test"] == 96
    assert manifest["input"]["resize"]["spec_resize"] == "pil_bilinear_uint8"
    assert manifest["spec"]["input"]["min_size_test"] == 96


def test_zero_detections_and_the_forced_check(tmp_path):
    """Score threshold 1: no detection; the graph must return empty outputs, and the check,
    which would be vacuous, runs on a copy exported with threshold 0."""
    from fnl_detector.commands.export import run_export

    result = run_export(
        "mobile_parsing_rcnn_b", tmp_path, overrides=[*SMALL, "test.score_thresh=1.0"]
    )
    ver = result["verification"]
    assert ver["ok"] and ver["matched"] > 0
    assert "score threshold 0" in ver["forced_detections"]
    assert ver["written_graph"]["detections"] == 0 and not ver["written_graph"]["ok"]
    pred = run_onnx(onnx_session(tmp_path / MODEL_FILE), _image(SIZE, 150))
    assert pred["boxes"].shape == (0, 4)
    assert pred["coarse_segm"].shape == (0, 15, 64, 64) and pred["v"].shape == (0, 25, 64, 64)


def test_a_mismatch_fails_loudly(tmp_path, monkeypatch, capsys):
    import fnl_detector.export.verify as export

    real = export.reference_outputs

    def shifted(model, image):
        out = real(model, image)
        out["boxes"] = out["boxes"] + 1.0
        return out

    monkeypatch.setattr(export, "reference_outputs", shifted)
    from fnl_core.cli import main

    rc = main(["export", "mobile_parsing_rcnn_b", "--out", str(tmp_path), "--set", *SMALL])
    captured = capsys.readouterr()
    assert rc == 1
    assert "MISMATCH" in captured.out and "does not reproduce PyTorch" in captured.err


def test_the_graph_follows_the_modeling_code(tmp_path, monkeypatch):
    """Issue 23: one inference implementation. The graph is the model's own modules traced, so
    a change to proposal selection in ``modeling/`` (here: keep the 3 best proposals) changes
    the eager model and the exported graph alike."""
    from fnl_detector.build import build_detector
    from fnl_detector.export import export_onnx, reference_outputs
    from fnl_detector.modeling.rpn import RPN
    from fnl_detector.spec import load_spec

    torch.manual_seed(0)
    spec = load_spec("mobile_parsing_rcnn_b", [*SMALL, "test.score_thresh=0.0"])
    model = build_detector(spec).eval()
    image = _image(SIZE, 150, seed=5)
    assert len(reference_outputs(model, image)["boxes"]) > 3  # up to 100 detections

    real = RPN.select_proposals

    def three_best(self, *args, **kwargs):
        boxes, scores = real(self, *args, **kwargs)
        return [b[:3] for b in boxes], [s[:3] for s in scores]

    monkeypatch.setattr(RPN, "select_proposals", three_best)
    eager = reference_outputs(model, image)
    export_onnx(model, tmp_path, image, fold_bn=False)
    session = onnx_session(tmp_path / MODEL_FILE, threads=1)
    graph = run_onnx(session, image)
    assert 0 < len(eager["boxes"]) <= 3
    assert len(graph["boxes"]) == len(eager["boxes"])
    assert compare_outputs(eager, graph)["same"]
    other = _image(SIZE + 20, SIZE, seed=6)  # another size: the cut is in the graph, not baked
    assert 0 < len(run_onnx(session, other)["boxes"]) <= 3


def test_compare_outputs_tolerates_only_near_ties_at_the_cut():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 100, (4, 4)).astype(np.float32)
    ref = {
        "boxes": boxes,
        "scores": np.array([0.9, 0.8, 0.5, 0.4999], np.float32),
        "labels": np.ones(4, np.int64),
        "u": rng.random((4, 25, 4, 4)).astype(np.float32),
    }
    swapped = {k: v[[0, 1, 3, 2]] for k, v in ref.items()}
    assert compare_outputs(ref, swapped)["ok"]
    cut = {k: v[:3] for k, v in ref.items()}  # the 4th (0.4999) fell off the cut: fine
    assert compare_outputs(ref, cut)["ok"]
    lost = {k: v[1:] for k, v in ref.items()}  # the best detection is missing: not fine
    assert not compare_outputs(ref, lost)["ok"]
    moved = {**ref, "boxes": ref["boxes"] + np.float32(0.5)}
    assert not compare_outputs(ref, moved)["ok"]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roialign_operator_equals_torchvision(tmp_path, aligned, sampling_ratio):
    """opset 16 RoiAlign (``half_pixel`` for aligned=True, adaptive grid for sampling_ratio 0)
    against torchvision.ops.roi_align, on boxes from sub-pixel to larger than the map."""
    from torchvision.ops import roi_align

    class Pool(torch.nn.Module):
        def forward(self, x, rois):
            return roi_align(x, rois, (7, 7), 0.25, sampling_ratio, aligned)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 40, 56, generator=gen)
    xy = torch.rand(60, 2, generator=gen) * 200
    wh = torch.rand(60, 2, generator=gen) ** 3 * 300 + 0.2
    rois = torch.cat([torch.zeros(60, 1), xy, xy + wh], 1)
    path = tmp_path / "roi.onnx"
    torch.onnx.export(Pool(), (x, rois), str(path), dynamo=False, opset_version=17,
                      input_names=["x", "rois"], dynamic_axes={"rois": {0: "n"}})  # fmt: skip
    got = onnx_session(path).run(None, {"x": x.numpy(), "rois": rois.numpy()})[0]
    np.testing.assert_allclose(got, Pool()(x, rois).numpy(), rtol=0, atol=2e-6)


def test_nms_operator_equals_torchvision(tmp_path):
    from torchvision.ops import nms

    class Keep(torch.nn.Module):
        def forward(self, boxes, scores):
            return nms(boxes, scores, 0.5)

    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(300, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=gen) * 60], 1)
    boxes[:3] = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]])  # empty boxes
    scores = torch.rand(300, generator=gen)
    path = tmp_path / "nms.onnx"
    dynamic = {"b": {0: "n"}, "s": {0: "n"}}
    torch.onnx.export(Keep(), (boxes, scores), str(path), dynamo=False, opset_version=17,
                      input_names=["b", "s"], dynamic_axes=dynamic)  # fmt: skip
    got = onnx_session(path).run(None, {"b": boxes.numpy(), "s": scores.numpy()})[0]
    np.testing.assert_array_equal(got, Keep()(boxes, scores).numpy())


@pytest.mark.slow
def test_int8_graph_keeps_the_float_islands(random_export, tmp_path):
    import onnx

    from fnl_detector.export import quantize_onnx

    out, _ = random_export
    images = [_image(SIZE, 171, seed=s) for s in (3, 4)]
    info = quantize_onnx(out / MODEL_FILE, tmp_path / INT8_FILE, images)
    assert info["calibration_images"] == 2 and info["quantized_nodes"] > 60
    graph = onnx.load(str(tmp_path / INT8_FILE)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert convs["/proposal_generator/rpn_head/objectness_logits/Conv"].input[1] not in dequantized
    assert convs["/backbone/body/conv_stem/Conv"].input[1] in dequantized
    fusion = [n for n in graph.node if n.name.startswith("/neck/") and n.op_type == "Div"]
    assert fusion and all(n.input[0] not in dequantized for n in fusion)
    assert (tmp_path / INT8_FILE).stat().st_size <= (out / MODEL_FILE).stat().st_size / 3
    pred = run_onnx(onnx_session(tmp_path / INT8_FILE), images[0])
    assert pred["u"].shape[1:] == (25, 64, 64)


# ------------------------------------------------------------------ reference fixture weights
needs_fixture = pytest.mark.skipif(
    not (MOBILE_B / "model_final.pth").is_file(),
    reason=f"reference fixture weights not found at {MOBILE_B} (set FNL_FIXTURES)",
)


@pytest.mark.slow
@needs_fixture
def test_fixture_export_and_fnl_run_reproduce_fnl_predict(tmp_path):
    """Same detections, boxes within 0.05 px, IUV within 1 grey level (chart labels may differ
    at the few pixels whose two best fine-segmentation logits tie within float32 noise)."""
    from fnl_core.cli import main
    from fnl_core.results import decode_iuv_bytes

    weights = str(MOBILE_B / "model_final.pth")
    sets = [f"--set={s}" for s in REFERENCE_OVERRIDES]
    image = str(MOBILE_B / "input.png")
    assert main(["export", "mobile_parsing_rcnn_b", "--weights", weights, "--out",
                 str(tmp_path / "onnx"), "--verify-image", image, *sets]) == 0  # fmt: skip
    ver = json.loads((tmp_path / "onnx" / MANIFEST).read_text())["verification"]
    assert all(r["same"] and r["detections"] == 5 for r in ver["images"]), ver
    assert main(["run", str(tmp_path / "onnx"), image, "--out", str(tmp_path / "run")]) == 0
    assert main(["predict", image, "--weights", weights, "--spec", "mobile_parsing_rcnn_b",
                 "--backend", "torch", "--out", str(tmp_path / "predict"), *sets]) == 0  # fmt: skip
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    ref = json.loads((tmp_path / "predict" / "results.json").read_text())
    assert len(run) == len(ref) == 5
    assert json.loads((tmp_path / "run" / "images.json").read_text()) == json.loads(
        (tmp_path / "predict" / "images.json").read_text()
    )
    flipped = pixels = 0
    for a, b in zip(run, ref):
        assert a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], rtol=0, atol=0.05)
        assert abs(a["score"] - b["score"]) < 1e-4
        (shape_a, raw_a), (shape_b, raw_b) = (decode_iuv_bytes(r["densepose"]) for r in (a, b))
        assert shape_a == shape_b
        ia = np.frombuffer(raw_a, np.uint8).reshape(shape_a).astype(int)
        ib = np.frombuffer(raw_b, np.uint8).reshape(shape_b).astype(int)
        same_label = ia[0] == ib[0]
        flipped, pixels = flipped + int((~same_label).sum()), pixels + same_label.size
        assert np.abs(ia[1:] - ib[1:])[:, same_label].max() <= 1
    assert flipped <= 1e-3 * pixels, (flipped, pixels)


WC2M = _fixtures_root() / "fnl-mobile-b-wc2m-reference"


@pytest.mark.slow
@pytest.mark.skipif(
    not (WC2M / "model_final.pth").is_file(),
    reason=f"WC2M reference fixture not found at {WC2M} (set FNL_FIXTURES)",
)
def test_wc2m_export_carries_the_confidences(tmp_path):
    """The confidence predictor's extra outputs become graph outputs (generic: whatever the
    predictor returns), verified like the chart outputs, and reach fnl_runtime.Runtime."""
    from fnl_core.cli import main
    from fnl_runtime import Runtime

    sets = [f"--set={s}" for s in REFERENCE_OVERRIDES]
    weights, image = str(WC2M / "model_final.pth"), str(WC2M / "input.png")
    rc = main(["export", "mobile_parsing_rcnn_b_wc2m", "--weights", weights, "--out",
               str(tmp_path), "--verify-image", image, *sets])  # fmt: skip
    assert rc == 0
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    extra = [
        k for k in manifest["densepose_outputs"] if k not in ("coarse_segm", "fine_segm", "u", "v")
    ]
    assert extra, manifest["densepose_outputs"]
    row = manifest["verification"]["images"][0]
    assert row["same"] and row["detections"] == 5, row
    assert set(extra) <= set(row["max_diff"])
    pred = Runtime(tmp_path)(WC2M / "input.png")
    assert set(extra) <= set(pred["densepose"]) and len(pred["boxes"]) == 5
