"""Mobile Parsing R-CNN (B) CSE (continuous surface embeddings) reproduces DensePoseFnL.

Fixture ``fnl-mobile-b-cse-reference``: weights (with the SMPL vertex embedder), input, every
stage's arrays, the mesh vertex embeddings and per detection the closest-vertex map and mask.
The model body is Mobile B's (checked stage by stage in ``test_reference_fixture.py`` and
``test_zoo_wc2m_fixture.py``); here the CSE branch is checked stage by stage, then the whole
model end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from zoo_fixture_utils import (
    MOBILE_OVERRIDES,
    assert_close,
    fixtures_root,
    load_outputs,
    resized_frame_boxes,
    run_resized,
)

FIXTURE = fixtures_root() / "fnl-mobile-b-cse-reference"
LEVELS = ("p2", "p3", "p4", "p5", "p6")
DP_KEYS = ("coarse_segm", "embedding")

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "model_final.pth").is_file(),
    reason=f"CSE reference fixture not found at {FIXTURE} (set FNL_FIXTURES)",
)


@pytest.fixture(scope="module")
def ref():
    return load_outputs(FIXTURE)


@pytest.fixture(scope="module")
def model():
    from fnl_detector import build_detector, load_spec
    from fnl_detector.loading import load_weights

    torch.manual_seed(1)
    m = build_detector(load_spec("mobile_parsing_rcnn_b_cse", MOBILE_OVERRIDES)).eval()
    mapping = load_weights(m, FIXTURE / "model_final.pth")
    assert mapping.ok and len(mapping.mapped) == len(m.state_dict())
    assert len(mapping.mapped) + len(mapping.dropped) == 501
    return m


def test_parameter_count_and_buffers(model):
    assert sum(p.numel() for p in model.parameters()) == 3_279_917
    embedder = model.roi_heads.embedder.embedder_smpl_27554
    # the vertex features are a buffer (not counted), the projection a parameter
    assert "features" in dict(embedder.named_buffers())
    assert tuple(embedder.features.shape) == (27554, 256)
    assert tuple(embedder.embeddings.shape) == (256, 16)


def test_densepose_branch(model, ref):
    heads = model.roi_heads
    features = {k: torch.from_numpy(ref[f"feature_{k}"])[None] for k in LEVELS}
    with torch.inference_mode():
        pooled = heads.densepose_pooler(features, [resized_frame_boxes(ref)])
        assert_close("densepose_pooled_features", pooled, ref["densepose_pooled_features"])
        head = heads.densepose_head(torch.from_numpy(ref["densepose_pooled_features"]))
        assert_close("densepose_head_output", head, ref["densepose_head_output"])
        out = heads.densepose_predictor(torch.from_numpy(ref["densepose_head_output"]))
    assert set(out) == set(DP_KEYS)
    for key in DP_KEYS:
        assert_close(f"dp_{key}", out[key], ref[f"dp_{key}"])


def test_mesh_vertex_embeddings(model, ref):
    with torch.inference_mode():
        vertices = model.roi_heads.embedder("smpl_27554")
    assert_close("mesh_vertex_embeddings", vertices, ref["mesh_vertex_embeddings"])
    norms = vertices.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def _check_vertex_maps(model, ref, boxes, dp, prefix=""):
    from fnl_detector.postprocess import chart_boxes_xywh, densepose_to_vertex_maps

    assert chart_boxes_xywh(boxes)[:, [3, 2]].tolist() == ref["cse_sizes_hw"].tolist()
    maps = densepose_to_vertex_maps(boxes, dp, model.roi_heads.embedder)
    for i, (vertices, mask) in enumerate(maps):
        # README margins: no masked pixel has a nearest/second-nearest gap below 1e-5, so the
        # maps must be identical
        assert np.array_equal(mask.numpy(), ref[f"cse_{i}_mask"].astype(bool)), f"{prefix}mask {i}"
        assert np.array_equal(vertices.numpy(), ref[f"cse_{i}_closest_vertices"]), (
            f"{prefix}closest vertices {i}"
        )


def test_closest_vertices(model, ref):
    dp = {k: torch.from_numpy(ref[f"dp_{k}"]) for k in DP_KEYS}
    _check_vertex_maps(model, ref, torch.from_numpy(ref["det_boxes"]), dp)


def test_closest_vertices_use_the_reference_distance():
    """Squared distances as (-2 E) Vᵀ + |E|² + |V|², first index on ties, 0 off the mask."""
    from fnl_heads.cse import closest_vertices

    vertices = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    embedding = torch.zeros(2, 2, 2)
    embedding[:, 0, 0] = torch.tensor([0.9, 0.1])
    embedding[:, 0, 1] = torch.tensor([0.1, 0.8])
    coarse = torch.zeros(2, 2, 2)
    coarse[1, 0] = 1.0  # person on the top row only
    got, mask = closest_vertices(embedding, coarse, (2, 2), vertices)
    assert mask.tolist() == [[True, True], [False, False]]
    assert got.tolist() == [[0, 1], [0, 0]]  # vertex 2 ties with 0: the first wins


def test_end_to_end_from_resized_image(model, ref):
    pred = run_resized(model, ref)
    assert (pred["labels"] - 1).tolist() == ref["det_classes"].tolist()
    assert_close("e2e det_boxes", pred["boxes"], ref["det_boxes"])
    assert_close("e2e det_scores", pred["scores"], ref["det_scores"])
    for key in DP_KEYS:
        assert_close(f"e2e dp_{key}", pred["densepose"][key], ref[f"dp_{key}"])
    _check_vertex_maps(model, ref, pred["boxes"], pred["densepose"], "e2e ")


def test_end_to_end_from_input_png_through_the_predictor(model, ref):
    predictor_module = pytest.importorskip("fnl_detector.predictor")
    pred = predictor_module.Predictor.from_model(model)(FIXTURE / "input.png")
    assert_close("predictor det_boxes", pred["boxes"], ref["det_boxes"])
    assert_close("predictor det_scores", pred["scores"], ref["det_scores"])
    _check_vertex_maps(model, ref, pred["boxes"], pred["densepose"], "predictor ")


def test_results_json_carries_vertex_maps_and_masks(model, ref):
    from fnl_core.results import decode_array_bytes
    from fnl_detector.results import to_coco_results

    pred = {
        "boxes": torch.from_numpy(ref["det_boxes"]),
        "scores": torch.from_numpy(ref["det_scores"]),
        "densepose": {k: torch.from_numpy(ref[f"dp_{k}"]) for k in DP_KEYS},
    }
    with pytest.raises(ValueError, match="embedder"):
        to_coco_results(3, pred)
    entries = json.loads(json.dumps(to_coco_results(3, pred, embedder=model.roi_heads.embedder)))
    assert len(entries) == 5
    for i, entry in enumerate(entries):
        assert "densepose" not in entry and entry["cse"]["mesh"] == "smpl_27554"
        dtype, shape, raw = decode_array_bytes(entry["cse"]["vertices"])
        got = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(shape)
        assert np.array_equal(got, ref[f"cse_{i}_closest_vertices"])
        dtype, shape, raw = decode_array_bytes(entry["cse"]["mask"])
        assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(shape), ref[f"cse_{i}_mask"])
