#!/usr/bin/env python3
"""ONNX Runtime (fnl-runtime, fp32 and int8) against the PyTorch Predictor (JSON).

    uv run python benchmarks/bench_runtime.py [--model mobile_parsing_rcnn_b] [--size 512]
        [--detections 5] [--runs 10] [--threads 1 2] [--weights W] [--calib-images 8]
        [--busy N]

One model (random weights with BatchNorm calibrated on the image, or ``--weights``), one fixed
uint8 image at the test size with exactly K detections. The model is exported once
(``fnl_detector.export``: BN folded, one graph) and quantised (QDQ int8, calibrated on toy
images); then, for each thread count, three paths run alternately, each end to end from the
uint8 image to boxes and DensePose outputs in the original frame:

* ``pytorch_plain``: the PyTorch model as built (``Predictor(optimize=False)``, what
  ``fnl bench --plain`` times);
* ``pytorch``: :class:`fnl_detector.Predictor` on PyTorch (``backend="torch"``: BN folded,
  channels_last, parallel RoIAlign/NMS), ``torch.set_num_threads(t)``;
* ``onnx_fp32`` / ``onnx_int8``: :class:`fnl_runtime.Runtime` with ``t`` intra-op threads.

Each row gives the median and the spread (min, max) over the runs, the ratios to the plain
model, to the Predictor and to ONNX Runtime fp32, the
1-minute load average before and after (the machine may be shared: compare rows of one run
only), file sizes, and for int8 the time spent per operator type (onnxruntime profile).
``--busy N`` starts N processes that each keep one core busy (``while 1: pass``) for the
timed runs and stops them afterwards (a machine shared with other work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fnl_detector.threads import prefer_passive_omp_wait

prefer_passive_omp_wait()

import torch  # noqa: E402

from fnl_detector.analysis import (  # noqa: E402
    benchmark_image,
    benchmark_overrides,
    calibrate_batch_norm,
    median,
    time_models,
)
from fnl_detector.build import build_detector  # noqa: E402
from fnl_detector.commands.export import calibration_images  # noqa: E402
from fnl_detector.export import INT8_FILE, MODEL_FILE, export_onnx, quantize_onnx  # noqa: E402
from fnl_detector.loading import load_weights  # noqa: E402
from fnl_detector.predictor import Predictor  # noqa: E402
from fnl_detector.spec import load_spec  # noqa: E402
from fnl_runtime import Runtime  # noqa: E402


def op_profile(folder: Path, model: str, image, threads: int, runs: int = 3) -> dict[str, float]:
    """Milliseconds per run spent in each operator type (onnxruntime's profiler)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"profile_{model}")
    session = ort.InferenceSession(str(folder / model), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"image": image})
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + e["dur"] / 1000 / runs
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:8]
    return {k: round(v, 1) for k, v in top}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobile_parsing_rcnn_b")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--detections", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--calib-images", type=int, default=8)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes while timing")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    image = benchmark_image(args.size).round().to(torch.uint8)
    pixels = image.permute(1, 2, 0).numpy().copy()
    model = build_detector(
        load_spec(args.model, benchmark_overrides(args.size, args.detections))
    ).eval()
    if args.weights:
        load_weights(model, args.weights)
    else:
        calibrate_batch_norm(model, [image.float()])
    predictor = Predictor.from_model(model, optimize=True, backend="torch")
    plain = Predictor.from_model(model, optimize=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_onnx(model, folder, pixels)
        calib = calibration_images(model, "toy", args.calib_images)
        quantize_onnx(folder / MODEL_FILE, folder / INT8_FILE, calib)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["int8"] = {"model": INT8_FILE}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        sizes = {name: (folder / name).stat().st_size for name in (MODEL_FILE, INT8_FILE)}
        rows = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            runtimes = {
                "onnx_fp32": Runtime(folder, threads=threads),
                "onnx_int8": Runtime(folder, int8=True, threads=threads),
            }
            counts = {
                "pytorch_plain": len(plain(pixels)["boxes"]),
                "pytorch": len(predictor(pixels)["boxes"]),
            }
            counts.update({k: len(r(pixels)["boxes"]) for k, r in runtimes.items()})
            if any(n != args.detections for n in counts.values()):
                raise RuntimeError(f"expected {args.detections} detections, got {counts}")
            load_before = os.getloadavg()[0]
            fns = [
                lambda: plain(pixels),
                lambda: predictor(pixels),
                *(lambda r=r: r(pixels) for r in runtimes.values()),
            ]
            spinners = [
                subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.busy)
            ]
            try:
                times = time_models(fns, runs=args.runs, warmup=args.warmup)
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
            load_after = os.getloadavg()[0]
            med = dict(zip(["pytorch_plain", "pytorch", *runtimes], (median(t) for t in times)))
            for (path, ms), t in zip(med.items(), times):
                rows.append(
                    {
                        "path": path,
                        "threads": threads,
                        "median_ms": round(ms, 1),
                        "min_ms": round(min(t), 1),
                        "max_ms": round(max(t), 1),
                        "speedup_vs_pytorch_plain": round(med["pytorch_plain"] / ms, 3),
                        "speedup_vs_pytorch": round(med["pytorch"] / ms, 3),
                        "speedup_vs_onnx_fp32": round(med["onnx_fp32"] / ms, 3),
                        "detections": counts[path],
                        "loadavg_1min_before_after": [load_before, load_after],
                    }
                )
        profile = {name: op_profile(folder, name, pixels, args.threads[0]) for name in sizes}
    result = {
        "model": args.model,
        "weights": args.weights or "random, BatchNorm calibrated on the image",
        "input_hw": list(pixels.shape[:2]),
        "runs": args.runs,
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "busy_processes": args.busy,
        "file_bytes": sizes,
        "int8_size_ratio": round(sizes[INT8_FILE] / sizes[MODEL_FILE], 3),
        "rows": rows,
        f"op_ms_per_run_{args.threads[0]}_thread": profile,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
