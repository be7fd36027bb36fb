"""Regenerate docs/results.md: the paper's Tables 4, 5 and 6 measured on a trained model.

    uv run python scripts/results_tables.py --model mobile_parsing_rcnn_b_toy
    uv run python scripts/results_tables.py --weights runs/b/model.safetensors --json out.json
    uv run python scripts/results_tables.py --from-json docs/results.json   # only the markdown

Everything is measured on the held-out toy split (toy data generated with seed 1, 100 ``val``
images: a different random stream from the training data, seed 0) at the model's own test size:

* Table 6, quantization: float32 (``fnl_detector.Predictor`` on PyTorch), int8
  post-training quantization (fnl-quant ``ptq``, calibrated on images of the seed-1 train
  split), int8 quantization-aware training (``qat``, a short fine-tune on that split), and the
  single-graph ONNX export under ONNX Runtime (fp32 and int8) when fnl-runtime is installed:
  size on disk, CPU latency, box AP, GPS AP, GPSm AP.
* Table 4, image size: the test short side swept (AP and latency).
* Table 5, people per image: the split filtered to images with at most k people.

Tables 4 and 5 run the float model as ``fnl predict`` does (the Predictor's default backend:
ONNX Runtime when onnx/onnxruntime are installed, else PyTorch); the markdown says which.

Latency: batch 1, the median over the first ``--latency-images`` held-out images after two
warm-up calls, on ``--threads`` torch/ORT threads. The script also writes the raw numbers as
JSON (``--json``). Numbers depend on the machine and its load; the header says what it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = ["seed=1", 'num_images={"train": 64, "val": 100}']


def _ap(metrics: dict[str, Any], key: str) -> float | None:
    value = (metrics.get(key) or {}).get("AP")
    return None if value is None else 100.0 * float(value)


class _Subset:
    """A dataset restricted to some records, with its own ground-truth file."""

    def __init__(self, dataset: Any, records: list[Any], gt_json: Path) -> None:
        self._dataset = dataset
        self.records = records
        self.gt_json = str(gt_json)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataset, name)


def _people(record: Any) -> int:
    return sum(1 for a in record.annotations if not getattr(a, "iscrowd", False))


def _file_size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def _median_latency_ms(run: Callable[[Any], Any], images: list[Any]) -> float:
    for image in images[:2]:
        run(image)
    times = []
    for image in images:
        start = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


class Bench:
    """The held-out data, the evaluator and helpers shared by every row."""

    def __init__(self, args: argparse.Namespace) -> None:
        from fnl_detector.train.evaluate import build_evaluator
        from fnl_detector.train.sources import parse_data

        self.args = args
        self.source = parse_data("toy", HELD_OUT, val_split="val")
        self.dataset = self.source.build("val")
        self.records = list(self.dataset.records)
        if args.max_images:
            self.records = self.records[: args.max_images]
        self.evaluator = build_evaluator("toy")
        self.images = [self.dataset.load_image(r) for r in self.records]
        self.work = Path(tempfile.mkdtemp(prefix="fnl-results-"))

    def subset(self, records: list[Any], name: str) -> _Subset:
        from fnl_detector.train.evaluate import subset_gt_json

        ids = {r.image_id for r in records}
        gt = subset_gt_json(Path(self.dataset.gt_json), ids, self.work / f"gt_{name}.json")
        return _Subset(self.dataset, records, gt)

    def score(self, predict: Callable[[Any], list[dict]], records: list[Any], name: str):
        """Metrics of ``predict`` (image → DensePose-COCO results of that image) on records."""
        from fnl_detector.train.evaluate import _plain

        data = self.subset(records, name)
        results: list[dict] = []
        for record in records:
            for entry in predict(self.dataset.load_image(record)):
                results.append({**entry, "image_id": record.image_id})
        if not results:
            return {"bbox": {"AP": 0.0}, "gps": {"AP": 0.0}, "gpsm": {"AP": 0.0}}
        return _plain(self.evaluator.evaluate(Path(data.gt_json), results))


def torch_predict(predictor: Any) -> Callable[[Any], list[dict]]:
    from fnl_detector.results import to_coco_results

    def predict(image: Any) -> list[dict]:
        return to_coco_results(0, predictor([image])[0])

    return predict


def row(name: str, metrics: dict[str, Any], latency: float, size_mb: float | None) -> dict:
    return {
        "name": name,
        "size_mb": None if size_mb is None else round(size_mb, 2),
        "latency_ms": round(latency, 1),
        "box_ap": _ap(metrics, "bbox"),
        "gps_ap": _ap(metrics, "gps"),
        "gpsm_ap": _ap(metrics, "gpsm"),
        "mask_ap": _ap(metrics, "segm"),
    }


def float_predictor(
    args: argparse.Namespace, overrides: list[str] = (), backend: str = "auto"
) -> Any:
    """The float model as users run it (``backend="auto"``: ONNX Runtime where installed)."""
    from fnl_detector.predictor import Predictor

    return Predictor(
        args.resolved.spec,
        args.resolved.weights,
        overrides=list(overrides),
        device="cpu",
        threads=args.threads,
        backend=backend,
    )


def table6(bench: Bench, args: argparse.Namespace) -> list[dict]:
    import torch

    from fnl_detector.loading import load_model
    from fnl_detector.model_eval import calibration_images, int8_model
    from fnl_detector.predictor import Predictor

    rows = []
    images = bench.images[: args.latency_images]
    fp32 = float_predictor(args, backend="torch")
    weights_mb = _file_size_mb(Path(args.resolved.weights))
    metrics = bench.score(torch_predict(fp32), bench.records, "fp32")
    rows.append(row("float32 (PyTorch)", metrics, _median_latency_ms(fp32, images), weights_mb))
    print(f"table 6: float32 {rows[-1]}", file=sys.stderr)

    calib = calibration_images(bench.source, args.calibration_images)
    variants: list[tuple[str, Any]] = []
    float_model = load_model(args.resolved.spec, args.resolved.weights)
    variants.append(("int8 PTQ (PyTorch)", int8_model(float_model, images=calib)))
    if args.qat_iterations:
        variants.append(("int8 QAT (PyTorch)", qat_model(args, bench)))
    for name, model in variants:
        predictor = Predictor.from_model(model, optimize=False, copy_model=False)
        size = _saved_int8_size_mb(model)
        metrics = bench.score(torch_predict(predictor), bench.records, name)
        rows.append(row(name, metrics, _median_latency_ms(predictor, images), size))
        print(f"table 6: {name} {rows[-1]}", file=sys.stderr)
    rows.extend(onnx_rows(bench, args))
    torch.set_num_threads(args.threads)
    return rows


def _saved_int8_size_mb(model: Any) -> float:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "int8.pt"
        torch.save(model.state_dict(), path)
        return _file_size_mb(path)


def qat_model(args: argparse.Namespace, bench: Bench) -> Any:
    """A short QAT fine-tune on the held-out data's train split, through ``fnl quantize``."""
    import subprocess

    from fnl_detector.loading import load_model

    out = bench.work / "qat"
    command = [
        sys.executable, "-m", "fnl_core.cli", "quantize", "--method", "qat",
        "--out", str(out), "--data", "toy", "--threads", str(args.threads),
        "--q-set", f"iterations={args.qat_iterations}", "--runs", "1", "--size", "240",
    ]  # fmt: skip
    command += ["--model", args.model] if args.model else ["--weights", args.weights]
    for option in HELD_OUT:
        command += ["--data-set", option]
    subprocess.run(command, check=True)
    return load_model(args.resolved.spec, out)


