"""Every preset with the real components: inference on a 512-px image and a training step;
fnl-detector's results JSON read back by fnl-eval's decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fnl_core import groups, registry
from fnl_core.structures import DensePoseAnnotation
from fnl_detector import build_detector, load_spec
from fnl_detector.analysis import calibrate_batch_norm
from fnl_detector.postprocess import densepose_to_iuv
from fnl_detector.results import to_coco_results
from fnl_eval.results import decode_iuv

DEFAULT = {"mobile_parsing_rcnn_b"}


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for h, w in ((512, 640), (480, 512)):
        images.append(torch.rand(3, h, w, generator=gen) * 255)
        boxes = torch.tensor([[40.0, 30.0, 300.0, 460.0], [250.0, 100.0, 470.0, 400.0]])
        dp = [
            DensePoseAnnotation(
                x=rng.uniform(0, 255, 30),
                y=rng.uniform(0, 255, 30),
                i=rng.integers(1, 25, 30),
                u=rng.uniform(0, 1, 30),
                v=rng.uniform(0, 1, 30),
                masks=rng.integers(0, 15, (256, 256)).astype(np.uint8),
            ),
            None,
        ]
        targets.append(
            {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "densepose": dp}
        )
    return images, targets


@pytest.mark.parametrize(
    "name",
    [
        n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow)
        for n in sorted(registry.names(groups.PRESETS))
    ],
)
def test_preset_inference_512_and_training_step(name):
    torch.manual_seed(0)
    spec = load_spec(
        name,
        [
            "input.min_size_test=512",
            "input.min_size_train=[512]",
            "test.score_thresh=0.0",
            "test.detections_per_image=4",
        ],
    )
    model = build_detector(spec)
    images, targets = _batch()
    # Random weights with identity BN statistics blow activations up until no proposal survives
    # (a valid, empty result); set BN statistics from the input first, as the benchmark does.
    calibrate_batch_norm(model, images[:1])
    model.eval()
    with torch.inference_mode():
        out = model(images[:1])[0]
    k = len(out["boxes"])
    assert 1 <= k <= 4
    s = spec.densepose.heatmap_size
    assert (out["boxes"][:, 2] <= 640).all() and (out["boxes"][:, 3] <= 512).all()
    if "embedding" in out["densepose"]:  # CSE models: inference only (no CSE training loss)
        assert out["densepose"]["embedding"].shape[:1] == (k,)
        assert out["densepose"]["embedding"].shape[-2:] == (s, s)
        return
    assert out["densepose"]["fine_segm"].shape == (k, 25, s, s)
    model.train()
    losses = model(images, targets)
    # models with UV confidences have one loss_densepose_UV instead of loss_densepose_U and _V
    assert len(losses) == (7 if "loss_densepose_UV" in losses else 8)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_results_are_read_by_fnl_eval():
    torch.manual_seed(0)
    model = build_detector(
        load_spec(
            "mobile_parsing_rcnn_b",
            ["input.min_size_test=256", "test.score_thresh=0.0", "test.detections_per_image=3"],
        )
    ).eval()
    with torch.inference_mode():
        pred = model([torch.rand(3, 256, 300) * 255])[0]
    results = json.loads(json.dumps(to_coco_results(5, pred)))
    iuvs = densepose_to_iuv(pred["boxes"], pred["densepose"])
    assert len(results) == len(iuvs) == 3
    for r, iuv in zip(results, iuvs):
        decoded = decode_iuv(r["densepose"])
        assert np.array_equal(decoded, iuv)
        assert decoded.shape[1:] == (max(int(r["bbox"][3]), 1), max(int(r["bbox"][2]), 1))


def test_mobile_b_trains_on_the_reference_s3x_schedule():
    """--recipe paper takes the schedule of the config the preset is named after."""
    import argparse

    from fnl_detector.commands.train import train_config
    from fnl_detector.spec import load_spec

    for name in ("mobile_parsing_rcnn_b", "mobile_parsing_rcnn_b_test_tuned"):
        assert load_spec(name).schedule == "s3x"
    assert load_spec("mobile_parsing_rcnn_a").schedule == "s1x"
    args = argparse.Namespace(batch_size=None, lr=None, device=None, seed=None, num_workers=None)
    config = train_config(args, {}, None, schedule="s3x")
    assert (config.iters, config.steps, config.warmup_iters) == (390_000, (330_000, 370_000), 1000)
