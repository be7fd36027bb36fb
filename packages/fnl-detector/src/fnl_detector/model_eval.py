"""``fnl eval --model NAME | --weights W``: predict a dataset split and evaluate it in one go.

``fnl eval`` belongs to fnl-eval, which installs without torch; when it is given a model it
hands over to :func:`run_model_eval` here. Prediction and scoring are the training loop's own
(:func:`fnl_detector.train.evaluate.evaluate_model`), so a number from ``fnl eval`` and one in a
run's ``metrics_eval.json`` mean the same. ``--int8`` evaluates the model's int8 post-training
quantized version (fnl-quant; calibrated on images of the train split) or, with
``--int8-weights DIR``, an int8 model saved by ``fnl quantize``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


class _ProgressDataset:
    """The dataset, with a progress bar that advances as images are loaded for prediction."""

    def __init__(self, dataset: Any, total: int, enabled: bool) -> None:
        self._dataset = dataset
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="predicting", unit="img", file=sys.stderr)

    def load_image(self, record: Any) -> Any:
        image = self._dataset.load_image(record)
        if self._bar is not None:
            self._bar.update(1)
        return image

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataset, name)


def calibration_images(source: Any, count: int) -> list[Any]:
    """The first ``count`` images of the data's train split, as detector inputs."""
    import torch

    from fnl_detector.train.evaluate import image_tensor

    dataset = source.build(source.train_split)
    records = list(dataset.records)[:count]
    if not records:
        raise ValueError(f"the {source.train_split} split has no images to calibrate int8 on")
    device = torch.device("cpu")
    return [image_tensor(dataset.load_image(r), device) for r in records]


def int8_model(model: Any, *, images: list[Any] | None = None, saved: str | None = None) -> Any:
    """The int8 version of float ``model``: loaded from ``saved`` (a ``fnl quantize`` folder),
    else post-training quantized (fnl-quant's ``ptq``) and calibrated on ``images``."""
    from fnl_core import groups, registry

    registry.require(groups.QUANTIZERS, "ptq", purpose="fnl eval --int8", extra="fnl-quant")
    if saved is not None:
        from fnl_quant.artifact import load_quantized

        return load_quantized(model, saved).eval()
    config = registry.get(groups.QUANTIZERS, "ptq").model_validate(
        {"num_calibration_images": len(images)}
    )
    quantizer = config.build()
    prepared = quantizer.prepare(model, ([images[0]],))
    quantizer.calibrate(prepared, [([image],) for image in images])
    return quantizer.convert(prepared).eval()


def build_evaluator(surface: dict[str, Any] | str | None, metrics: list[str] | None = None) -> Any:
    """The registered DensePose-COCO evaluator on ``surface`` (a registered name or a
    ``{"type": ...}`` spec) computing ``metrics`` (default: all it can; without a surface only
    box and mask AP, since GPS needs geodesic distances)."""
    from fnl_core import groups, registry
    from fnl_core.spec import resolve_component

    config_cls = registry.get(groups.EVALUATORS, "densepose_coco")
    if surface is None:
        body = None
        metrics = metrics or ["bbox", "segm"]
    elif isinstance(surface, str):
        body = registry.get(groups.SURFACES, surface)().build()
    else:
        body = resolve_component(groups.SURFACES, surface).build()
    config = config_cls(metrics=metrics) if metrics else config_cls()
    return config.build(body)


def evaluate_on_data(
    model: Any,
    data: str,
    *,
    data_options: list[str] | None = None,
    split: str | None = None,
    surface: dict[str, Any] | str | None = None,
    max_images: int | None = None,
    progress: bool = True,
    work_dir: Path | None = None,
    label: str = "model",
    metrics: list[str] | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``split`` of ``data`` (``toy`` or ``coco:PATH``); the surface
    defaults to the data's own (``toy`` for the toy data, none for COCO)."""
    import torch

    from fnl_detector.train.evaluate import evaluate_model
    from fnl_detector.train.sources import parse_data

    source = parse_data(data, data_options or [], val_split=split)
    split = split or source.val_split
    if split is None:
        raise ValueError(f"--data {data}: no default evaluation split; pass --split NAME")
    dataset = source.build(split)
    total = len(dataset.records) if max_images is None else min(max_images, len(dataset.records))
    print(f"fnl eval: {label} on {data}, split {split} ({total} images)", file=sys.stderr)
    surface = surface if surface is not None else source.surface
    if surface is None and not metrics:
        print("fnl eval: no --surface given, computing bbox and segm only", file=sys.stderr)
    evaluator = build_evaluator(surface, metrics)
    device = next(iter(model.parameters()), torch.empty(0)).device
    shown = _ProgressDataset(dataset, total, progress)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = evaluate_model(
                model,
                shown,
                device,
                None,
                Path(work_dir or tmp),
                max_images=max_images,
                evaluator=evaluator,
            )
    finally:
        shown.close()
    return metrics


def run_model_eval(args: argparse.Namespace) -> dict[str, Any]:
    """What ``fnl eval --model/--weights`` runs; returns the evaluator's metrics.

    The cheap checks come first (data option typos, a missing fnl-quant, an unknown model or a
    spec error), before torch is imported or anything is downloaded.
    """
    from fnl_core import groups, registry
    from fnl_detector.commands._weights import build_model, resolve_model
    from fnl_detector.spec import load_spec
    from fnl_detector.train.sources import parse_data

    source = parse_data(args.data, args.data_options)
    if args.int8:
        registry.require(groups.QUANTIZERS, "ptq", purpose="fnl eval --int8", extra="fnl-quant")
    resolved = resolve_model(args)
    load_spec(resolved.spec, args.overrides)  # spec errors before torch loads

    import torch

    from fnl_detector.train.loop import select_device

    device = select_device("cpu" if args.int8 else args.device)
    torch.manual_seed(0)
    model = build_model(resolved, args.overrides, device)
    if args.int8:
        images = None
        if args.int8_weights is None:
            images = calibration_images(source, args.calibration_images)
        model = int8_model(model, images=images, saved=args.int8_weights)
    return evaluate_on_data(
        model,
        args.data,
        data_options=args.data_options,
        split=args.split,
        surface=getattr(args, "surface_spec", None),
        max_images=args.max_images,
        progress=not args.no_progress,
        label=f"{resolved.label}{' (int8)' if args.int8 else ''}",
        metrics=[m.strip() for m in (args.metrics or "").split(",") if m.strip()] or None,
    )


__all__ = [
    "build_evaluator",
    "calibration_images",
    "evaluate_on_data",
    "int8_model",
    "run_model_eval",
]