def runtime_predict(runtime: Any) -> Callable[[Any], list[dict]]:
    def predict(image: Any) -> list[dict]:
        return runtime.coco_results(0, runtime(image))

    return predict


def onnx_rows(bench: Bench, args: argparse.Namespace) -> list[dict]:
    """ONNX Runtime rows (the fp32 and int8 single graphs of ``fnl export --int8``), when
    fnl-runtime is installed."""
    try:
        from fnl_runtime import Runtime
    except ImportError:
        print("table 6: fnl-runtime not installed, no ONNX rows", file=sys.stderr)
        return []
    import subprocess

    out = bench.work / "onnx"
    command = [sys.executable, "-m", "fnl_core.cli", "export", "--out", str(out), "--int8"]
    command += ["--calib-images", str(args.calibration_images)]
    command += ["--model", args.model] if args.model else ["--weights", args.weights]
    subprocess.run(command, check=True)
    rows = []
    images = bench.images[: args.latency_images]
    for int8 in (False, True):
        runtime = Runtime(out, int8=int8, threads=args.threads)
        metrics = bench.score(runtime_predict(runtime), bench.records, f"onnx{int(int8)}")
        latency = _median_latency_ms(runtime, images)
        name = f"{'int8' if int8 else 'float32'} (ONNX Runtime)"
        rows.append(row(name, metrics, latency, _file_size_mb(runtime.path)))
        print(f"table 6: {name} {rows[-1]}", file=sys.stderr)
    return rows


def table4(bench: Bench, args: argparse.Namespace) -> list[dict]:
    rows = []
    for size in args.sizes:
        predictor = float_predictor(args, [f"input.min_size_test={size}"])
        metrics = bench.score(torch_predict(predictor), bench.records, f"size{size}")
        latency = _median_latency_ms(predictor, bench.images[: args.latency_images])
        rows.append(
            {
                "short_side": size,
                "backend": predictor.backend,
                **row(f"{size} px", metrics, latency, None),
            }
        )
        print(f"table 4: {rows[-1]}", file=sys.stderr)
    return rows


