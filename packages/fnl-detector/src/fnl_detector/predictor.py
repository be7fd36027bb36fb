"""`Predictor`: the one inference path of FnL (``fnl predict``, ``fnl demo``, evaluation during
training, ``fnl bench`` and the checks of ``fnl quantize`` / ``fnl export`` all go through it).

Like detectron2's ``DefaultPredictor`` it owns the preprocessing, so every caller feeds the
network the same pixels: images are read with :func:`fnl_core.imaging.read_image` (EXIF
orientation, 16-bit, alpha, size limit) and resized as the spec's ``input.resize`` says. The
default, ``"pil_bilinear_uint8"``, is the reference implementations' rule: shortest side to
``input.min_size_test`` (long side at most ``input.max_size_test``, sizes rounded half up),
Pillow ``BILINEAR`` on the uint8 image (:func:`fnl_core.imaging.resize_image`). The network then
only normalises and pads. ``"interpolate"`` leaves the resize to the model (float, torch).

It also owns every inference speed-up that keeps the outputs equal within rounding (see
docs/inference.md for what each gives): BatchNorm folded into the preceding convolutions
(checked on an example image), channels_last convolutions on CPU, torchvision's single-threaded
RoIAlign/NMS run in pieces side by side (:mod:`fnl_detector.modeling.parallel`),
``torch.inference_mode``, and a thread count. On the CPU the default backend, ``"auto"``, goes
one step further when ``onnx`` and ``onnxruntime`` are installed: the model is exported once to
ONNX, verified against PyTorch and cached, and ONNX Runtime runs it (about 1.4-2x faster than
the optimised PyTorch model; :mod:`fnl_detector.onnx_backend`).

>>> predictor = Predictor("mobile_parsing_rcnn_b", "b.safetensors")  # doctest: +SKIP
>>> out = predictor("photo.jpg", iuv=True)  # doctest: +SKIP
>>> out["boxes"], out["scores"], out["iuv"].shape  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fnl_core.errors import InputError
from fnl_core.imaging import MAX_PIXELS, read_image, resize_image, resized_shape

#: Keys of the per-image result dicts (``iuv`` and ``charts`` only when asked for).
RESULT_KEYS = ("boxes", "scores", "labels", "densepose", "image_size")
#: Files of an int8 model written by ``fnl quantize`` (fnl_quant.artifact).
INT8_WEIGHTS, INT8_META = "model_int8.pt", "quantization.json"


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when torch sees a GPU, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was requested but torch sees no CUDA device")
    if not device.startswith(("cuda", "cpu")):
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def int8_directory(weights: str | Path) -> Path | None:
    """The folder of an int8 model of ``fnl quantize`` named by ``weights`` (that folder or its
    ``model_int8.pt``), or None for float weights."""
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    if (folder / INT8_META).is_file() and (path.is_dir() or path.name == INT8_WEIGHTS):
        return folder
    return None


def spec_from_weights(weights: str | Path) -> dict[str, Any] | str:
    """The spec that belongs to ``weights`` when none is given.

    Looked up in this order: the ``spec`` entry of a safetensors file's metadata (``fnl
    convert`` writes it), ``spec.json`` in the weights' folder (a run folder, an int8 folder of
    ``fnl quantize``), and the run folder of a checkpoint (``RUN/checkpoints/iter_N/``).
    """
    path = Path(weights)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise InputError(f"{path}: not a readable safetensors file ({exc})") from None
        if "spec" in meta:
            try:
                return json.loads(meta["spec"])
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: metadata 'spec' is not JSON ({exc})") from None
    folder = path if path.is_dir() else path.parent
    candidates = [folder / "spec.json", folder.parent.parent / "spec.json"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return str(found)
    raise InputError(
        f"no spec given for {path}: expected --spec, a safetensors file with the spec in its "
        f"metadata (as fnl convert writes), or a spec.json at "
        f"{' or '.join(str(c) for c in candidates)}"
    )


def load_model(
    spec_or_preset: Any,
    weights: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> nn.Module:
    """The detector of a spec (preset name, spec file, dict, DetectorSpec; None: the weights'
    own spec) with float weights (safetensors, reference .pth/.pkl) or an int8 model of
    ``fnl quantize`` loaded; eval mode, CPU."""
    from fnl_detector.build import build_detector
    from fnl_detector.spec import load_spec

    if spec_or_preset is None:
        if weights is None:
            raise InputError("a spec (preset name or spec file) or weights are required")
        spec_or_preset = spec_from_weights(weights)
    model = build_detector(load_spec(spec_or_preset, list(overrides)))
    if weights is not None:
        int8 = int8_directory(weights)
        if int8 is not None:
            try:
                from fnl_quant.artifact import load_quantized
            except ImportError:
                raise InputError(
                    f"{weights}: an int8 model of fnl quantize; reading it needs fnl-quant "
                    "installed"
                ) from None
            model = load_quantized(model.eval(), int8)
        else:
            from fnl_detector.convert import load_weights

            if not Path(weights).is_file():
                raise InputError(f"{weights}: no such weights file")
            load_weights(model, weights)
    return model.eval()


def is_quantized(model: nn.Module) -> bool:
    """Whether any submodule is an int8 (torch.ao quantized) module."""
    return any(".quantized" in type(m).__module__ for m in model.modules())


def example_image(size: int = 128) -> np.ndarray:
    """A small fixed RGB uint8 image (smooth colour blobs), used to check optimisations."""
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


class Predictor:
    """Run a detector on images: ``predictor(image)`` or ``predictor([img1, img2, ...])``.

    Args:
        spec_or_preset: a preset name, spec file, spec dict or ``DetectorSpec``; None takes the
            spec that belongs to ``weights`` (see :func:`spec_from_weights`).
        weights: FnL ``.safetensors``, a reference ``.pth``/``.pkl`` checkpoint, or an int8 model
            folder (or its ``model_int8.pt``) written by ``fnl quantize``; None: random weights.
        overrides: spec overrides (``"test.score_thresh=0.5"``...).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``.
        threads: torch CPU threads (``torch.set_num_threads``, process-wide); None leaves it.
        optimize: apply the speed-ups (BN folding, channels_last on CPU, parallel RoIAlign/NMS).
            ``False`` runs the model as built, which is what ``fnl bench --plain`` times.
        fold_bn, channels_last: switch single speed-ups off (they apply with ``optimize``);
            channels_last defaults to True on CPU.
        parallel_ops: run RoIAlign/NMS pieces side by side (bit-identical); default: ``optimize``.
        max_pixels: images with more pixels are refused (:class:`fnl_core.errors.ImageReadError`).
        backend: ``"onnxruntime"``: the model exported once to ONNX, verified against PyTorch
            and cached (:mod:`fnl_detector.onnx_backend`), then run by ONNX Runtime on the CPU
            with ``threads`` intra-op threads; same preprocessing and result format, outputs
            equal to PyTorch's within the export's tolerances (needs the
            ``fnl-detector[export]`` extra). ``"torch"``: PyTorch with the speed-ups above.
            ``"auto"`` (default): ONNX Runtime where it applies (see :func:`choose_backend`),
            else PyTorch; an export that fails or does not verify falls back to PyTorch with a
            warning. :attr:`backend` says which one runs.
        progress: called with a line before slow one-time work (the ONNX export); None: quiet.

    Each image may be a path, a PIL image or an H×W×3 uint8 RGB array; a list runs as one
    batched forward pass on PyTorch (images are padded to the largest, bottom/right), image by
    image on ONNX Runtime. Per image the result is a dict: ``boxes`` (float Tensor[K, 4],
    XYXY, original image pixels), ``scores``, ``labels`` (1 = person), ``densepose`` (the
    head's outputs: ``coarse_segm``, ``fine_segm``, ``u``, ``v``, ... box-relative, see
    :mod:`fnl_detector.postprocess`) and ``image_size``
    (H, W); with ``iuv=True`` also ``charts`` (per detection a (3, h, w) uint8 I/U/V chart of
    its integer box) and ``iuv`` (the H×W×3 uint8 full-image raster of the detections scoring
    above ``iuv_min_score``; the highest score wins overlaps). Tensors are on the CPU.
    """

    def __init__(
        self,
        spec_or_preset: Any,
        weights: str | Path | None = None,
        *,
        overrides: Sequence[str] = (),
        device: str | torch.device = "auto",
        threads: int | None = None,
        optimize: bool = True,
        fold_bn: bool = True,
        channels_last: bool | None = None,
        parallel_ops: bool | None = None,
        max_pixels: int | None = MAX_PIXELS,
        backend: str = "auto",
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if threads is not None:
            if threads < 1:
                raise InputError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        model = load_model(spec_or_preset, weights, overrides)
        self._setup(
            model,
            select_device(device),
            optimize=optimize,
            fold_bn=fold_bn,
            channels_last=channels_last,
            parallel_ops=parallel_ops,
            max_pixels=max_pixels,
            backend=backend,
            threads=threads,
            progress=progress,
        )

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        optimize: bool = False,
        copy_model: bool = True,
        fold_bn: bool = True,
        channels_last: bool | None = None,
        parallel_ops: bool | None = None,
        max_pixels: int | None = MAX_PIXELS,
        backend: str = "auto",
        threads: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Predictor:
        """A predictor around an existing detector (on the device it is on).

        With ``optimize`` the speed-ups change modules in place, so the model is deep-copied
        first unless ``copy_model=False``; ``backend="auto"`` may then export it to ONNX Runtime
        (a snapshot of the current weights). Without ``optimize`` the predictor is a view: it
        runs the model in PyTorch with its current weights at every call (evaluation during
        training), switches it to eval mode for the call and back afterwards.
        """
        self = cls.__new__(cls)
        if optimize and copy_model:
            model = copy.deepcopy(model)
        device = next(iter(model.parameters()), torch.empty(0)).device
        self._setup(
            model,
            device,
            optimize=optimize,
            fold_bn=fold_bn,
            channels_last=channels_last,
            parallel_ops=parallel_ops,
            max_pixels=max_pixels,
            backend=backend,
            threads=threads,
            progress=progress,
        )
        return self

    def _setup(
        self,
        model: nn.Module,
        device: torch.device,
        *,
        max_pixels: int | None,
        backend: str = "torch",
        threads: int | None = None,
        progress: Callable[[str], None] | None = None,
        **speedups: Any,
    ) -> None:
        """``speedups``: ``optimize``, ``fold_bn``, ``channels_last``, ``parallel_ops``."""
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        input_spec = getattr(getattr(model, "spec", None), "input", None)
        self.resize_mode = getattr(input_spec, "resize", "interpolate")
        requested = backend
        if backend == "auto":
            backend = choose_backend(model, device, **speedups)
        optimize, fold_bn, channels_last, parallel_ops = (
            speedups[k] for k in ("optimize", "fold_bn", "channels_last", "parallel_ops")
        )
        #: the ONNX Runtime session of the onnxruntime backend (else None)
        self.onnx: Any = None
        if backend == "onnxruntime":
            self.onnx = _onnx_backend(
                model, device, threads, fallback=requested == "auto", progress=progress
            )
            if self.onnx is None:
                backend = "torch"
            else:
                optimize = False  # the graph has its own optimisations (BN folded at export)
        #: what runs the network: ``"torch"`` or ``"onnxruntime"`` (what ``"auto"`` chose)
        self.backend = backend
        self.device = device
        self.model = model.to(device)
        self.spec = getattr(model, "spec", None)
        self.max_pixels = max_pixels
        self.parallel_ops = optimize if parallel_ops is None else bool(parallel_ops)
        if channels_last is None:
            channels_last = device.type == "cpu"
        #: what :func:`optimize_for_inference` did (BN layers folded, channels_last)
        self.optimizations: dict[str, Any] = {"fold_bn": 0, "channels_last": False}
        if optimize:
            was_training = model.training
            self.optimizations = optimize_for_inference(
                model, fold_bn=fold_bn, channels_last=channels_last
            )
            model.train(was_training)
        self.optimizations["parallel_ops"] = self.parallel_ops
        self.optimizations["backend"] = backend

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
        """One image → one result dict; a list or tuple → a list (one batched forward)."""
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
            result = {**_to_cpu(out), "image_size": size}
            if iuv:
                result.update(full_image_iuv(result, iuv_min_score))
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


#: What runs the network: ``"auto"`` (default, see :func:`choose_backend`), PyTorch, or the
#: model exported once to ONNX and run by ONNX Runtime (:mod:`fnl_detector.onnx_backend`).
BACKENDS = ("auto", "torch", "onnxruntime")


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
    *,
    optimize: bool = True,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    parallel_ops: bool | None = None,
) -> str:
    """What ``backend="auto"`` runs: ``"onnxruntime"`` when the backend can run the model
    (:func:`onnx_unsupported`), every speed-up is asked for (``optimize``, and none of
    ``fold_bn``/``channels_last``/``parallel_ops`` switched off) and onnx and onnxruntime are
    installed; ``"torch"`` otherwise (GPUs, int8 models, the plain model, training-time
    evaluation)."""
    speedups = optimize and fold_bn and channels_last is not False and parallel_ops is not False
    if speedups and onnx_unsupported(model, device) is None and onnxruntime_installed():
        return "onnxruntime"
    return "torch"


def _onnx_backend(
    model: nn.Module,
    device: torch.device,
    threads: int | None,
    *,
    fallback: bool,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """The ONNX Runtime backend of ``model``; with ``fallback`` (``backend="auto"``) None and a
    warning when the export fails or does not verify, instead of the error."""
    import warnings

    reason = onnx_unsupported(model, device)
    if reason is not None:
        raise InputError(reason)
    from fnl_detector.onnx_backend import OnnxBackend

    try:
        return OnnxBackend(model, threads=threads, progress=progress)
    except Exception as exc:
        if not fallback:
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(
            f"backend auto: the ONNX Runtime backend is unavailable ({reason}); running PyTorch",
            stacklevel=4,
        )
        return None


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


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.float().cpu() if value.is_floating_point() else value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


__all__ = [
    "BACKENDS",
    "Predictor",
    "choose_backend",
    "example_image",
    "full_image_iuv",
    "int8_directory",
    "is_quantized",
    "load_model",
    "onnx_unsupported",
    "onnxruntime_installed",
    "optimize_for_inference",
    "select_device",
    "spec_from_weights",
]
