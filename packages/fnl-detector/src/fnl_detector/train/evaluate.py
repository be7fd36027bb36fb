"""Held-out evaluation: run the detector, convert to DensePose-COCO results, score them.

Scoring goes through the registry (``fnl.evaluators`` → ``densepose_coco``, on a body surface
from ``fnl.surfaces``), so this module never imports the evaluation package by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fnl_core import groups, registry
from fnl_core.structures import DensePoseDataset, ImageRecord


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """H×W×3 uint8 RGB → float Tensor[3,H,W] in 0..255 on ``device``."""
    t = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    return t.to(device=device, dtype=torch.float32)


def predict_records(
    model: nn.Module,
    dataset: DensePoseDataset,
    records: list[ImageRecord],
    device: torch.device,
    batch_size: int = 1,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]] | None:
    """DensePose-COCO results (list of dicts) of ``model`` on ``records``; None when
    ``should_stop()`` (asked before each batch, e.g. after Ctrl-C) returned True.

    Runs through :class:`fnl_detector.Predictor` (same preprocessing as ``fnl predict``) as a
    view on ``model``: its current weights, nothing folded or converted in it, its train/eval
    mode restored afterwards; RoIAlign/NMS pieces run side by side (bit-identical).
    ``device`` is where the model already is (kept for callers; the predictor follows the
    model).
    """
    from fnl_detector.predictor import Predictor
    from fnl_detector.results import to_coco_results

    predictor = Predictor.from_model(model, optimize=False, parallel_ops=True)
    results: list[dict[str, Any]] = []
    for start in range(0, len(records), batch_size):
        if should_stop is not None and should_stop():
            return None
        chunk = records[start : start + batch_size]
        outputs = predictor([dataset.load_image(r) for r in chunk])
        for record, out in zip(chunk, outputs, strict=True):
            results.extend(to_coco_results(record.image_id, out))
    return results


def subset_gt_json(gt_json: Path, image_ids: set[int], out_path: Path) -> Path:
    """Write the part of a COCO-style GT file that covers ``image_ids`` (for capped evals)."""
    data = json.loads(Path(gt_json).read_text())
    data["images"] = [im for im in data["images"] if im["id"] in image_ids]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in image_ids]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(data))
    return out_path


def require_evaluator(surface: str | None, purpose: str, evaluator: str = "densepose_coco") -> None:
    """Fail now, in one line naming what to install, if :func:`build_evaluator` would fail
    later (the evaluator comes with fnl-eval, the ``fnl-detector[eval]`` extra)."""
    registry.require(groups.EVALUATORS, evaluator, purpose=purpose, extra="fnl-detector[eval]")
    if surface is not None:
        registry.require(groups.SURFACES, surface, purpose=purpose)


def build_evaluator(
    surface: dict[str, Any] | str | None,
    metrics: list[str] | None = None,
    evaluator: str = "densepose_coco",
) -> Any:
    """The registered evaluator (``fnl.evaluators``) on ``surface`` (a registered body surface
    name or a ``{"type": ...}`` spec) computing ``metrics`` (default: all it can).

    Without a surface only box and mask AP are computed (GPS needs geodesic distances).
    """
    from fnl_core.spec import resolve_component

    config_cls = registry.get(groups.EVALUATORS, evaluator)
    if surface is None:
        return config_cls(metrics=metrics or ["bbox", "segm"]).build(None)
    if isinstance(surface, str):
        body = registry.get(groups.SURFACES, surface)().build()
    else:
        body = resolve_component(groups.SURFACES, surface).build()
    config = config_cls(metrics=metrics) if metrics else config_cls()
    return config.build(body)


def evaluate_model(
    model: nn.Module,
    dataset: DensePoseDataset,
    device: torch.device,
    surface: str | None,
    work_dir: Path,
    max_images: int | None = None,
    evaluator: Any = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """Box / GPS / GPSm AP (whatever the evaluator reports) of ``model`` on ``dataset``.

    None when ``should_stop`` (see :func:`predict_records`) ended the run early.
    """
    records = list(dataset.records)
    gt_json = Path(dataset.gt_json)
    if max_images is not None and max_images < len(records):
        records = records[:max_images]
        gt_json = subset_gt_json(gt_json, {r.image_id for r in records}, work_dir / "eval_gt.json")
    results = predict_records(model, dataset, records, device, should_stop=should_stop)
    if results is None:
        return None
    return score_results(results, gt_json, len(records), surface, work_dir, evaluator)


def score_results(
    results: list[dict[str, Any]],
    gt_json: str | Path,
    num_images: int,
    surface: str | None,
    work_dir: Path,
    evaluator: Any = None,
) -> dict[str, Any]:
    """Metrics of DensePose-COCO ``results`` against ``gt_json`` (they are also written to
    ``work_dir/eval_results.json``), in the form :func:`evaluate_model` returns."""
    results_path = Path(work_dir) / "eval_results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results))
    if evaluator is None:
        evaluator = build_evaluator(surface)
    metrics = evaluator.evaluate(Path(gt_json), results)
    return {"num_detections": len(results), "num_images": num_images, **_plain(metrics)}


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"gps": {"AP": 0.3}}`` → ``{"gps/AP": 0.3}`` (numbers only)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def _plain(value: Any) -> Any:
    """JSON-friendly copy (numpy scalars → floats)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
