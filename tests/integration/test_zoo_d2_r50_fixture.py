"""detectron2's DensePose R-CNN R-50 FPN s1x (feature decoder, V1ConvX head, 28/112) reproduces.

Fixture ``d2-densepose-r50-fpn-s1x-reference``: no checkpoint is shipped; the weights are
re-created here from the README's seeded recipe (pure PyTorch) plus ``overrides.safetensors``
and checked tensor by tensor against the stored sha256. Then the preset
``densepose_rcnn_r_50_fpn_s1x`` is checked stage by stage and end to end from the stored
``resized_image`` (800 x 1067). A ResNet-50 at 800 x 1088 on the CPU: marked slow.

Some stored arrays are float16 copies (features, RPN head outputs, pooled DensePose features):
they are compared with ``1e-4 * max|ref| + 2**-11 * |ref|`` (float16 rounding on top of the
usual bound), and later stages are fed our own float32 values of them.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from zoo_fixture_utils import (
    DETECTION_OVERRIDES,
    assert_close,
    check_box_branch,
    fixtures_root,
    image_tensor,
    load_outputs,
    resized_frame_boxes,
    run_resized,
    sizes,
)

FIXTURE = fixtures_root() / "d2-densepose-r50-fpn-s1x-reference"
LEVELS = ("p2", "p3", "p4", "p5", "p6")
DP_KEYS = ("coarse_segm", "fine_segm", "u", "v")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (FIXTURE / "overrides.safetensors").is_file(),
        reason=f"detectron2 R-50 reference fixture not found at {FIXTURE} (set FNL_FIXTURES)",
    ),
]


def recipe_kind(key: str, shape: list[int], all_shapes: dict[str, list[int]]) -> str:
    """The README's rule for which initialiser a key gets."""
    if key.endswith("running_mean"):
        return "running_mean"
    if key.endswith("running_var"):
        return "running_var"
    if key.endswith(".weight"):
        return "weight" if len(shape) >= 2 else "norm_weight"
    sibling = all_shapes.get(key[: -len("bias")] + "weight")
    return "norm_bias" if sibling is not None and len(sibling) == 1 else "bias"


