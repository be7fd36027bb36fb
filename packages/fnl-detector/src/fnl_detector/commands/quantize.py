"""``fnl quantize SPEC --weights W --method ptq|qat --data toy --out DIR``: an int8 detector.

PTQ calibrates on the first images of the dataset's training split; QAT fine-tunes with the
model's own training losses on it. The quantizer comes from the ``fnl.quantizers`` registry
(fnl-quant). The result is saved as a weights-only state dict plus JSON metadata (see
docs/quantization.md), then size and latency float vs int8 are printed: same image, shortest
side ``--size``, exactly ``--detections`` detections in both.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fnl_core.command import Command
from fnl_core.outputs import add_overwrite_argument
from fnl_detector.commands import (
    add_overrides_argument,
    check_spec_arguments,
    non_negative_int,
    positive_int,
    progress,
)
from fnl_detector.commands._weights import add_model_arguments, model_from_args


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        nargs="?",
        help="spec file (.json/.yaml) or preset name (default: --model's, or "
        "the one stored with --weights)",
    )
    parser.add_argument("--weights", help="float weights of the model (or --model NAME)")
    add_model_arguments(parser, weights=False, spec=False)
    parser.add_argument("--method", default="ptq", help="registered quantizer: ptq | qat")
    parser.add_argument("--data", default="toy", help="toy | coco:PATH (calibration/QAT data)")
    parser.add_argument("--out", required=True, help="output folder for the int8 model")
    add_overwrite_argument(parser)
    add_overrides_argument(parser, "spec override (repeatable)")
    parser.add_argument(
        "--q-set",
        dest="quant_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="quantizer option, e.g. backend=qnnpack, iterations=20 (repeatable)",
    )
    parser.add_argument(
        "--data-set",
        dest="data_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. num_images='{\"train\": 16}' (repeatable)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=2, help="QAT images per step")
    parser.add_argument("--size", type=positive_int, default=512, help="benchmark shortest side")
    parser.add_argument(
        "--detections", type=non_negative_int, default=5, help="benchmark detections"
    )
    parser.add_argument("--runs", type=positive_int, default=5, help="timed runs per model")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=non_negative_int, default=0)


def _quantizer_config(method: str, options: list[str]) -> Any:
    from fnl_core import groups, registry
    from fnl_core.spec import deep_merge, parse_override

    data: dict[str, Any] = {}
    for text in options:
        data = deep_merge(data, parse_override(text))
    return registry.get(groups.QUANTIZERS, method).model_validate(data)


def _samples(data: str, options: list[str]) -> Any:
    from fnl_detector.train.data import TrainSamples, has_training_instances
    from fnl_detector.train.sources import parse_data

    source = parse_data(data, options)
    dataset = source.build(source.train_split)
    records = [r for r in dataset.records if has_training_instances(r)]
    if not records:
        raise ValueError(f"--data {data}: the {source.train_split} split has no person images")
    return TrainSamples(dataset, records)


def _training_batches(samples: Any, batch_size: int, seed: int) -> Any:
    """Endless (images, targets) batches with random flips, in a seeded order."""
    from fnl_detector.train.data import DeterministicBatchSampler

    sampler = DeterministicBatchSampler(len(samples), batch_size, 10**9, seed)
    it = 0
    while True:
        items = [samples[i] for i in sampler.batch(it)]
        yield ([img.float() for img, _ in items], [t for _, t in items])
        it += 1


def _benchmark_mode(model: Any, size: int, detections: int) -> None:
    """In place: the test settings of ``fnl bench`` (fixed size, exactly K detections)."""
    model.transform.min_size_test = size
    model.transform.max_size_test = max(1333, 2 * size)
    model.roi_heads.score_thresh = 0.0
    model.roi_heads.detections_per_image = detections


def compare(float_model: Any, int8_model: Any, size: int, detections: int, runs: int) -> dict:
    """Latency of the float and the int8 model on the same image, each as users run it: through
    :class:`fnl_detector.Predictor` (the float one optimised: BN folded, channels_last,
    parallel RoI ops; the int8 one as converted, with parallel RoI ops).

    ``int8_model`` is switched to the benchmark settings in place (a converted model cannot
    always be deep-copied)."""
    import torch

    from fnl_detector.analysis import benchmark_image, median, time_models
    from fnl_detector.predictor import Predictor

    image = benchmark_image(size).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # PyTorch on both sides: the settings below change the models after the predictors exist
    reference = Predictor.from_model(float_model.eval(), optimize=True, backend="torch")
    int8 = Predictor.from_model(int8_model.eval(), optimize=False, parallel_ops=True)
    for predictor in (reference, int8):
        _benchmark_mode(predictor.model, size, detections)
    counts = [len(p(image)["boxes"]) for p in (reference, int8)]
    if counts != [detections, detections]:
        raise RuntimeError(f"detections float/int8 = {counts}, expected {detections} each")
    times = time_models([lambda: reference(image), lambda: int8(image)], runs=runs, warmup=1)
    ms = [median(t) for t in times]
    return {
        "image": [int(s) for s in image.shape[:2]],
        "detections": detections,
        "latency_ms": {"float32": round(ms[0], 1), "int8": round(ms[1], 1)},
        "speedup": round(ms[0] / ms[1], 2),
    }


#: What ``fnl quantize`` writes into ``--out`` (fnl_quant.artifact's files and the spec).
OUTPUTS = ("model_int8.pt", "quantization.json", "spec.json")


def _run(args: argparse.Namespace) -> int:
    check_spec_arguments(args)  # a spec typo fails before torch is imported
    from fnl_core.outputs import check_output_dir

    check_output_dir(args.out, outputs=OUTPUTS, overwrite=args.overwrite)
    import tempfile
    from pathlib import Path

    from fnl_core import groups, registry

    # fnl-quant is optional (the fnl-detector[quant] extra): say so in one line when missing
    purpose, extra = "fnl quantize", "fnl-detector[quant]"
    registry.require(groups.QUANTIZERS, args.method, purpose=purpose, extra=extra)
    artifact = registry.require_module("fnl_quant.artifact", purpose=purpose, extra=extra)
    quantizers = registry.require_module("fnl_quant.quantizers", purpose=purpose, extra=extra)

    import torch

    from fnl_detector.loading import load_model
    from fnl_detector.spec import load_spec

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    resolved = model_from_args(args)
    spec = load_spec(resolved.spec, args.overrides)
    config = _quantizer_config(args.method, args.quant_options)
    quantizer = config.build()
    model = load_model(spec, resolved.weights)
    samples = _samples(args.data, args.data_options)
    first = samples[(0, False, 0)][0].float()  # (index, flip, size index)
    progress("quantize", f"preparing {args.method} (observers, fake-quant modules)...")
    prepared = quantizer.prepare(model, ([first],))
    if hasattr(quantizer, "fit"):
        progress("quantize", "quantization-aware training...")
        losses = quantizer.fit(prepared, _training_batches(samples, args.batch_size, args.seed))
        trained = {"qat_iterations": len(losses), "qat_loss": [losses[0], losses[-1]]}
    else:
        n = min(len(samples), quantizer.num_calibration_images)
        progress("quantize", f"calibrating on {n} images...")
        quantizer.calibrate(prepared, [([samples[(i, False, 0)][0].float()],) for i in range(n)])
        trained = {"calibration_images": n}
    progress("quantize", "converting to int8...")
    int8 = quantizer.convert(prepared)

    out = Path(args.out)
    artifact.save_quantized(
        int8,
        out,
        config,
        extra={"spec": spec.model_dump(mode="json"), "weights": str(resolved.weights)},
    )
    (out / "spec.json").write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        mb_float = artifact.state_dict_megabytes(model, Path(tmp) / "float.pt")
    mb_int8 = (out / "model_int8.pt").stat().st_size / 1e6
    progress("quantize", f"timing float32 against int8 ({args.runs} runs each)...")
    report = {
        "method": args.method,
        "out": str(out),
        "units": quantizers.quantization_plan(int8)["units"],
        **trained,
        "size_mb": {"float32": round(mb_float, 3), "int8": round(mb_int8, 3)},
        **compare(model, int8, args.size, args.detections, args.runs),
    }
    print(json.dumps(report, indent=2))
    return 0


command = Command(
    help="quantize a detector to int8 (post-training or quantization-aware)",
    configure=_configure,
    run=_run,
    description=__doc__,
)
