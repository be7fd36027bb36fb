"""``fnl eval``: box / mask / GPS / GPSm AP of a DensePose-COCO results file, or of a model.

``fnl eval --gt GT --results RES`` scores a results file (torch-free). ``fnl eval --model NAME``
or ``--weights W [--spec S]`` with ``--data toy|coco:PATH`` predicts a split and scores it in
one go; that is done by the package that runs models, found through the registry (the
``detector`` entry of ``fnl.model_evaluation``, which fnl-detector provides), so fnl-eval never
imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from fnl_core.command import Command

DEFAULT_METRICS = "bbox,segm,gps,gpsm"


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", help="DensePose-COCO ground-truth JSON (with --results)")
    parser.add_argument("--results", help="results JSON (list of detections, docs/evaluation.md)")
    parser.add_argument(
        "--images",
        metavar="IMAGES_JSON",
        help="the images.json of fnl predict / fnl run: results are matched to the ground truth "
        "by file name and only those images are scored (default: images.json next to "
        "--results, when there; 'none': use the results' image ids as they are)",
    )
    parser.add_argument(
        "--surface",
        help="body surface for GPS/GPSm: a registered name (toy) or NAME:PATH (smpl:DIR) or a "
        'JSON object {"type": ..., ...}; without it only bbox and segm are computed (with '
        "--data toy the toy surface is used automatically)",
    )
    parser.add_argument("--out", help="write the metrics as JSON to this file")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the --out file if it exists"
    )
    parser.add_argument(
        "--metrics",
        help=f"comma-separated subset of bbox,segm,gps,gpsm,dp_segm (default {DEFAULT_METRICS}; "
        "bbox,segm without --surface)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print only {"bbox": {"AP": ...}, "segm": ..., "gps": ..., "gpsm": ...} on stdout, '
        "values in percent",
    )
    model = parser.add_argument_group(
        "evaluating a model (needs fnl-detector): predict --data's --split, then score it"
    )
    model.add_argument("--model", metavar="NAME", help="a named model (fnl list models)")
    model.add_argument(
        "--weights", metavar="PATH", help="FnL .safetensors or reference .pth/.pkl weights"
    )
    model.add_argument(
        "--spec", metavar="SPEC", help="spec file or preset (default: stored with the weights)"
    )
    model.add_argument("--data", help="toy | coco:PATH (any registered dataset, NAME[:ROOT])")
    model.add_argument(
        "--data-set",
        dest="data_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. seed=7 or num_images='{\"val\": 100}' (repeatable)",
    )
    model.add_argument("--split", help="split to evaluate (default: val for toy, minival for coco)")
    model.add_argument("--max-images", type=int, help="evaluate only the first N images")
    model.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="spec overrides, e.g. input.min_size_test=512",
    )
    model.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    model.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: from the load, one when other work keeps the cores "
        "busy, else one per core)",
    )
    model.add_argument(
        "--int8", action="store_true", help="evaluate the int8 post-training quantized model"
    )
    model.add_argument(
        "--int8-weights",
        metavar="DIR",
        help="with --int8: an int8 model saved by fnl quantize instead of quantizing now",
    )
    model.add_argument(
        "--calibration-images",
        type=int,
        default=8,
        metavar="N",
        help="with --int8: train-split images that set the int8 ranges (default 8)",
    )
    model.add_argument("--no-progress", action="store_true", help="no progress bar")


def surface_spec(text: str) -> dict[str, Any]:
    """``toy`` → {"type": "toy"}; ``smpl:DIR`` → {"type": "smpl", "path": DIR}; JSON as is."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--surface: invalid JSON: {exc}") from exc
        if not isinstance(spec, dict):
            raise ValueError("--surface: a JSON surface spec must be an object")
        return spec
    name, sep, path = text.partition(":")
    if not name:
        raise ValueError("--surface needs a name such as toy or smpl:DIR")
    return {"type": name, "path": path} if sep else {"type": name}


def _positive(value: int | None, option: str) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{option} must be a positive number, got {value}")


def _check_modes(args: argparse.Namespace) -> bool:
    """True when a model is to be evaluated; one-line errors for inconsistent options."""
    wants_model = bool(args.model or args.weights or args.spec or args.data)
    if wants_model and (args.gt or args.results):
        raise ValueError(
            "give either --gt GT --results RESULTS (score a results file) or --model NAME / "
            "--weights W with --data (predict and score), not both"
        )
    if wants_model:
        if args.images:
            raise ValueError("--images only applies with --gt/--results")
        if not (args.model or args.weights):
            raise ValueError("evaluating a model needs --model NAME or --weights PATH")
        if not args.data:
            raise ValueError("evaluating a model needs --data toy or --data coco:PATH")
        if args.int8_weights and not args.int8:
            raise ValueError("--int8-weights needs --int8")
        _positive(args.max_images, "--max-images")
        _positive(args.calibration_images, "--calibration-images")
        _positive(args.threads, "--threads")
        return True
    model_only = [
        name
        for name, given in (
            ("--int8", args.int8),
            ("--split", args.split),
            ("--max-images", args.max_images is not None),
            ("--data-set", args.data_options),
            ("--set", args.overrides),
        )
        if given
    ]
    if model_only:
        raise ValueError(f"{', '.join(model_only)} only apply with --model/--weights and --data")
    if not (args.gt and args.results):
        raise ValueError(
            "nothing to evaluate: give --gt GT --results RESULTS, or --model NAME (or --weights "
            "W) with --data toy|coco:PATH"
        )
    return False


