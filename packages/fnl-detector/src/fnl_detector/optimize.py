"""Inference speed-ups that keep the outputs equal within rounding, and the options that pick
them (:class:`InferenceOptions`, what :class:`fnl_detector.Predictor` takes).

BatchNorm folded into the preceding convolutions (checked on an example image), channels_last
convolutions on CPU, and torchvision's single-threaded RoIAlign/NMS run in pieces side by side
(:mod:`fnl_detector.modeling.parallel`, switched on per call by the Predictor). docs/inference.md
says what each gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fnl_core.errors import InputError
from fnl_core.imaging import MAX_PIXELS

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

#: What runs the network: ``"auto"`` (default, see :func:`fnl_detector.predictor.choose_backend`),
#: PyTorch, or the model exported once to ONNX and run by ONNX Runtime
#: (:mod:`fnl_detector.onnx_backend`).
BACKENDS = ("auto", "torch", "onnxruntime")


@dataclass(frozen=True)
class InferenceOptions:
    """How :class:`fnl_detector.Predictor` runs a model.

    Args:
        optimize: apply the speed-ups (BN folding, channels_last on CPU, parallel RoIAlign/NMS).
            ``False`` runs the model as built, which is what ``fnl bench --plain`` times.
        fold_bn, channels_last: switch single speed-ups off (they apply with ``optimize``);
            channels_last (None) is on for the CPU only.
        parallel_ops: run RoIAlign/NMS pieces side by side (bit-identical); None: ``optimize``.
        backend: ``"onnxruntime"``: the model exported once to ONNX, verified against PyTorch
            and cached (:mod:`fnl_detector.onnx_backend`), then run by ONNX Runtime on the CPU
            with ``threads`` intra-op threads; same preprocessing and result format, outputs
            equal to PyTorch's within the export's tolerances (needs the
            ``fnl-detector[export]`` extra). ``"torch"``: PyTorch with the speed-ups above.
            ``"auto"`` (default): ONNX Runtime where it applies
            (:func:`fnl_detector.predictor.choose_backend`), else PyTorch; an export that fails
            or does not verify falls back to PyTorch with a warning.
        threads: torch CPU threads (``Predictor(...)`` sets ``torch.set_num_threads``,
            process-wide) and ONNX Runtime's intra-op threads; None leaves them.
        max_pixels: images with more pixels are refused (:class:`fnl_core.errors.ImageReadError`).
        progress: called with a line before slow one-time work (the ONNX export); None: quiet.
    """

    optimize: bool = True
    fold_bn: bool = True
    channels_last: bool | None = None
    parallel_ops: bool | None = None
    backend: str = "auto"
    threads: int | None = None
    max_pixels: int | None = MAX_PIXELS
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")

    def replace(self, **changes: Any) -> InferenceOptions:
        """A copy with ``changes`` (option names as keywords)."""
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def every_speedup(self) -> bool:
        """``optimize``, and none of ``fold_bn`` / ``channels_last`` / ``parallel_ops`` off."""
        return (
            self.optimize
            and self.fold_bn
            and self.channels_last is not False
            and self.parallel_ops is not False
        )


def is_quantized(model: nn.Module) -> bool:
    """Whether any submodule is an int8 (torch.ao quantized) module."""
    return any(".quantized" in type(m).__module__ for m in model.modules())


def example_image(size: int = 128) -> np.ndarray:
    """A small fixed RGB uint8 image (smooth colour blobs), used to check optimisations."""
    import torch

    from fnl_detector.analysis import benchmark_image

    return benchmark_image(size).round().to(torch.uint8).permute(1, 2, 0).numpy()


@contextmanager
def _test_size(model: nn.Module, short: int):
    """Temporarily run ``model``'s own resize at a small size (cheap optimisation checks)."""
    t = model.transform
    saved = (t.min_size_test, t.max_size_test)
    t.min_size_test, t.max_size_test = short, max(short, 2 * short)
    try:
        yield
    finally:
        t.min_size_test, t.max_size_test = saved


def optimize_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
) -> dict[str, Any]:
    """In place: BN folding (verified on an example image: the features must agree within
    1e-3 of their range, else the model is restored and left unfolded) and channels_last.
    Returns what was done. Int8 models are left as they are."""
    import torch

    from fnl_detector.analysis import fold_batch_norm

    model.eval()
    done: dict[str, Any] = {"fold_bn": 0, "channels_last": False}
    if is_quantized(model):
        return done
    device = next(model.parameters()).device
    if fold_bn:
        image = torch.from_numpy(example_image()).permute(2, 0, 1).float().to(device)
        with _test_size(model, 128):
            try:
                done["fold_bn"] = fold_batch_norm(model, [image])
            except RuntimeError:
                done["fold_bn"] = 0
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
        done["channels_last"] = True
    return done


def apply_options(model: nn.Module, device: torch.device, options: InferenceOptions) -> dict:
    """The PyTorch speed-ups ``options`` ask for, applied to ``model`` in place (its train/eval
    mode kept). Returns what was done: ``fold_bn`` (BN layers folded), ``channels_last`` and
    ``parallel_ops`` (whether RoIAlign/NMS are to run in pieces side by side)."""
    channels_last = options.channels_last
    if channels_last is None:
        channels_last = device.type == "cpu"
    done: dict[str, Any] = {"fold_bn": 0, "channels_last": False}
    if options.optimize:
        was_training = model.training
        done = optimize_for_inference(model, fold_bn=options.fold_bn, channels_last=channels_last)
        model.train(was_training)
    parallel = options.optimize if options.parallel_ops is None else bool(options.parallel_ops)
    done["parallel_ops"] = parallel
    return done


__all__ = [
    "BACKENDS",
    "InferenceOptions",
    "apply_options",
    "example_image",
    "is_quantized",
    "optimize_for_inference",
]