def table5(bench: Bench, args: argparse.Namespace) -> list[dict]:
    rows = []
    predictor = float_predictor(args)
    for k in range(1, 5):
        records = [r for r in bench.records if _people(r) <= k]
        if not records:
            continue
        images = [bench.dataset.load_image(r) for r in records[: args.latency_images]]
        metrics = bench.score(torch_predict(predictor), records, f"people{k}")
        latency = _median_latency_ms(predictor, images)
        rows.append(
            {
                "max_people": k,
                "images": len(records),
                "backend": predictor.backend,
                **row(f"≤{k}", metrics, latency, None),
            }
        )
        print(f"table 5: {rows[-1]}", file=sys.stderr)
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _backend_line(rows: list[dict]) -> list[str]:
    """The sentence saying what ran the rows of Tables 4 and 5 (the Predictor's default)."""
    backends = sorted({r["backend"] for r in rows if "backend" in r})
    if not backends:
        return []
    names = {"onnxruntime": "ONNX Runtime", "torch": "PyTorch"}
    ran = " and ".join(names.get(b, b) for b in backends)
    return [f"Run as `fnl predict` runs the float model: the default backend ({ran}).", ""]


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Results: the paper's tables on FnL's toy-trained model",
        "",
        "Generated by `scripts/results_tables.py` (do not edit by hand; rerun it). Model: "
        f"`{report['model']}`. Held-out data: toy humans generated with **seed 1** (the model "
        f"was trained on seed 0), {report['images']} `val` images of 320×240 px. AP in percent "
        "(box AP, GPS AP and GPSm AP as `fnl eval` reports them). Latency: batch 1, median over "
        f"{report['latency_images']} images, {report['threads']} CPU thread(s), on {m['cpu']} "
        f"({m['cores']} cores, load average {m['load']} when the run started; other work was "
        "running, so compare rows, not machines).",
        "",
        f"## Table 6: quantization and ONNX Runtime (test size {report['test_size']} px)",
        "",
        "| model | size (MB) | latency (ms) | box AP | GPS AP | GPSm AP |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["table6"]:
        lines.append(
            f"| {r['name']} | {_fmt(r['size_mb'], 2)} | {_fmt(r['latency_ms'])} | "
            f"{_fmt(r['box_ap'])} | {_fmt(r['gps_ap'])} | {_fmt(r['gpsm_ap'])} |"
        )
    lines += [
        "",
        "## Table 4: test image size (short side)",
        "",
        *_backend_line(report["table4"]),
        "| short side | latency (ms) | box AP | GPS AP | GPSm AP |",
        "|---|---|---|---|---|",
    ]
    for r in report["table4"]:
        lines.append(
            f"| {r['short_side']} | {_fmt(r['latency_ms'])} | {_fmt(r['box_ap'])} | "
            f"{_fmt(r['gps_ap'])} | {_fmt(r['gpsm_ap'])} |"
        )
    lines += [
        "",
        "## Table 5: people per image (held-out images with at most k people)",
        "",
        *_backend_line(report["table5"]),
        "| max people | images | latency (ms) | box AP | GPS AP | GPSm AP |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["table5"]:
        lines.append(
            f"| {r['max_people']} | {r['images']} | {_fmt(r['latency_ms'])} | "
            f"{_fmt(r['box_ap'])} | {_fmt(r['gps_ap'])} | {_fmt(r['gpsm_ap'])} |"
        )
    lines += [
        "",
        "Reading the tables: the rows come from one run of the script, one after another, so "
        "latency differences under 10-20 % are within this machine's noise. The int8 rows keep "
        "the paper's float islands (BiFPN fusion, RPN outputs, RoI pooling). The toy model was "
        "trained at 240 px only, so other test sizes move it away from its training scale in "
        "both directions.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="named model (fnl list models)")
    parser.add_argument("--weights", help="weights file carrying its spec")
    parser.add_argument("--out", default=str(REPO / "docs" / "results.md"))
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-images", type=int, default=20)
    parser.add_argument("--max-images", type=int, help="evaluate on the first N images only")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--qat-iterations", type=int, default=200, help="0: no QAT row")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 200, 240, 320, 400])
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--tables", nargs="+", default=["6", "4", "5"])
    parser.add_argument("--from-json", help="only rewrite --out from a --json file of a run")
    args = parser.parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        Path(args.out).write_text(markdown(report), encoding="utf-8")
        return 0
    if bool(args.model) == bool(args.weights):
        parser.error("pass exactly one of --model NAME or --weights PATH")

    import torch

    from fnl_detector.loading import resolve_model
    from fnl_detector.spec import load_spec

    torch.set_num_threads(args.threads)
    args.resolved = resolve_model(model=args.model, weights=args.weights)
    spec = load_spec(args.resolved.spec)
    bench = Bench(args)
    if args.no_onnx:
        globals()["onnx_rows"] = lambda bench, args: []
    report: dict[str, Any] = {
        "model": args.model or args.weights,
        "images": len(bench.records),
        "latency_images": args.latency_images,
        "threads": args.threads,
        "test_size": spec.input.min_size_test,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load": round(os.getloadavg()[0], 1),
        },
        "table6": table6(bench, args) if "6" in args.tables else [],
        "table4": table4(bench, args) if "4" in args.tables else [],
        "table5": table5(bench, args) if "5" in args.tables else [],
    }
    Path(args.out).write_text(markdown(report), encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
