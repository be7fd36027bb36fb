"""The zoo parts inside a detector, without fixtures: the feature decoder feeds the DensePose
pooler, confidence models train and report confidences, CSE models give vertex maps.

Small inputs on Mobile B presets (random weights, BatchNorm statistics calibrated so that the
detections are not degenerate)."""

from __future__ import annotations

import json

import numpy as np
import torch

SMALL = [
    "input.min_size_test=128",
    "input.max_size_test=256",
    "input.min_size_train=[128]",
    "input.max_size_train=256",
    "test.score_thresh=0.0",
    "test.detections_per_image=3",
    "densepose.iou_threshold=0.0",
]
DECODER = [
    'densepose.decoder={"type": "fpn", "conv_dims": 32, "num_classes": 48}',
    'densepose.pooler.in_features=["p2", "p3", "p4", "p5"]',
]


def _model(preset: str, extra: list[str] = ()):
    from fnl_detector import build_detector, load_spec
    from fnl_detector.analysis import calibrate_batch_norm

    torch.manual_seed(0)
    model = build_detector(load_spec(preset, [*SMALL, *extra]))
    images = [torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(1)) * 255]
    calibrate_batch_norm(model, images)
    return model.eval(), images


def test_decoder_feeds_the_densepose_pooler():
    model, images = _model("mobile_parsing_rcnn_b_wc2m", DECODER)
    heads = model.roi_heads
    assert heads.decoder is not None and heads.densepose_pooler.in_features == ["p2"]
    assert heads.densepose_head.ASPP.convs[0][0].in_channels == 48  # the decoder's width
    with torch.inference_mode():
        (pred,) = model(images)
        x, _, _ = model.transform(images, None)
        feats = model.extract_features(x)
        decoded = heads.decoder([feats[k] for k in ("p2", "p3", "p4", "p5")])
        assert decoded.shape[-2:] == feats["p2"].shape[-2:]
        # 128 x 160 is the test size: the boxes are in the pooler's frame already
        pooled = heads.densepose_pooler({"p2": decoded}, [pred["boxes"]])
        expected = heads.densepose_predictor(heads.densepose_head(pooled))
    assert len(pred["boxes"]) == 3
    for key, value in expected.items():
        torch.testing.assert_close(pred["densepose"][key], value)


def _training_batch():
    """Two images with two people each, DensePose points and masks on each."""
    from fnl_core.structures import DensePoseAnnotation

    rng = np.random.default_rng(0)
    images, targets = [], []
    for h, w in ((128, 160), (160, 128)):
        images.append(torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) * 255)
        annotations = [
            DensePoseAnnotation(
                x=rng.uniform(0, 255, 20),
                y=rng.uniform(0, 255, 20),
                i=rng.integers(1, 25, 20),
                u=rng.uniform(0, 1, 20),
                v=rng.uniform(0, 1, 20),
                masks=rng.integers(0, 15, (256, 256)).astype(np.uint8),
            )
            for _ in range(2)
        ]
        boxes = torch.tensor([[10.0, 12.0, w * 0.6, h * 0.8], [w * 0.4, h * 0.3, w - 5.0, h - 4.0]])
        targets.append(
            {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "densepose": annotations}
        )
    return images, targets


def test_confidence_model_trains_and_reports_confidences():
    from fnl_detector.results import to_coco_results

    model, images = _model("mobile_parsing_rcnn_b_wc2m")
    with torch.inference_mode():
        (pred,) = model(images)
    entries = json.loads(json.dumps(to_coco_results(1, pred)))
    assert len(entries) == 3
    assert set(entries[0]["confidences"]) == {
        "sigma_2",
        "kappa_u",
        "kappa_v",
        "fine_segm_confidence",
        "coarse_segm_confidence",
    }
    model.train()
    batch_images, targets = _training_batch()
    losses = model(batch_images, targets)
    assert "loss_densepose_UV" in losses and "loss_densepose_U" not in losses
    sum(losses.values()).backward()
    assert model.roi_heads.densepose_predictor.sigma_2_lowres.weight.grad.abs().sum() > 0


def test_cse_model_gives_vertex_maps():
    from fnl_core.results import decode_array_bytes
    from fnl_detector.results import to_coco_results

    model, images = _model("mobile_parsing_rcnn_b_cse")
    embedder = model.roi_heads.embedder
    with torch.no_grad():
        embedder.embedder_smpl_27554.features.normal_(generator=torch.Generator().manual_seed(2))
        embedder.embedder_smpl_27554.embeddings.normal_(generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        (pred,) = model(images)
    assert set(pred["densepose"]) == {"coarse_segm", "embedding"}
    entries = to_coco_results(1, pred, embedder=embedder)
    assert len(entries) == 3 and all("densepose" not in e for e in entries)
    dtype, shape, raw = decode_array_bytes(entries[0]["cse"]["vertices"])
    assert dtype == "int32" and len(raw) == 4 * shape[0] * shape[1]
    _, _, w, h = entries[0]["bbox"]
    assert list(shape) == [max(int(h), 1), max(int(w), 1)]
