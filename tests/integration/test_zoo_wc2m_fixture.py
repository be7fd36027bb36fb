"""Mobile Parsing R-CNN (B) WC2M (UV + segmentation confidences) reproduces DensePoseFnL.

Fixture ``fnl-mobile-b-wc2m-reference`` (weights, input, every stage's arrays). Each stage gets
the reference input of that stage (see ``zoo_fixture_utils``); the end-to-end tests start from
the stored ``resized_image`` and, through :class:`fnl_detector.Predictor`, from ``input.png``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from zoo_fixture_utils import (
    MOBILE_OVERRIDES,
    assert_close,
    check_box_branch,
    fixtures_root,
    image_tensor,
    load_outputs,
    resized_frame_boxes,
    run_resized,
    sizes,
)

FIXTURE = fixtures_root() / "fnl-mobile-b-wc2m-reference"
LEVELS = ("p2", "p3", "p4", "p5", "p6")
#: Every predictor output of the WC2M model (all stored as ``dp_<key>``).
DP_KEYS = (
    "coarse_segm",
    "fine_segm",
    "u",
    "v",
    "sigma_2",
    "kappa_u",
    "kappa_v",
    "fine_segm_confidence",
    "coarse_segm_confidence",
)
CONFIDENCES = ("sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "model_final.pth").is_file(),
    reason=f"WC2M reference fixture not found at {FIXTURE} (set FNL_FIXTURES)",
)


@pytest.fixture(scope="module")
def ref():
    return load_outputs(FIXTURE)


@pytest.fixture(scope="module")
def model():
    from fnl_detector import build_detector, load_spec
    from fnl_detector.loading import load_weights

    torch.manual_seed(1)  # any init: every tensor is overwritten
    m = build_detector(load_spec("mobile_parsing_rcnn_b_wc2m", MOBILE_OVERRIDES)).eval()
    mapping = load_weights(m, FIXTURE / "model_final.pth")
    assert mapping.ok and len(mapping.mapped) == len(m.state_dict())
    assert len(mapping.mapped) + len(mapping.dropped) == 513
    return m


@pytest.fixture(scope="module")
def features(ref):
    return {k: torch.from_numpy(ref[f"feature_{k}"])[None] for k in LEVELS}


def test_parameter_count_and_settings(model):
    settings = json.loads((FIXTURE / "settings.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == 3_415_221
    assert settings["densepose"]["uv_confidence"]["type"] == "indep_aniso"
    predictor = model.roi_heads.densepose_predictor
    assert predictor.segm_confidence and predictor.segm_confidence_epsilon == 0.01


def test_normalized_input(model, ref):
    with torch.inference_mode():
        x, image_sizes, _ = model.transform([image_tensor(ref["resized_image"])], None)
    assert image_sizes == [sizes(ref, "resized_image_size_hw")]
    assert_close("normalized_padded_input", x[0], ref["normalized_padded_input"])


def test_features(model, ref):
    x = torch.from_numpy(ref["normalized_padded_input"])[None]
    with torch.inference_mode():
        feats = model.extract_features(x)
    for k in LEVELS:
        assert_close(f"feature_{k}", feats[k][0], ref[f"feature_{k}"])


def test_rpn_and_proposals(model, ref, features):
    from fnl_detector.modeling.rpn import flatten_head_outputs

    rpn = model.proposal_generator
    with torch.inference_mode():
        objectness, deltas = rpn.rpn_head([features[k] for k in rpn.in_features])
        for k, o, d in zip(rpn.in_features, objectness, deltas):
            assert_close(f"rpn_head_objectness_{k}", o[0], ref[f"rpn_head_objectness_{k}"])
            assert_close(f"rpn_head_deltas_{k}", d[0], ref[f"rpn_head_deltas_{k}"])
        objectness = [torch.from_numpy(ref[f"rpn_head_objectness_{k}"])[None] for k in LEVELS]
        deltas = [torch.from_numpy(ref[f"rpn_head_deltas_{k}"])[None] for k in LEVELS]
        anchors = rpn.anchor_generator([features[k] for k in LEVELS])
        logits, box_deltas = flatten_head_outputs(objectness, deltas)
        boxes, scores = rpn.select_proposals(
            anchors, logits, box_deltas, [sizes(ref, "resized_image_size_hw")]
        )
    ref_boxes = torch.from_numpy(ref["proposal_boxes"]).double()
    assert boxes[0].shape == ref_boxes.shape
    tol = 1e-4 * float(ref_boxes.abs().max())
    dist = torch.cdist(ref_boxes, boxes[0].double(), p=float("inf"))
    assert float(dist.min(1).values.max()) <= tol  # the same set of boxes
    assert float(dist.min(0).values.max()) <= tol
    assert_close(
        "proposal_objectness_logits (sorted)",
        scores[0].sort(descending=True).values,
        np.sort(ref["proposal_objectness_logits"])[::-1].copy(),
    )


def test_box_outputs_and_detections(model, ref, features):
    check_box_branch(model, ref, features)


def test_densepose_branch_with_confidences(model, ref, features):
    heads = model.roi_heads
    predictor = heads.densepose_predictor
    head_output = torch.from_numpy(ref["densepose_head_output"])
    with torch.inference_mode():
        pooled = heads.densepose_pooler(features, [resized_frame_boxes(ref)])
        assert_close("densepose_pooled_features", pooled, ref["densepose_pooled_features"])
        head = heads.densepose_head(torch.from_numpy(ref["densepose_pooled_features"]))
        assert_close("densepose_head_output", head, ref["densepose_head_output"])
        out = predictor(head_output)
        raw_fine = predictor.index_uv_lowres(head_output)
        raw_coarse = predictor.ann_index_lowres(head_output)
    assert set(out) == set(DP_KEYS)
    for key in DP_KEYS:
        assert_close(f"dp_{key}", out[key], ref[f"dp_{key}"])
    # the segmentation confidence rescales the logits: the raw deconv outputs differ
    assert_close("dp_fine_segm_before_confidence", raw_fine, ref["dp_fine_segm_before_confidence"])
    assert_close(
        "dp_coarse_segm_before_confidence", raw_coarse, ref["dp_coarse_segm_before_confidence"]
    )
    assert not np.allclose(ref["dp_fine_segm"], ref["dp_fine_segm_before_confidence"])


#: README "Margins": 2 of 7265 chart pixels have a top-2 fine-logit margin below 1e-4, so
#: rounding-level differences upstream may flip them; end-to-end checks allow exactly those.
TIE_MARGIN = 1e-4
#: The default path (ONNX Runtime, or PyTorch with BN folded) moves DensePose outputs by up to
#: 3e-4 of their range (measured 2.9e-4 on the coarse logits, range 18): outputs are held to
#: FOLDED_RTOL, and labels may flip where the reference's logit margin is below 1e-2.
FOLDED_RTOL, FOLDED_TIE_MARGIN = 1e-3, 1e-2


def tie_pixels(ref, i: int, margin: float = TIE_MARGIN) -> np.ndarray:
    """Pixels of chart ``i`` whose reference label hinges on a logit margin below ``margin``."""
    import torch.nn.functional as F

    h, w = ref[f"chart_{i}_labels"].shape
    fine, coarse = (
        F.interpolate(
            torch.from_numpy(ref[f"dp_{k}"][i : i + 1]),
            (h, w),
            mode="bilinear",
            align_corners=False,
        )[0]
        for k in ("fine_segm", "coarse_segm")
    )
    top2 = fine.topk(2, dim=0).values
    return (((top2[0] - top2[1]) < margin) | ((coarse[1] - coarse[0]).abs() < margin)).numpy()


def _check_charts(ref, boxes, dp, prefix="", allow_ties=False):
    from fnl_detector.postprocess import chart_confidences, densepose_to_charts

    charts = densepose_to_charts(boxes, dp)
    confidences = chart_confidences(boxes, dp, [labels for labels, _ in charts])
    for i, ((labels, uv), conf) in enumerate(zip(charts, confidences)):
        expected = ref[f"chart_{i}_labels"]
        same = labels.numpy() == expected
        if allow_ties:
            assert (same | tie_pixels(ref, i)).all(), f"{prefix}chart {i} labels"
        else:
            assert same.all(), f"{prefix}chart {i} labels"
        keep = torch.from_numpy(same)
        assert_close(f"{prefix}chart_{i}_u", uv[0] * keep, ref[f"chart_{i}_u"] * same)
        assert_close(f"{prefix}chart_{i}_v", uv[1] * keep, ref[f"chart_{i}_v"] * same)
        assert set(conf) == set(CONFIDENCES)
        for key in CONFIDENCES:
            assert_close(
                f"{prefix}chart_{i}_{key}", conf[key] * keep, ref[f"chart_{i}_{key}"] * same
            )


def test_charts_with_confidences(ref):
    dp = {k: torch.from_numpy(ref[f"dp_{k}"]) for k in DP_KEYS}
    _check_charts(ref, torch.from_numpy(ref["det_boxes"]), dp)


def _check_end_to_end(ref, pred, prefix):
    assert (pred["labels"] - 1).tolist() == ref["det_classes"].tolist()
    assert_close(f"{prefix}det_boxes", pred["boxes"], ref["det_boxes"])
    assert_close(f"{prefix}det_scores", pred["scores"], ref["det_scores"])
    for key in DP_KEYS:
        assert_close(f"{prefix}dp_{key}", pred["densepose"][key], ref[f"dp_{key}"])
    _check_charts(ref, pred["boxes"], pred["densepose"], prefix, allow_ties=True)


def test_end_to_end_from_resized_image(model, ref):
    _check_end_to_end(ref, run_resized(model, ref), "e2e ")


def test_end_to_end_from_input_png_through_the_predictor(model, ref):
    predictor_module = pytest.importorskip("fnl_detector.predictor")
    predictor = predictor_module.Predictor.from_model(model)
    pred = predictor(FIXTURE / "input.png")
    _check_end_to_end(ref, pred, "predictor ")


def test_results_json_carries_the_confidences(model, ref):
    from fnl_core.results import decode_array_bytes, decode_iuv_bytes
    from fnl_detector.results import to_coco_results

    pred = {
        "boxes": torch.from_numpy(ref["det_boxes"]),
        "scores": torch.from_numpy(ref["det_scores"]),
        "densepose": {k: torch.from_numpy(ref[f"dp_{k}"]) for k in DP_KEYS},
    }
    entries = json.loads(json.dumps(to_coco_results(7, pred)))
    assert len(entries) == 5
    for i, entry in enumerate(entries):
        shape, raw = decode_iuv_bytes(entry["densepose"])
        iuv = np.frombuffer(raw, np.uint8).reshape(shape)
        assert np.array_equal(iuv[0], ref[f"chart_{i}_labels"])
        # U/V within one grey level of 255 U, clamped to 0..255 (untrained: U/V exceed [0, 1])
        for plane, key in ((1, "u"), (2, "v")):
            expected = np.clip(255 * ref[f"chart_{i}_{key}"].astype(np.float64), 0, 255)
            assert np.abs(iuv[plane] - expected).max() <= 1.0
        assert set(entry["confidences"]) == set(CONFIDENCES)
        for key in CONFIDENCES:
            dtype, cshape, craw = decode_array_bytes(entry["confidences"][key])
            got = np.frombuffer(craw, np.dtype(dtype).newbyteorder("<")).reshape(cshape)
            assert_close(f"json chart_{i}_{key}", got, ref[f"chart_{i}_{key}"])


@pytest.mark.slow
@pytest.mark.parametrize("plain", [True, False], ids=["plain", "default"])
def test_fnl_predict_reproduces_the_reference(ref, tmp_path, plain):
    """``fnl predict input.png`` with the reference checkpoint: the same 5 detections, chart
    labels identical except at tie pixels, U/V within one grey level; ``--plain`` within RTOL
    and the README's ties, the default path (ONNX Runtime where installed) within
    FOLDED_RTOL and FOLDED_TIE_MARGIN."""
    from fnl_core.cli import main
    from fnl_core.results import decode_iuv_bytes

    out = tmp_path / "out"
    args = ["predict", str(FIXTURE / "input.png"), "--weights", str(FIXTURE / "model_final.pth")]
    args += ["--spec", "mobile_parsing_rcnn_b_wc2m", "--out", str(out), "--device", "cpu"]
    args += ["--threads", "2", "--no-progress", "--min-score", "0"]
    args += ["--plain"] if plain else []
    assert main([*args, "--set", *MOBILE_OVERRIDES]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 5
    boxes = np.array([r["bbox"] for r in results], dtype=np.float64)
    boxes[:, 2:] += boxes[:, :2]
    rtol = 1e-4 if plain else FOLDED_RTOL
    assert_close("fnl predict det_boxes", boxes, ref["det_boxes"], rtol=rtol)
    scores = [r["score"] for r in results]
    assert_close("fnl predict det_scores", scores, ref["det_scores"], rtol=rtol)
    for i, entry in enumerate(results):
        shape, raw = decode_iuv_bytes(entry["densepose"])
        iuv = np.frombuffer(raw, np.uint8).reshape(shape).astype(np.float64)
        same = iuv[0] == ref[f"chart_{i}_labels"]
        ties = tie_pixels(ref, i, TIE_MARGIN if plain else FOLDED_TIE_MARGIN)
        assert (same | ties).all(), f"fnl predict chart {i} labels"
        for plane, key in ((1, "u"), (2, "v")):
            # the reference quantised as the IUV PNG is (255 x, truncated)
            expected = np.floor(np.clip(255 * ref[f"chart_{i}_{key}"].astype(np.float64), 0, 255))
            assert np.abs(iuv[plane] - expected)[same].max() <= 1.0, f"chart {i} {key}"
