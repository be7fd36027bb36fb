"""``fnl eval --model NAME | --weights W``: predict a dataset split and evaluate it in one go.

``fnl eval`` belongs to fnl-eval, which installs without torch and never imports fnl-detector:
given a model, it calls the ``detector`` entry of the ``fnl.model_evaluation`` group, which is
:func:`run_model_eval` here, with the command's options as keywords. Prediction and scoring are
the training loop's own (:func:`fnl_detector.train.evaluate.evaluate_model`), so a number from
``fnl eval`` and one in a run's ``metrics_eval.json`` mean the same. ``--int8`` evaluates the
model's int8 post-training quantized version (fnl-quant; calibrated on images of the train
split) or, with ``--int8-weights DIR``, an int8 model saved by ``fnl quantize``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
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


def int8_model(model: Any, *, images: list[Any]) -> Any:
    """The int8 version of float ``model``, post-training quantized (fnl-quant's ``ptq``) and
    calibrated on ``images``. (An int8 model saved by ``fnl quantize`` is loaded by
    :func:`fnl_detector.loading.load_model`.)"""
    from fnl_core import groups, registry

    registry.require(groups.QUANTIZERS, "ptq", purpose="fnl eval --int8", extra="fnl-quant")
    config = registry.get(groups.QUANTIZERS, "ptq").model_validate(
        {"num_calibration_images": len(images)}
    )
    quantizer = config.build()
    prepared = quantizer.prepare(model, ([images[0]],))
    quantizer.calibrate(prepared, [([image],) for image in images])
    return quantizer.convert(prepared).eval()


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

    from fnl_detector.train.evaluate import build_evaluator, evaluate_model
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


def run_model_eval(
    *,
    data: str,
    model: str | None = None,
    weights: str | None = None,
    spec: str | None = None,
    data_options: Sequence[str] = (),
    split: str | None = None,
    surface: dict[str, Any] | str | None = None,
    max_images: int | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    int8: bool = False,
    int8_weights: str | None = None,
    num_calibration_images: int = 8,
    metrics: list[str] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """What ``fnl eval --model/--weights`` runs (the ``fnl.model_evaluation`` entry
    ``detector``): the evaluator's metrics of the model chosen by ``model`` / ``weights`` /
    ``spec`` (:func:`fnl_detector.loading.resolve_model`) on ``split`` of ``data``.

    The cheap checks come first (data option typos, a missing fnl-quant, an unknown model or a
    spec error), before torch is imported or anything is downloaded. On the CPU ``threads``
    torch threads run it; None picks the count from the load as ``fnl train`` and ``fnl demo``
    do (:func:`~fnl_detector.train.recipes.cpu_threads`), unless ``OMP_NUM_THREADS`` says it.
    """
    from fnl_core import groups, registry
    from fnl_detector.loading import resolve_model
    from fnl_detector.spec import load_spec
    from fnl_detector.train.sources import parse_data

    overrides = list(overrides)
    source = parse_data(data, list(data_options))
    if int8:
        registry.require(groups.QUANTIZERS, "ptq", purpose="fnl eval --int8", extra="fnl-quant")
    resolved = resolve_model(model=model, weights=weights, spec=spec)
    load_spec(resolved.spec, overrides)  # spec errors before torch loads

    import torch

    from fnl_detector.loading import load_model, select_device

    target = select_device("cpu" if int8 else device)
    if target.type == "cpu" and (threads is not None or "OMP_NUM_THREADS" not in os.environ):
        from fnl_detector.train.recipes import cpu_threads

        torch.set_num_threads(threads if threads is not None else cpu_threads())
    torch.manual_seed(0)
    if int8 and int8_weights is not None:  # an int8 model saved by fnl quantize
        detector = load_model(resolved.spec, int8_weights, overrides)
    else:
        detector = load_model(resolved.spec, resolved.weights, overrides, device=target)
    if int8 and int8_weights is None:
        images = calibration_images(source, num_calibration_images)
        detector = int8_model(detector, images=images)
    return evaluate_on_data(
        detector,
        data,
        data_options=list(data_options),
        split=split,
        surface=surface,
        max_images=max_images,
        progress=progress,
        label=f"{resolved.label}{' (int8)' if int8 else ''}",
        metrics=metrics,
    )


__all__ = [
    "calibration_images",
    "evaluate_on_data",
    "int8_model",
    "run_model_eval",
]