#: The ``fnl.model_evaluation`` entry that ``fnl eval --model/--weights`` calls.
MODEL_EVALUATION_ENTRY = "detector"


def _evaluate_model(args: argparse.Namespace) -> dict[str, Any]:
    from fnl_core import registry
    from fnl_core.cli import CliError
    from fnl_core.groups import MODEL_EVALUATION

    if MODEL_EVALUATION_ENTRY not in registry.names(MODEL_EVALUATION):
        raise CliError(
            "fnl eval --model/--weights predicts with a model, which needs the fnl-detector "
            "package: pip install fnl-detector (scoring a results file with --gt/--results "
            "does not)"
        )
    run_model_eval = registry.get(MODEL_EVALUATION, MODEL_EVALUATION_ENTRY)
    # only when given, so that model evaluations without a threads argument keep working
    threads = {} if args.threads is None else {"threads": args.threads}
    return run_model_eval(
        **threads,
        model=args.model,
        weights=args.weights,
        spec=args.spec,
        data=args.data,
        data_options=args.data_options,
        split=args.split,
        surface=surface_spec(args.surface) if args.surface else None,
        max_images=args.max_images,
        overrides=args.overrides,
        device=args.device,
        int8=args.int8,
        int8_weights=args.int8_weights,
        num_calibration_images=args.calibration_images,
        metrics=[m.strip() for m in (args.metrics or "").split(",") if m.strip()] or None,
        progress=not args.no_progress,
    )


def _evaluate_results(args: argparse.Namespace) -> dict[str, Any]:
    from fnl_core import groups
    from fnl_core.spec import resolve_component
    from fnl_eval.config import DensePoseEvaluatorConfig

    surface = None
    if args.surface:
        surface = resolve_component(groups.SURFACES, surface_spec(args.surface)).build()
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    elif surface is None:
        metrics = ["bbox", "segm"]
        print("fnl eval: no --surface given, computing bbox and segm only", file=sys.stderr)
    else:
        metrics = DEFAULT_METRICS.split(",")
    evaluator = DensePoseEvaluatorConfig(metrics=metrics).build(surface)
    images = image_index(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        results = evaluator.evaluate(Path(args.gt), Path(args.results), images=images)
    for warning in caught:
        print(f"fnl eval: warning: {warning.message}", file=sys.stderr)
    if images is not None:
        print(
            f"fnl eval: results matched to the ground truth by file name ({images})",
            file=sys.stderr,
        )
    return results


def image_index(args: argparse.Namespace) -> Path | None:
    """The ``images.json`` to match results by file name: ``--images``, else the one next to
    ``--results`` when there; None with ``--images none``."""
    if args.images:
        return None if args.images.lower() == "none" else Path(args.images)
    default = Path(args.results).parent / "images.json"
    return default if default.is_file() else None


def percent_json(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The ``--json`` output: bbox, segm, gps, gpsm (those computed), every stat in percent."""
    return {
        metric: {k: (round(v * 100.0, 3) if v >= 0 else v) for k, v in results[metric].items()}
        for metric in ("bbox", "segm", "gps", "gpsm")
        if isinstance(results.get(metric), dict)
    }


def _run(args: argparse.Namespace) -> int:
    from fnl_core.outputs import check_output_file

    model_mode = _check_modes(args)
    if args.out:  # before predicting or scoring
        check_output_file(args.out, overwrite=args.overwrite)
    from fnl_eval.evaluator import format_table

    if model_mode:
        results = _evaluate_model(args)
    else:
        results = _evaluate_results(args)
    metrics = {k: v for k, v in results.items() if isinstance(v, dict)}
    if args.json:
        print(json.dumps(percent_json(metrics)))
    else:
        for metric, stats in metrics.items():
            print(format_table(metric, stats))
        if "num_images" in results:
            print(f"{results['num_images']} images, {results['num_detections']} detections")
    if args.out:
        from fnl_core.files import atomic_write_text

        out = Path(args.out)
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
        print(f"metrics written to {out}", file=sys.stderr if args.json else sys.stdout)
    return 0


command = Command(
    help="evaluate DensePose-COCO results or a model: box, mask, GPS and GPSm AP",
    configure=_configure,
    run=_run,
    description="Evaluate a results JSON against DensePose-COCO ground truth with pycocotools' "
    "COCOeval: COCO box and mask AP, and DensePose GPS / GPSm AP on a body surface. With "
    "--model NAME (or --weights W [--spec S]) and --data, predicts the split first (needs "
    "fnl-detector).",
)
