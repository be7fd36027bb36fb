"""`Predictor`: the one inference path of FnL (``fnl predict``, ``fnl demo``, evaluation during
training, ``fnl bench`` and the checks of ``fnl quantize`` / ``fnl export`` all go through it).

Like detectron2's ``DefaultPredictor`` it owns the preprocessing, so every caller feeds the
network the same pixels: images are read with :func:`fnl_core.imaging.read_image` (EXIF
orientation, 16-bit, alpha, size limit) and resized as the spec's ``input.resize`` says. The
default, ``"pil_bilinear_uint8"``, is the reference implementations' rule: shortest side to
``input.min_size_test`` (long side at most ``input.max_size_test``, sizes rounded half up),
Pillow ``BILINEAR`` on the uint8 image (:func:`fnl_core.imaging.resize_image`). The network then
only normalises and pads. ``"interpolate"`` leaves the resize to the model (float, torch).

It runs the model with the speed-ups its :class:`~fnl_detector.optimize.InferenceOptions` ask
for (:mod:`fnl_detector.optimize`: BatchNorm folded, channels_last on CPU, RoIAlign/NMS in
pieces side by side; see docs/inference.md for what each gives), under
``torch.inference_mode``. On the CPU the default backend, ``"auto"``, goes one step further when
``onnx`` and ``onnxruntime`` are installed: the model is exported once to ONNX, verified
against PyTorch and cached, and ONNX Runtime runs it (about 1.4-2x faster than the optimised
PyTorch model; :mod:`fnl_detector.onnx_backend`). Models are loaded by
:func:`fnl_detector.loading.load_model`.

>>> predictor = Predictor("mobile_parsing_rcnn_b", "b.safetensors")  # doctest: +SKIP
>>> out = predictor("photo.jpg", iuv=True)  # doctest: +SKIP
>>> out["boxes"], out["scores"], out["iuv"].shape  # doctest: +SKIP
>>> out.save("photo_densepose.png", "photo.jpg")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fnl_core.errors import InputError
from fnl_core.imaging import read_image, resize_image, resized_shape
from fnl_detector.loading import load_model, select_device
from fnl_detector.optimize import BACKENDS, InferenceOptions, apply_options, is_quantized

#: Keys of the per-image result dicts (``iuv`` and ``charts`` only when asked for).
RESULT_KEYS = ("boxes", "scores", "labels", "densepose", "image_size")


def resolve_predictor_model(
    model: Any, weights: str | Path | None, random_weights: bool = False
) -> tuple[Any, str | Path | None]:
    """(spec, weights) of ``Predictor(model, weights)``: a named model's spec and downloaded
    weights (:func:`fnl_detector.loading.resolve_model`, as ``--model NAME``); a spec without
    weights only with ``random_weights`` (:class:`~fnl_core.errors.InputError` otherwise)."""
    from fnl_core import groups, registry
    from fnl_core.errors import InputError
    from fnl_detector.loading import model_spec, resolve_model

    named = isinstance(model, str) and model in registry.names(groups.MODELS)
    if random_weights:
        if weights is not None:
            raise InputError("random_weights=True builds an untrained model: give no weights")
        return (model_spec(model) if named else model), None
    if named and weights is None:
        resolved = resolve_model(model=model)
        return resolved.spec, resolved.weights
    if weights is None:
        raise InputError(
            f"Predictor({model!r}): no weights; give weights=PATH, a named model (fnl list "
            "models), or random_weights=True for an untrained model on purpose"
        )
    return model, weights


class Predictor:
    """Run a detector on images: ``predictor(image)`` or ``predictor([img1, img2, ...])``.

    Args:
        spec_or_preset: a named model (``fnl list models``: its spec and its weights,
            downloaded once and hash-checked, as ``--model NAME``), a preset name, spec file,
            spec dict or ``DetectorSpec``; None takes the spec that belongs to ``weights`` (see
            :func:`fnl_detector.loading.spec_from_weights`).
        weights: FnL ``.safetensors``, a reference ``.pth``/``.pkl`` checkpoint, or an int8 model
            folder (or its ``model_int8.pt``) written by ``fnl quantize``; with a named model,
            a local copy of its weights. A spec without weights is refused (as the commands
            refuse it) unless ``random_weights=True`` asks for an untrained model.
        random_weights: build the spec with random weights on purpose (timing, plumbing).
        overrides: spec overrides (``"test.score_thresh=0.5"``...).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``.
        options: how to run it (:class:`~fnl_detector.optimize.InferenceOptions`: speed-ups,
            backend, threads, image size limit, progress); its fields may also be given as
            keywords (``optimize=False``, ``backend="torch"``, ``threads=4``...), which change
            ``options``. :attr:`backend` says which backend runs.

    Each image may be a path, a PIL image, an H×W×3 uint8 RGB numpy array or a torch tensor
    (uint8 0..255, C×H×W as torchvision or H×W×C); float arrays and tensors must hold 0..1
    (torchvision's convention) and are scaled by 255, other float ranges are refused
    (:func:`fnl_core.imaging.read_image`). A list runs as one batched forward pass on PyTorch
    (images are padded to the largest, bottom/right) and image by image on ONNX Runtime.

    Per image the result is a :class:`Prediction` (a dict) whose arrays are all CPU torch
    tensors, whichever backend ran (torchvision's convention): ``boxes`` (float Tensor[K, 4],
    XYXY, original image pixels), ``scores`` (float Tensor[K]), ``labels`` (int64 Tensor[K],
    1 = person), ``densepose`` (the head's outputs: ``coarse_segm``, ``fine_segm``, ``u``,
    ``v``, ... box-relative, see :mod:`fnl_detector.postprocess`) and ``image_size`` (H, W);
    with ``iuv=True`` also ``charts`` (per detection a uint8 Tensor[3, h, w] I/U/V chart of its
    integer box) and ``iuv`` (the uint8 Tensor[H, W, 3] full-image raster of the detections
    scoring above ``iuv_min_score``; the highest score wins overlaps). ``result.numpy()``
    gives the same with numpy arrays; ``result.plot(image)`` / ``result.save(path, image)``
    draw it (:func:`fnl_core.visualize.draw_prediction`).
    """

    def __init__(
        self,
        spec_or_preset: Any,
        weights: str | Path | None = None,
        *,
        overrides: Sequence[str] = (),
        device: str | torch.device = "auto",
        options: InferenceOptions | None = None,
        random_weights: bool = False,
        **changes: Any,
    ) -> None:
        options = (options or InferenceOptions()).replace(**changes)
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        spec_or_preset, weights = resolve_predictor_model(spec_or_preset, weights, random_weights)
        self._setup(load_model(spec_or_preset, weights, overrides), select_device(device), options)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        options: InferenceOptions | None = None,
        *,
        copy_model: bool = True,
        **changes: Any,
    ) -> Predictor:
        """A predictor around an existing detector (on the device it is on).

        ``options`` default to none of the speed-ups (``optimize=False``); keywords change them
        as in :class:`Predictor`. With ``optimize`` the speed-ups change modules in place, so
        the model is deep-copied first unless ``copy_model=False``; ``backend="auto"`` may then
        export it to ONNX Runtime (a snapshot of the current weights). Without ``optimize`` the
        predictor is a view: it runs the model in PyTorch with its current weights at every
        call (evaluation during training), switches it to eval mode for the call and back
        afterwards.
        """
        options = (options or InferenceOptions(optimize=False)).replace(**changes)
        self = cls.__new__(cls)
        if options.optimize and copy_model:
            model = copy.deepcopy(model)
        device = next(iter(model.parameters()), torch.empty(0)).device
        self._setup(model, device, options)
        return self

    def _setup(self, model: nn.Module, device: torch.device, options: InferenceOptions) -> None:
        input_spec = getattr(getattr(model, "spec", None), "input", None)
        self.resize_mode = getattr(input_spec, "resize", "interpolate")
        #: how the model runs (the options given, before ``"auto"`` is resolved)
        self.options = options
        #: what runs the network: ``"torch"`` or ``"onnxruntime"`` (what ``"auto"`` chose), and
        #: the ONNX Runtime session of the onnxruntime backend (else None)
        self.backend, self.onnx = _backend(model, device, options)
        if self.onnx is not None:  # the graph has its own optimisations (BN folded at export)
            options = options.replace(optimize=False)
        self.device = device
        self.model = model.to(device)
        self.spec = getattr(model, "spec", None)
        self.max_pixels = options.max_pixels
        #: what was done (BN layers folded, channels_last, parallel RoI ops) and the backend
        self.optimizations: dict[str, Any] = apply_options(model, device, options)
        self.parallel_ops = self.optimizations["parallel_ops"]
        self.optimizations["backend"] = self.backend

    # ------------------------------------------------------------------ preprocessing
    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the network sees for an image of ``height`` x ``width``."""
        t = self.model.transform
        return resized_shape(height, width, t.min_size_test, t.max_size_test)

    def preprocess(self, images: Sequence[Any]) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """Read and resize: float Tensors [3, h, w] (0..255) on the device, original (H, W)."""
        tensors, originals = [], []
        for image in images:
            array = read_image(image, max_pixels=self.max_pixels)
            height, width = array.shape[:2]
            if self.resize_mode == "pil_bilinear_uint8":
                array = resize_image(array, self.input_size(height, width))
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.array(array, order="C")
            tensor = torch.from_numpy(array).permute(2, 0, 1)
            tensors.append(tensor.to(self.device, non_blocking=True).float())
            originals.append((height, width))
        return tensors, originals

    # ------------------------------------------------------------------ inference
    def __call__(
        self, images: Any, *, iuv: bool = False, iuv_min_score: float = 0.0
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """One image → one :class:`Prediction`; a list or tuple → a list of them (one batched
        forward pass on PyTorch, image by image on ONNX Runtime)."""
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        if not batch:
            return []
        if self.onnx is not None:
            outputs, originals = self._run_onnx(batch)
        else:
            tensors, originals = self.preprocess(batch)
            outputs = self.forward(tensors, originals)
        results = []
        for out, size in zip(outputs, originals, strict=True):
            result = Prediction({**_to_cpu(out), "image_size": size})
            if iuv:
                extra = full_image_iuv(result, iuv_min_score)
                result["charts"] = [torch.from_numpy(chart) for chart in extra["charts"]]
                result["iuv"] = torch.from_numpy(extra["iuv"])
            results.append(result)
        return results[0] if single else results

    def _run_onnx(
        self, images: Sequence[Any]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """The ONNX Runtime backend, image by image: read and resize as :meth:`preprocess`
        does, run the graph, boxes back to each original frame (as the model does)."""
        from fnl_detector.modeling.transform import ImageTransform

        outputs, originals = [], []
        for image in images:
            array = read_image(image, max_pixels=self.max_pixels)
            original = array.shape[:2]
            resized = resize_image(array, self.input_size(*original))
            out = {k: torch.from_numpy(v) for k, v in self.onnx.run(resized).items()}
            boxes, keep = ImageTransform.postprocess(out["boxes"], resized.shape[:2], original)
            outputs.append(
                {
                    "boxes": boxes[keep],
                    "scores": out["scores"][keep],
                    "labels": out["labels"][keep].long(),
                    "densepose": {k: out[k][keep] for k in self.onnx.densepose_outputs},
                }
            )
            originals.append(original)
        return outputs, originals

    def forward(
        self, tensors: list[torch.Tensor], original_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """The model on preprocessed images (see :meth:`preprocess`), raw outputs."""
        from fnl_detector.modeling.parallel import set_parallel_ops

        model = self.model
        was_training = model.training
        previous = set_parallel_ops(self.parallel_ops)
        try:
            model.eval()
            with torch.inference_mode():
                if self.resize_mode == "pil_bilinear_uint8":
                    return model(tensors, original_sizes=original_sizes)
                return model(tensors)
        finally:
            set_parallel_ops(previous)
            model.train(was_training)


def onnxruntime_installed() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` can be imported (the ``fnl-detector[export]`` extra)."""
    from importlib.util import find_spec

    return find_spec("onnx") is not None and find_spec("onnxruntime") is not None


def onnx_unsupported(model: nn.Module, device: torch.device) -> str | None:
    """Why the ONNX Runtime backend cannot run ``model`` on ``device`` (None: it can): it runs
    float models on the CPU, fed images resized by Pillow as ``input.resize`` says."""
    if device.type != "cpu" or is_quantized(model):
        return (
            "backend onnxruntime runs float models on the CPU (use fnl export --int8 and "
            "fnl run for int8 graphs)"
        )
    resize = getattr(getattr(getattr(model, "spec", None), "input", None), "resize", None)
    if resize != "pil_bilinear_uint8":
        return (
            "backend onnxruntime feeds the graph images resized by Pillow "
            f"(input.resize='pil_bilinear_uint8'); this spec resizes with {resize!r}: use the "
            "torch backend"
        )
    return None


def choose_backend(
    model: nn.Module,
    device: torch.device,
    options: InferenceOptions | None = None,
    **changes: Any,
) -> str:
    """What ``backend="auto"`` runs: ``"onnxruntime"`` when the backend can run the model
    (:func:`onnx_unsupported`), every speed-up is asked for (``optimize``, and none of
    ``fold_bn``/``channels_last``/``parallel_ops`` switched off; ``options`` and keyword
    changes as in :class:`Predictor`) and onnx and onnxruntime are installed; ``"torch"``
    otherwise (GPUs, int8 models, the plain model, training-time evaluation)."""
    options = (options or InferenceOptions()).replace(**changes)
    runnable = onnx_unsupported(model, device) is None
    if options.every_speedup and runnable and onnxruntime_installed():
        return "onnxruntime"
    return "torch"


def _backend(model: nn.Module, device: torch.device, options: InferenceOptions) -> tuple[str, Any]:
    """(backend, ONNX Runtime session or None) for ``options.backend``: ``"auto"`` as
    :func:`choose_backend` says, falling back to PyTorch with a warning when the export fails
    or does not verify; an explicit ``"onnxruntime"`` raises instead."""
    import warnings

    backend = options.backend
    if backend == "auto":
        backend = choose_backend(model, device, options)
    if backend != "onnxruntime":
        return backend, None
    reason = onnx_unsupported(model, device)
    if reason is not None:
        raise InputError(reason)
    from fnl_detector.onnx_backend import OnnxBackend

    try:
        return backend, OnnxBackend(model, threads=options.threads, progress=options.progress)
    except Exception as exc:
        if options.backend != "auto":
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(
            f"backend auto: the ONNX Runtime backend is unavailable ({reason}); running PyTorch",
            stacklevel=4,
        )
        return "torch", None


def full_image_iuv(result: dict[str, Any], min_score: float = 0.0) -> dict[str, Any]:
    """``charts`` (per detection (3, h, w) uint8 I, 255·U, 255·V) and ``iuv`` (H×W×3 uint8 of
    the detections above ``min_score``) of one result of :class:`Predictor`."""
    from fnl_core.visualize import iuv_image
    from fnl_detector.postprocess import densepose_to_iuv

    boxes, scores = result["boxes"], result["scores"]
    dp = result["densepose"]
    if len(boxes) and all(k in dp for k in ("coarse_segm", "fine_segm", "u", "v")):
        charts = densepose_to_iuv(boxes, dp)
    else:
        charts = []
    keep = [k for k in range(len(charts)) if float(scores[k]) > min_score]
    raster = iuv_image(
        tuple(result["image_size"]),
        boxes.numpy()[keep].reshape(-1, 4),
        [charts[k] for k in keep],
        scores.numpy()[keep],
    )
    return {"charts": charts, "iuv": raster}


class Prediction(dict):
    """One image's result of :class:`Predictor`: a dict of CPU torch tensors (see there) with
    Ultralytics-style helpers to convert and draw it."""

    def numpy(self) -> Prediction:
        """A copy with every tensor (also in ``densepose`` and ``charts``) as a numpy array."""
        return Prediction(_to_numpy(dict(self)))

    def plot(self, image: Any, *, min_score: float = 0.5) -> np.ndarray:
        """``image`` (what was predicted on: a path, PIL image, array or tensor) with the
        detections above ``min_score`` drawn on it (boxes, parts, U/V contours; as the pictures
        of ``fnl predict``, :func:`fnl_core.visualize.draw_prediction`): an H×W×3 uint8 array."""
        from fnl_core.visualize import draw_prediction

        array = read_image(image, max_pixels=None)
        if tuple(array.shape[:2]) != tuple(self["image_size"]):
            raise InputError(
                f"plot: the image is {array.shape[0]}x{array.shape[1]}, the prediction was made "
                f"on {self['image_size'][0]}x{self['image_size'][1]}"
            )
        charts = self.get("charts")
        if charts is None:
            charts = full_image_iuv(self, min_score)["charts"]
        if len(charts) != len(self["boxes"]):
            raise InputError("plot draws chart models (I, U, V); this model predicts embeddings")
        result = self.numpy()
        return draw_prediction(
            array,
            result["boxes"].reshape(-1, 4),
            result["scores"],
            [np.asarray(chart) for chart in charts],
            min_score=min_score,
        )

    def save(self, path: str | Path, image: Any, *, min_score: float = 0.5) -> Path:
        """Write :meth:`plot` as a PNG to ``path`` (lossless); returns the path."""
        from fnl_core.imaging import save_png

        path = Path(path)
        save_png(self.plot(image, min_score=min_score), path)
        return path


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.float().cpu() if value.is_floating_point() else value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


__all__ = [
    "BACKENDS",
    "RESULT_KEYS",
    "Prediction",
    "Predictor",
    "choose_backend",
    "full_image_iuv",
    "onnx_unsupported",
    "onnxruntime_installed",
]
