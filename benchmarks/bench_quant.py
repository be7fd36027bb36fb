#!/usr/bin/env python3
"""float32 vs int8 Mobile Parsing R-CNN (B): size, CPU latency, DensePose deviation (prints JSON).

Paper Table 6 (B s3x test-tuned, 512 px, CPU): 13.8 MB → 4.3 MB, 4.976 → 8.310 FPS (1.67×).

* weights: the reference fixture's (``--weights``, default when the fixture exists; seeded
  random values, not trained) or random weights with BatchNorm statistics calibrated on the
  benchmark image (``--weights none``);
* int8: post-training static quantization (``ptq``) calibrated on the image, its mirror and a
  few synthetic images; the float baseline has its BatchNorms folded (the fair reference);
* latency: one thread, shortest side 512, score threshold 0 and exactly K = 5 detections in
  both models (checked), models alternating run by run, median;
* deviation: DensePose outputs of both models for the *same* boxes (the float detections),
  max |int8 − float| per output and relative to max |float|, plus the fraction of pixels whose
  fine-segmentation part label (argmax) agrees; and the box IoU of the matched detections.

    uv run python benchmarks/bench_quant.py [--runs 10] [--threads 1] [--weights none]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from fnl_detector import build_detector, load_spec
from fnl_detector.analysis import (
    benchmark_image,
    benchmark_overrides,
    calibrate_batch_norm,
    fold_batch_norm,
    median,
    time_models,
)
from fnl_detector.loading import load_weights
from fnl_quant.artifact import state_dict_megabytes
from fnl_quant.config import PTQConfig
from fnl_quant.quantizers import quantization_plan

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared/fixtures/fnl-mobile-b-reference"


def _image(path: Path | None, size: int) -> torch.Tensor:
    if path is not None and path.is_file():
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return benchmark_image(size)


def _densepose_on(model: torch.nn.Module, image: torch.Tensor, boxes: torch.Tensor) -> dict:
    x, sizes, _ = model.transform([image], None)
    if tuple(sizes[0]) != tuple(image.shape[-2:]):
        raise RuntimeError("benchmark image must not be resized (shortest side = --size)")
    return model.roi_heads.predict_densepose(model.extract_features(x), [boxes])


def _sqnr(ref: torch.Tensor, other: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    noise = (ref - other).pow(2).mean().clamp(min=1e-20)
    return float(10 * torch.log10(ref.pow(2).mean() / noise))


def _head_only_sqnr(reference: torch.nn.Module, int8: torch.nn.Module, image, boxes) -> dict:
    """DensePose head + predictor alone, both fed the float model's pooled features."""
    x, _, _ = reference.transform([image], None)
    pooled = reference.roi_heads.densepose_pooler(reference.extract_features(x), [boxes])
    heads = []
    for m in (reference, int8):
        heads.append(m.roi_heads.densepose_predictor(m.roi_heads.densepose_head(pooled)))
    return {k: round(_sqnr(heads[0][k], heads[1][k]), 1) for k in heads[0]}


def _noise_sensitivity(model: torch.nn.Module, image: torch.Tensor) -> dict:
    """SQNR (dB) of the float backbone outputs when 1% Gaussian noise (40 dB) is added after the
    stem: how much the weights amplify a small perturbation such as int8 rounding."""
    x, _, _ = model.transform([image], None)
    clean = model.backbone(x)
    gen = torch.Generator().manual_seed(0)

    def noisy(_m, _a, out):
        return out + 0.01 * out.std() * torch.randn(out.shape, generator=gen)

    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    handle = first_conv.register_forward_hook(noisy)
    try:
        perturbed = model.backbone(x)
    finally:
        handle.remove()
    return {k: round(_sqnr(clean[k], perturbed[k]), 1) for k in clean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobile_parsing_rcnn_b")
    parser.add_argument("--weights", default=str(FIXTURE / "model_final.pth"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--detections", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="x86")
    parser.add_argument("--calibration", type=int, default=4, help="calibration images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    weights = None if args.weights == "none" else Path(args.weights)
    use_fixture = weights is not None and weights.is_file()
    image = _image(FIXTURE / "input.png" if use_fixture else None, args.size)
    if min(image.shape[-2:]) != args.size:
        image = benchmark_image(args.size)
    spec = load_spec(args.preset, benchmark_overrides(args.size, args.detections))
    model = build_detector(spec).eval()
    if use_fixture:
        load_weights(model, weights)
    else:
        calibrate_batch_norm(model, [image])

    calib = [image, image.flip(-1)]
    calib += [benchmark_image(args.size, seed=s) for s in range(1, args.calibration - 1)]
    config = PTQConfig(backend=args.backend, num_calibration_images=args.calibration)
    quantizer = config.build()
    int8 = quantizer.quantize(model, [([im],) for im in calib[: args.calibration]])

    reference = copy.deepcopy(model)
    fold_batch_norm(reference, [image])
    with tempfile.TemporaryDirectory() as tmp:
        mb_float = state_dict_megabytes(model, Path(tmp) / "float.pt")
        mb_int8 = state_dict_megabytes(int8, Path(tmp) / "int8.pt")

    with torch.inference_mode():
        det_f = reference([image])[0]
        det_q = int8([image])[0]
        counts = (len(det_f["boxes"]), len(det_q["boxes"]))
        if counts != (args.detections, args.detections):
            raise RuntimeError(f"detections float/int8 = {counts}, expected {args.detections}")
        times = time_models(
            [lambda: reference([image]), lambda: int8([image])], runs=args.runs, warmup=2
        )
        dp_f = _densepose_on(reference, image, det_f["boxes"])
        dp_q = _densepose_on(int8, image, det_f["boxes"])
        iou = box_iou(det_f["boxes"], det_q["boxes"]).max(dim=1).values
        head_sqnr = _head_only_sqnr(reference, int8, image, det_f["boxes"])
        chaos = _noise_sensitivity(reference, image)

    deviation = {}
    for key in dp_f:
        diff = float((dp_f[key] - dp_q[key]).abs().max())
        scale = float(dp_f[key].abs().max())
        deviation[key] = {"max_abs": round(diff, 4), "relative": round(diff / scale, 4)}
    labels_agree = float(
        (dp_f["fine_segm"].argmax(1) == dp_q["fine_segm"].argmax(1)).float().mean()
    )
    ms_f, ms_q = median(times[0]), median(times[1])
    print(
        json.dumps(
            {
                "benchmark": "quantization (float32 vs int8 PTQ)",
                "preset": args.preset,
                "weights": str(weights) if use_fixture else "random, BN calibrated",
                "image": [int(s) for s in image.shape[-2:]],
                "threads": args.threads,
                "backend": args.backend,
                "detections": args.detections,
                "units": quantization_plan(int8)["units"],
                "size_mb": {"float32": round(mb_float, 3), "int8": round(mb_int8, 3)},
                "size_ratio": round(mb_float / mb_int8, 2),
                "latency_ms": {"float32": round(ms_f, 1), "int8": round(ms_q, 1)},
                "speedup": round(ms_f / ms_q, 2),
                "densepose_deviation_same_boxes": deviation,
                "fine_segm_label_agreement": round(labels_agree, 4),
                "densepose_head_only_sqnr_db": head_sqnr,
                "float_backbone_sqnr_db_under_1pct_stem_noise": chaos,
                "box_iou_int8_vs_float": {
                    "min": round(float(iou.min()), 3),
                    "mean": round(float(iou.mean()), 3),
                },
                "paper": {"size_mb": [13.8, 4.3], "fps": [4.976, 8.31], "speedup": 1.67},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