def recreate_weights() -> dict[str, torch.Tensor]:
    """Recipe (seed 2031 + i per key, in state-dict order) + overrides, sha256-checked."""
    from safetensors.torch import load_file

    settings = json.loads((FIXTURE / "settings.json").read_text())["weights"]
    seed = settings["recipe"]["seed"]
    damping = settings["recipe"]["damping"]
    entries = settings["state_dict_keys"]
    shapes = {key: shape for key, shape, *_ in entries}
    state = {}
    for i, (key, shape, _, stored_kind, stored_m) in enumerate(entries):
        kind = recipe_kind(key, shape, shapes)
        assert kind == stored_kind, key
        g = torch.Generator().manual_seed(seed + i)
        if kind == "weight":
            damp = next((v for prefix, v in damping.items() if key.startswith(prefix)), 1.0)
            m = math.sqrt(2.0 / (math.prod(shape) // shape[0])) * damp
            assert m == stored_m, key
            state[key] = torch.randn(shape, generator=g) * m
        elif kind == "norm_weight":
            state[key] = torch.rand(shape, generator=g) * 1.0 + 0.5
        elif kind == "norm_bias":
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif kind == "bias":
            state[key] = torch.randn(shape, generator=g) * 0.05
        elif kind == "running_mean":
            state[key] = torch.randn(shape, generator=g) * 0.1
        else:
            state[key] = torch.rand(shape, generator=g) + 0.5
    overrides = load_file(FIXTURE / "overrides.safetensors")
    assert len(overrides) == 114 and set(overrides) <= set(state)
    state.update(overrides)
    bad = [
        key
        for key, digest in settings["tensor_sha256"].items()
        if hashlib.sha256(state[key].contiguous().numpy().tobytes()).hexdigest() != digest
    ]
    assert not bad, f"{len(bad)} re-created tensors differ from the recipe's sha256: {bad[:5]}"
    assert len(state) == 335
    return state


@pytest.fixture(scope="module")
def ref():
    return load_outputs(FIXTURE)


@pytest.fixture(scope="module")
def model():
    from fnl_detector import build_detector, load_spec
    from fnl_detector.convert import convert_state_dict

    torch.manual_seed(1)
    m = build_detector(load_spec("densepose_rcnn_r_50_fpn_s1x", DETECTION_OVERRIDES)).eval()
    state, mapping = convert_state_dict(recreate_weights(), m)
    assert mapping.ok and len(mapping.mapped) == 335, mapping.describe()
    m.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in m.parameters()) == 63_821_090
    return m


def normalized_input(ref) -> torch.Tensor:
    """README preprocessing steps 3-4: BGR, minus the mean, zero padding to a multiple of 32."""
    bgr = ref["resized_image"][:, :, ::-1].astype(np.float32).transpose(2, 0, 1)
    x = bgr - np.float32([103.53, 116.28, 123.675])[:, None, None]
    h, w = sizes(ref, "padded_input_size_hw")
    out = np.zeros((1, 3, h, w), dtype=np.float32)
    out[0, :, : x.shape[1], : x.shape[2]] = x
    return torch.from_numpy(out)


@pytest.fixture(scope="module")
def features(model, ref):
    with torch.inference_mode():
        return model.extract_features(normalized_input(ref))


def assert_close_f16(name, got, ref) -> None:
    """Against a float16 copy: 1e-4 * max|ref| + float16 rounding of each value."""
    got = torch.as_tensor(got).detach().double()
    expected = torch.from_numpy(np.asarray(ref, dtype=np.float64))
    assert got.shape == expected.shape, name
    bound = 1e-4 * expected.abs().max() + 2.0**-11 * expected.abs()
    excess = (got - expected).abs() - bound
    assert float(excess.max()) <= 0, (
        f"{name}: exceeds the float16 bound by {float(excess.max()):.3g}"
    )


def test_the_model_transform_gives_the_reference_input(model, ref):
    with torch.inference_mode():
        x, image_sizes, _ = model.transform([image_tensor(ref["resized_image"])], None)
    assert image_sizes == [sizes(ref, "resized_image_size_hw")]
    assert torch.equal(x, normalized_input(ref))  # bit-exact, as in the reference


def test_features_and_rpn_head(model, ref, features):
    rpn = model.proposal_generator
    for k in LEVELS:
        assert_close_f16(f"feature_{k}", features[k][0], ref[f"feature_{k}"])
    with torch.inference_mode():
        objectness, deltas = rpn.rpn_head([features[k] for k in rpn.in_features])
    for k, o, d in zip(rpn.in_features, objectness, deltas):
        assert_close_f16(f"rpn_head_objectness_{k}", o[0], ref[f"rpn_head_objectness_{k}"])
        assert_close_f16(f"rpn_head_deltas_{k}", d[0], ref[f"rpn_head_deltas_{k}"])


def test_proposals_as_a_set(model, ref, features):
    with torch.inference_mode():
        proposals, _, _ = model.proposal_generator(
            features, [sizes(ref, "resized_image_size_hw")], None
        )
    ref_boxes = torch.from_numpy(ref["proposal_boxes"]).double()
    assert proposals[0].shape == ref_boxes.shape
    tol = 1e-4 * float(ref_boxes.abs().max())
    dist = torch.cdist(ref_boxes, proposals[0].double(), p=float("inf"))
    assert float(dist.min(1).values.max()) <= tol
    assert float(dist.min(0).values.max()) <= tol


def test_box_branch_and_detections(model, ref, features):
    check_box_branch(model, ref, features)


def test_decoder_pooler_head_and_predictor(model, ref, features):
    heads = model.roi_heads
    assert heads.decoder is not None
    with torch.inference_mode():
        pooled = heads.densepose_pooler(
            heads.densepose_features(features), [resized_frame_boxes(ref)]
        )
        assert_close_f16("densepose_pooled_features", pooled, ref["densepose_pooled_features"])
        head = heads.densepose_head(pooled)
        predictor = heads.densepose_predictor
        lowres = {
            "coarse_segm": predictor.ann_index_lowres(head),
            "fine_segm": predictor.index_uv_lowres(head),
            "u": predictor.u_lowres(head),
            "v": predictor.v_lowres(head),
        }
        out = predictor(head)
    for key in DP_KEYS:
        assert_close(f"dp_lowres_{key}", lowres[key], ref[f"dp_lowres_{key}"])
        upsampled = F.interpolate(lowres[key], scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[key], upsampled)
        assert out[key].shape[-2:] == (112, 112)


def reference_fields(ref) -> dict[str, torch.Tensor]:
    """The 112x112 predictor fields: interp2d of the stored 56x56 deconv outputs."""
    return {
        k: F.interpolate(
            torch.from_numpy(ref[f"dp_lowres_{k}"]),
            scale_factor=2,
            mode="bilinear",
            align_corners=False,
        )
        for k in DP_KEYS
    }


def _check_charts(ref, boxes, dp, prefix=""):
    from fnl_detector.postprocess import chart_boxes_xywh, densepose_to_charts

    assert chart_boxes_xywh(boxes)[:, [3, 2]].tolist() == ref["chart_sizes_hw"].tolist()
    for i, (labels, uv) in enumerate(densepose_to_charts(boxes, dp)):
        # README margins: no foreground pixel has a top-2 fine-logit margin below 1e-4
        assert np.array_equal(labels.numpy(), ref[f"chart_{i}_labels"]), f"{prefix}chart {i}"
        assert_close(f"{prefix}chart_{i}_u", uv[0], ref[f"chart_{i}_u"])
        assert_close(f"{prefix}chart_{i}_v", uv[1], ref[f"chart_{i}_v"])


def test_charts(ref):
    _check_charts(ref, torch.from_numpy(ref["det_boxes"]), reference_fields(ref))


def test_end_to_end_from_resized_image(model, ref):
    pred = run_resized(model, ref)
    assert (pred["labels"] - 1).tolist() == ref["det_classes"].tolist()
    assert_close("e2e det_boxes", pred["boxes"], ref["det_boxes"])
    assert_close("e2e det_scores", pred["scores"], ref["det_scores"])
    fields = reference_fields(ref)
    for key in DP_KEYS:
        assert_close(f"e2e dp_{key}", pred["densepose"][key], fields[key])
    _check_charts(ref, pred["boxes"], pred["densepose"], "e2e ")
