"""``fnl eval``: box / mask / GPS / GPSm AP of a DensePose-COCO results file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fnl_core.command import Command

DEFAULT_METRICS = "bbox,segm,gps,gpsm"


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, help="DensePose-COCO ground-truth JSON")
    parser.add_argument(
        "--results", required=True, help="results JSON (list of detections, docs/evaluation.md)"
    )
    parser.add_argument(
        "--surface",
        help="body surface for GPS/GPSm: a registered name (toy) or NAME:PATH (smpl:DIR) or a "
        'JSON object {"type": ..., ...}; without it only bbox and segm are computed',
    )
    parser.add_argument("--out", help="write the metrics as JSON to this file")
    parser.add_argument(
        "--metrics",
        help=f"comma-separated subset of bbox,segm,gps,gpsm,dp_segm (default {DEFAULT_METRICS}; "
        "bbox,segm without --surface)",
    )


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


def _run(args: argparse.Namespace) -> int:
    from fnl_core import groups
    from fnl_core.spec import resolve_component
    from fnl_eval.config import DensePoseEvaluatorConfig
    from fnl_eval.evaluator import format_table

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
    results = evaluator.evaluate(Path(args.gt), Path(args.results))
    for metric, stats in results.items():
        print(format_table(metric, stats))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"metrics written to {out}")
    return 0


command = Command(
    help="evaluate DensePose-COCO results: box, mask, GPS and GPSm AP",
    configure=_configure,
    run=_run,
    description="Evaluate a results JSON against DensePose-COCO ground truth with pycocotools' "
    "COCOeval: COCO box and mask AP, and DensePose GPS / GPSm AP on a body surface.",
)
