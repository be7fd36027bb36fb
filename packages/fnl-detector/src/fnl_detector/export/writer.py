"""Writing an export folder: ``model.onnx`` traced from :class:`~.graph.DensePoseGraph`, and
``manifest.json`` (the contract is :mod:`fnl_core.onnx_manifest`). No torch at module level."""

from __future__ import annotations

import json
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fnl_core.files import atomic_output, atomic_write_text
from fnl_core.onnx_manifest import (
    BOX_OUTPUTS,
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAME,
    MANIFEST_FILE,
    MODEL_FILE,
    RESIZE_RULE,
    SHA256_KEY,
    file_sha256,
)

if TYPE_CHECKING:
    from torch import Tensor

    from fnl_detector.modeling.detector import DensePoseRCNN

#: RoiAlign with ``coordinate_transformation_mode="half_pixel"`` (``aligned=True``) needs 16.
MIN_OPSET = 16
DEFAULT_OPSET = 17


def require_export_deps(*, need_onnx: bool = True) -> tuple[Any, Any]:
    """(onnx or None, onnxruntime), or an ImportError naming the extra to install."""
    try:
        import onnxruntime

        onnx = None
        if need_onnx:
            import onnx
    except ImportError as exc:
        from fnl_core.registry import MissingDependencyError  # an ImportError the CLI prints

        raise MissingDependencyError(
            f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): "
            "pip install 'fnl-detector[export]'"
        ) from exc
    return onnx, onnxruntime


def check_image(image: Any) -> np.ndarray:
    """``image`` as a contiguous uint8 [H, W, 3] array (the graph's input), or ValueError."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _torch_export(module: Any, image: Tensor, path: Path, outputs: Sequence[str], opset: int):
    import torch

    dynamic = {INPUT_NAME: {0: "height", 1: "width"}}
    dynamic.update({name: {0: "detections"} for name in outputs})
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo=True, which needs
        # onnxscript and has no lowering for torchvision's roi_align and nms; this one has both.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            module,
            (image,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("fnl-detector", "torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _provenance(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """Package and version of each part of the spec (when fnl-core provides it)."""
    if spec is None:
        return None
    from fnl_core import registry

    provenance = getattr(registry, "provenance", None)
    return provenance(spec) if provenance is not None else None


def build_manifest(model: DensePoseRCNN, opset: int, outputs: dict[str, list]) -> dict[str, Any]:
    """What a runtime needs besides the graph, and what was exported (plain JSON data)."""
    t, roi = model.transform, model.roi_heads
    spec_obj = getattr(model, "spec", None)
    spec = spec_obj.to_dict() if spec_obj is not None else None
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": MODEL_FILE,
        "opset": opset,
        "input": {
            "name": INPUT_NAME,
            "layout": "uint8 [H, W, 3] RGB, already resized by the rule below; the graph "
            "normalises, pads and runs the whole detector",
            "resize": {
                "rule": RESIZE_RULE,
                "min_size_test": t.min_size_test,
                "max_size_test": t.max_size_test,
                "spec_resize": getattr(getattr(spec_obj, "input", None), "resize", None),
            },
            "format": t.input_format,
            "pixel_mean": t.pixel_mean.flatten().tolist(),
            "pixel_std": t.pixel_std.flatten().tolist(),
            "size_divisibility": t.size_divisibility,
        },
        "outputs": {
            "boxes": {"shape": ["D", 4], "meaning": "XYXY in pixels of the input image"},
            "scores": {"shape": ["D"], "meaning": "class probability of each detection"},
            "labels": {"shape": ["D"], "meaning": "class, 1-based (1 = person)"},
            **{
                name: {"shape": ["D", *shape], "meaning": "DensePose predictor output"}
                for name, shape in outputs.items()
            },
        },
        "densepose_outputs": list(outputs),
        "num_classes": roi.num_classes,
        "score_thresh": roi.score_thresh,
        "detections_per_image": roi.detections_per_image,
        "spec": spec,
        "provenance": _provenance(spec),
        "versions": _versions(),
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically (:func:`fnl_core.files.atomic_write_text`:
    a temporary file in the same folder, fsync'ed, renamed over ``path``)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def record_file_hashes(out: Path, manifest: dict[str, Any]) -> None:
    """The manifest's ``sha256`` of every file in its ``files_bytes`` (the graphs), which
    readers check before loading a graph (:func:`fnl_core.onnx_manifest.graph_file_problem`)."""
    manifest[SHA256_KEY] = {name: file_sha256(out / name) for name in manifest["files_bytes"]}


def export_onnx(
    model: DensePoseRCNN,
    out_dir: str | Path,
    image: np.ndarray,
    *,
    opset: int = DEFAULT_OPSET,
    fold_bn: bool = True,
) -> Path:
    """Export ``model`` (eval mode, CPU) as ``model.onnx`` + ``manifest.json`` into ``out_dir``.

    ``image`` (uint8 [H, W, 3], resized) is the tracing example; any size works afterwards.
    With ``fold_bn`` a copy of the model is exported with its BatchNorms folded into the
    convolutions (:func:`fnl_detector.analysis.fold_batch_norm`, as the PyTorch predictor
    runs): frozen BNs otherwise export as Mul/Add nodes that onnxruntime does not fold, and
    they would cut every int8 convolution off its activation. ``model`` is not changed.
    Returns the manifest path.
    """
    import copy

    import torch

    from fnl_detector.export.graph import DensePoseGraph, densepose_output_names

    onnx, _ = require_export_deps()
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (RoiAlign with half_pixel), got {opset}")
    image = check_image(image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    folded = 0
    if fold_bn:
        from fnl_detector.analysis import fold_batch_norm

        model = copy.deepcopy(model)
        folded = fold_batch_norm(model, [torch.from_numpy(image.copy()).permute(2, 0, 1).float()])
    names = densepose_output_names(model)
    outputs = [*BOX_OUTPUTS, *names]
    shapes = {k: list(model.roi_heads.densepose_output_shapes.get(k, [])) for k in names}
    with atomic_output(out / MODEL_FILE) as tmp:  # renamed into place once checked
        with torch.no_grad():
            example = torch.from_numpy(image.copy())
            _torch_export(DensePoseGraph(model, names).eval(), example, tmp, outputs, opset)
        graph = onnx.load(str(tmp))
        if _inline_shared_initializers(graph.graph):
            onnx.save(graph, str(tmp))
        onnx.checker.check_model(str(tmp))
    manifest = build_manifest(model, opset, shapes)
    manifest["batch_norms_folded"] = folded
    manifest["files_bytes"] = {MODEL_FILE: (out / MODEL_FILE).stat().st_size}
    record_file_hashes(out, manifest)
    path = out / MANIFEST_FILE
    write_json_atomic(path, manifest)
    return path


def _inline_shared_initializers(graph: Any) -> int:
    """Give every ``Identity(initializer)`` output its own copy of the initializer.

    The exporter stores equal parameters once (e.g. the zero biases of untrained layers) and
    reaches the copies through Identity nodes; onnxruntime's quantiser can only quantise a
    convolution whose bias is an initializer, and otherwise leaves it float. Returns the
    number of Identity nodes removed."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers]
    for node in shared:
        array = numpy_helper.to_array(initializers[node.input[0]])
        graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        graph.node.remove(node)
    return len(shared)
