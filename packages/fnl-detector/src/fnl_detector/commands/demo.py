"""``fnl demo``: the paper in miniature on the built-in toy data, on a CPU, in minutes.

1. Generates the synthetic toy-humans dataset (cached).
2. Evaluates the shipped named model ``mobile_parsing_rcnn_b_toy`` (Mobile Parsing R-CNN B
   trained by FnL on toy data) on the held-out split, in float32 and as its int8 post-training
   quantized version (fnl-quant, PyTorch; and the statically quantised ONNX graph under ONNX
   Runtime when fnl-runtime is installed), and draws its predictions next to the ground truth
   (``predictions.png``).
3. Trains ``mobile_parsing_rcnn_b`` from random weights with the CPU recipe of
   :mod:`fnl_detector.train.recipes` for ``--minutes``, scoring it before and after, to show
   that the loop learns (losses falling, AP rising; ``scratch_predictions.png``).
4. Prints one table row per model: parameters, weights size, latency, box AP, GPS AP, GPSm AP
   (also in ``demo_summary.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import non_negative_int, positive_float, positive_int


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--minutes",
        type=positive_float,
        default=3.0,
        help="from-scratch training budget in minutes (default 3)",
    )
    parser.add_argument("--out", default="fnl-demo", help="output folder (default ./fnl-demo)")
    parser.add_argument("--train-images", type=positive_int, default=300)
    parser.add_argument("--val-images", type=positive_int, default=30)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--model",
        default="mobile_parsing_rcnn_b_toy",
        help="named model evaluated first (fnl list models); '' skips it",
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 row")
    parser.add_argument("--no-progress", action="store_true")


def measure_latency(predictor: Any, images: list[Any], warmup: int = 2) -> float:
    """Mean time per image in milliseconds of a :class:`~fnl_detector.Predictor` or an
    ``fnl_runtime.Runtime`` (batch of one, preprocessing included, after warm-up)."""
    import torch

    for image in images[:warmup]:
        predictor(image)
    start = time.perf_counter()
    for image in images:
        predictor(image)
    if getattr(getattr(predictor, "device", None), "type", None) == "cuda":
        torch.cuda.synchronize()
    return 1000.0 * (time.perf_counter() - start) / max(len(images), 1)


def write_gallery(predictor: Any, dataset: Any, out_path: Path, count: int = 3) -> None:
    """Predictions (left) next to ground truth (right) for the first ``count`` images."""
    import numpy as np
    from PIL import Image

    from fnl_core.visualize import draw_ground_truth, side_by_side

    rows = []
    for record in dataset.records[:count]:
        image = dataset.load_image(record)
        pred = predictor(image, iuv=True)
        left = pred.plot(image, min_score=0.5)
        right = draw_ground_truth(image, record)
        rows.append(side_by_side(left, right, ("prediction (score > 0.5)", "ground truth")))
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    Image.fromarray(np.concatenate(padded)).save(out_path)


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def _row(
    name: str, model: Any, size_mb: float, latency: float, metrics: dict, runtime: str
) -> dict:
    def ap(key: str) -> float:
        return 100.0 * float((metrics.get(key) or {}).get("AP", 0.0))

    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "size_mb": size_mb,
        "latency_ms": latency,
        "runtime": runtime,
        "box_AP": ap("bbox"),
        "gps_AP": ap("gps"),
        "gpsm_AP": ap("gpsm"),
    }


def shipped_model_rows(args: argparse.Namespace, train_set: Any, val_set: Any, out: Path):
    """Rows of the named model in float32 and int8 (PTQ calibrated on 16 training images)."""
    import torch

    from fnl_detector.loading import load_model, resolve_model
    from fnl_detector.model_eval import int8_model
    from fnl_detector.predictor import Predictor
    from fnl_detector.train.evaluate import evaluate_model, image_tensor

    resolved = resolve_model(model=args.model, progress=not args.no_progress)
    model = load_model(resolved.spec, resolved.weights)
    images = [val_set.load_image(r) for r in val_set.records[:10]]
    print(f"evaluating the shipped model {args.model} ({resolved.weights.name})...")
    metrics = evaluate_model(model, val_set, torch.device("cpu"), "toy", out / "shipped")
    predictor = Predictor.from_model(model, optimize=True)
    rows = [
        _row(args.model, model, _size_mb(resolved.weights), measure_latency(predictor, images),
             metrics, predictor.backend)
    ]  # fmt: skip
    write_gallery(predictor, val_set, out / "predictions.png")
    if args.no_int8:
        return rows
    print("int8: post-training quantization calibrated on 16 training images...")
    calibration = [image_tensor(train_set.load_image(r), torch.device("cpu"))
                   for r in train_set.records[:16]]  # fmt: skip
    quantized = int8_model(load_model(resolved.spec, resolved.weights), images=calibration)
    metrics = evaluate_model(quantized, val_set, torch.device("cpu"), "toy", out / "shipped_int8")
    int8_file = out / "shipped_int8.pt"
    torch.save(quantized.state_dict(), int8_file)
    int8_predictor = Predictor.from_model(quantized, optimize=False, copy_model=False)
    latency = measure_latency(int8_predictor, images)
    rows.append(
        _row(f"{args.model} int8", model, _size_mb(int8_file), latency, metrics, "torch int8")
    )
    onnx_row = onnx_int8_row(args, model, train_set, val_set, out, images)
    if onnx_row is not None:
        rows.append(onnx_row)
    return rows


def onnx_int8_row(
    args: argparse.Namespace, model: Any, train_set: Any, val_set: Any, out: Path, images: list
) -> dict | None:
    """The same model as the deployment path runs it in int8: exported to one ONNX graph,
    statically quantised (QDQ) on the same 16 training images, run by ``fnl_runtime.Runtime``.
    None when onnx, onnxruntime or fnl-runtime is not installed."""
    from importlib.util import find_spec

    from fnl_detector.predictor import onnxruntime_installed

    if not onnxruntime_installed() or find_spec("fnl_runtime") is None:
        print("int8 on ONNX Runtime: skipped (needs fnl-detector[export] and fnl-runtime)")
        return None
    import numpy as np
    import torch

    from fnl_core.imaging import resize_shortest_edge
    from fnl_detector.export import INT8_FILE, add_int8_graph, export_onnx, write_json_atomic
    from fnl_detector.train.evaluate import score_results
    from fnl_runtime import Runtime

    print("int8 on ONNX Runtime: export, static quantization on the same 16 training images...")
    t = model.transform
    calibration = [
        resize_shortest_edge(np.asarray(train_set.load_image(r)), t.min_size_test, t.max_size_test)
        for r in train_set.records[:16]
    ]
    folder = out / "shipped_onnx"
    manifest_path = export_onnx(model, folder, calibration[0])
    manifest = json.loads(manifest_path.read_text())
    add_int8_graph(folder, manifest, calibration)
    write_json_atomic(manifest_path, manifest)
    runtime = Runtime(folder, int8=True, threads=torch.get_num_threads())
    results = [
        entry
        for record in val_set.records
        for entry in runtime.coco_results(record.image_id, runtime(val_set.load_image(record)))
    ]
    metrics = score_results(
        results, val_set.gt_json, len(val_set.records), "toy", out / "shipped_onnx_int8"
    )
    latency = measure_latency(runtime, images)
    size = _size_mb(folder / INT8_FILE)
    return _row(f"{args.model} int8", model, size, latency, metrics, "onnxruntime int8")


def _loss_summary(metrics_file: Path) -> tuple[float, float] | None:
    """Mean total loss over the first and the last fifth of the logged steps."""
    lines = [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
    losses = [x["total_loss"] for x in lines if "total_loss" in x]
    if len(losses) < 2:
        return None
    k = max(1, len(losses) // 5)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def _run(args: argparse.Namespace) -> int:
    from fnl_core.outputs import check_output_dir

    check_output_dir(args.out)  # the demo replaces its own last run, but must be able to write
    import torch

    from fnl_core import groups, registry
    from fnl_detector.predictor import Predictor
    from fnl_detector.spec import load_spec
    from fnl_detector.train.config import TrainConfig
    from fnl_detector.train.evaluate import require_evaluator
    from fnl_detector.train.loop import Trainer
    from fnl_detector.train.recipes import (
        TOY_CPU_SPEC_OVERRIDES,
        TOY_CPU_TRAIN_OPTIONS,
        TOY_SIZE,
        cpu_threads,
    )

    out = Path(args.out)
    require_evaluator("toy", purpose="fnl demo's evaluation")
    if args.model:
        from fnl_core.models import get_card

        get_card(args.model)  # an unknown name fails now, in one line
    t0 = time.perf_counter()
    data_cfg = registry.get(groups.DATASETS, "toy")(
        num_images={"train": args.train_images, "val": args.val_images}, seed=args.seed
    )
    print(f"generating toy data ({args.train_images} train / {args.val_images} val images)...")
    train_set, val_set = data_cfg.build(split="train"), data_cfg.build(split="val")
    print(f"  data ready in {time.perf_counter() - t0:.0f} s ({data_cfg.cache_folder()})")
    threads = cpu_threads()
    torch.set_num_threads(threads)

    rows: list[dict[str, Any]] = []
    scratch = out / "scratch"
    if args.model:
        out.mkdir(parents=True, exist_ok=True)
        rows += shipped_model_rows(args, train_set, val_set, out)

    spec = load_spec("mobile_parsing_rcnn_b", TOY_CPU_SPEC_OVERRIDES)
    config = TrainConfig.scaled(
        100_000,
        **{
            **TOY_CPU_TRAIN_OPTIONS,
            "max_minutes": args.minutes,
            "seed": args.seed,
            "device": args.device,
            "num_threads": threads,
            "eval_at_start": True,
        },
    )
    print(
        f"training mobile_parsing_rcnn_b from scratch for {args.minutes:g} min "
        f"(batch {config.batch_size}, lr {config.lr}, {config.device}, "
        f"{config.num_threads} thread(s))..."
    )
    trainer = Trainer(
        config,
        train_set,
        scratch,
        spec=spec,
        eval_set=val_set,
        surface="toy",
        overwrite=True,  # a demo folder holds the last demo: running it again replaces it
        progress=not args.no_progress,
    )
    summary = trainer.train()
    model = trainer.model.eval()
    predictor = Predictor.from_model(model, optimize=True)
    images = [val_set.load_image(r) for r in val_set.records[:10]]
    write_gallery(predictor, val_set, out / "scratch_predictions.png")
    scratch_name = f"scratch, {summary['iterations']} steps"
    rows.append(
        _row(scratch_name, model, _size_mb(scratch / "model.safetensors"),
             measure_latency(predictor, images), summary.get("eval") or {}, predictor.backend)
    )  # fmt: skip
    history = [
        {
            "iteration": h["iteration"],
            **{f"{k}_AP": round(100.0 * h[k]["AP"], 1) for k in ("bbox", "gps", "gpsm") if k in h},
        }
        for h in trainer.eval_history
    ]
    losses = _loss_summary(scratch / "metrics.jsonl")
    report = {
        "rows": rows,
        "train_iterations": summary["iterations"],
        "train_minutes": summary["train_seconds"] / 60,
        "total_minutes": (time.perf_counter() - t0) / 60,
        "threads": torch.get_num_threads(),
        "loss_first_last": losses,
        "scratch_eval_history": history,
    }
    (out / "demo_summary.json").write_text(json.dumps(report, indent=2))
    print()
    print(
        f"{'model':34s} {'params':>10s} {'size MB':>8s} {'latency ms':>11s} {'runtime':>16s} "
        f"{'box AP':>7s} {'GPS AP':>7s} {'GPSm AP':>8s}"
    )
    for r in rows:
        print(
            f"{r['model']:34s} {r['params']:>10,d} {r['size_mb']:>8.1f} {r['latency_ms']:>11.0f} "
            f"{r['runtime']:>16s} {r['box_AP']:>7.1f} {r['gps_AP']:>7.1f} {r['gpsm_AP']:>8.1f}"
        )
    if losses:
        print(f"\nfrom scratch: total loss {losses[0]:.2f} -> {losses[1]:.2f} (first/last fifth)")
    for h in history:
        print(f"from scratch, step {h['iteration']}: " + ", ".join(
            f"{k} {v}" for k, v in h.items() if k != "iteration"))  # fmt: skip
    print(
        f"latency: batch 1 at {TOY_SIZE} px short side, {report['threads']} thread(s); held-out "
        f"split: {len(val_set.records)} toy images. {report['total_minutes']:.1f} min in all.\n"
        f"Files in {out}: predictions.png (shipped model), scratch_predictions.png, "
        "demo_summary.json, scratch/ (loss_curve.png, metrics.jsonl, model.safetensors)"
        + (
            ", shipped_onnx/ (fp32 and int8 ONNX graphs: fnl run)"
            if (out / "shipped_onnx").is_dir()
            else ""
        )
    )
    return 0


command = Command(
    help="the paper in miniature on toy data: shipped model (fp32, int8), a short training "
    "run from scratch, one table",
    configure=_configure,
    run=_run,
)
