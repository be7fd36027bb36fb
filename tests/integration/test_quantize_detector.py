"""PTQ of the real Mobile Parsing R-CNN (B) on tiny inputs: same output structure, close
outputs where the comparison is meaningful, smaller state dict, weights-only round trip."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from fnl_core import registry
from fnl_detector.analysis import benchmark_image, prepare_benchmark_model
from fnl_quant.artifact import load_quantized, save_quantized
from fnl_quant.quantizers import quantization_plan

torch.set_num_threads(1)
warnings.filterwarnings("ignore", module="torch.ao")

SIZE, K = 128, 3


def sqnr(ref: torch.Tensor, other: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - other).pow(2).mean()))


def nbytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


@pytest.fixture(scope="module")
def quantized():
    torch.manual_seed(0)
    image = benchmark_image(SIZE)
    model = prepare_benchmark_model("mobile_parsing_rcnn_b", image, K, fold_bn=False)
    config = registry.get("fnl.quantizers", "ptq")(num_calibration_images=2)
    int8 = config.build().quantize(model, [([image],), ([image.flip(-1)],)])
    return model, int8, config, image


def test_units_cover_the_dense_parts(quantized) -> None:
    _, int8, _, _ = quantized
    units = quantization_plan(int8)["units"]
    assert "backbone.body.blocks" in units  # hooked timm body: its blocks are quantized
    assert "neck" in units and "roi_heads.densepose_head" in units
    assert not any(u.startswith("proposal_generator.anchor") for u in units)


def test_output_structure_unchanged(quantized) -> None:
    model, int8, _, image = quantized
    with torch.inference_mode():
        ref, got = model([image])[0], int8([image])[0]
    assert ref.keys() == got.keys() and ref["densepose"].keys() == got["densepose"].keys()
    assert len(got["boxes"]) == K
    for key in ("boxes", "scores", "labels"):
        assert got[key].shape == ref[key].shape and got[key].dtype == ref[key].dtype
    for key, value in ref["densepose"].items():
        assert got["densepose"][key].shape == value.shape
        assert not got["densepose"][key].is_quantized


def test_densepose_head_close_on_same_features(quantized) -> None:
    """Random weights amplify any perturbation through the backbone (see bench_quant.py), so
    closeness is checked where it is meaningful: the int8 head on the float model's RoIs."""
    model, int8, _, image = quantized
    with torch.inference_mode():
        x, _, _ = model.transform([image], None)
        features = model.extract_features(x)
        boxes = model([image])[0]["boxes"]
        pooled = model.roi_heads.densepose_pooler(features, [boxes])
        ref = model.roi_heads.densepose_predictor(model.roi_heads.densepose_head(pooled))
        got = int8.roi_heads.densepose_predictor(int8.roi_heads.densepose_head(pooled))
        neck_ref = model.neck(model.backbone(x))
        neck_got = int8.neck(model.backbone(x))
    for key in ref:
        assert sqnr(ref[key], got[key]) > 15, key
    assert sqnr(neck_ref["p2"], neck_got["p2"]) > 10


def test_smaller_and_weights_only_round_trip(quantized, tmp_path) -> None:
    model, int8, config, image = quantized
    assert nbytes(int8) < 0.4 * nbytes(model)
    save_quantized(int8, tmp_path, config)
    loaded = load_quantized(model, tmp_path)
    with torch.inference_mode():
        a, b = int8([image])[0], loaded([image])[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])
    for key in a["densepose"]:
        torch.testing.assert_close(a["densepose"][key], b["densepose"][key])
