"""ONNX deployment of a :class:`~fnl_detector.modeling.detector.DensePoseRCNN` as one graph.

``model.onnx`` runs the whole inference path, as torchvision exports its Mask R-CNN:

``image`` uint8 ``[H, W, 3]`` RGB, already resized (the shortest-edge rule of
:mod:`fnl_core.imaging`, Pillow bilinear on uint8: it stays outside the graph because no ONNX
``Resize`` reproduces Pillow's filter) ->
normalise, zero-pad to ``size_divisibility`` -> backbone -> neck -> RPN head -> per level
``TopK``, anchor decoding, clipping, ``NonMaxSuppression`` -> box pooler (``RoiAlign``, level
assignment, ``ScatterElements``) -> box head -> softmax, decoding, score threshold, per-class
``NonMaxSuppression``, top detections -> DensePose pooler -> DensePose head -> predictor.

The graph is the model's own inference code traced (:mod:`.graph`): anchors, proposal
selection, pooling and box selection are the functions of :mod:`fnl_detector.modeling`, which
branch on tracing only where an ONNX op must differ.

Outputs: ``boxes`` ``[D, 4]`` (XYXY, pixels of the input image), ``scores`` ``[D]``,
``labels`` ``[D]`` (int64, 1-based) and every output of the DensePose predictor, ``[D, ...]``
(``coarse_segm``, ``fine_segm``, ``u``, ``v``, plus confidences or embeddings when the predictor
returns them). Image height/width and the detection count ``D`` are dynamic (0 included).

Next to it, ``manifest.json`` holds what a runtime needs besides the graph (resize rule, output
names and shapes) and what was exported (spec, opset, versions, verification); its contract is
:mod:`fnl_core.onnx_manifest`. A torch-free runtime is ``fnl_runtime.Runtime`` (package
``fnl-runtime``).

Modules: :mod:`.graph` (the traced module; torch), :mod:`.writer` (ONNX writing, manifest),
:mod:`.verify` (onnxruntime against PyTorch), :mod:`.int8` (static quantisation). Importing this
package does not import torch.
"""

from __future__ import annotations

from typing import Any

from fnl_core.onnx_manifest import BOX_OUTPUTS, INT8_FILE, MODEL_FILE
from fnl_core.onnx_manifest import MANIFEST_FILE as MANIFEST
from fnl_detector.export.int8 import (
    INT8_FLOAT_NODES,
    add_int8_graph,
    int8_nodes,
    quantize_onnx,
)
from fnl_detector.export.verify import (
    TOLERANCES,
    compare_outputs,
    onnx_session,
    reference_outputs,
    run_onnx,
    verification_images,
    verify_export,
    verify_onnx,
)
from fnl_detector.export.writer import (
    DEFAULT_OPSET,
    MIN_OPSET,
    build_manifest,
    export_onnx,
    require_export_deps,
    write_json_atomic,
)

__all__ = [
    "BOX_OUTPUTS",
    "DEFAULT_OPSET",
    "INT8_FILE",
    "INT8_FLOAT_NODES",
    "MANIFEST",
    "MIN_OPSET",
    "MODEL_FILE",
    "TOLERANCES",
    "DensePoseGraph",
    "add_int8_graph",
    "build_manifest",
    "compare_outputs",
    "densepose_output_names",
    "export_onnx",
    "int8_nodes",
    "onnx_session",
    "quantize_onnx",
    "reference_outputs",
    "require_export_deps",
    "run_onnx",
    "verification_images",
    "verify_export",
    "verify_onnx",
    "write_json_atomic",
]


def __getattr__(name: str) -> Any:
    # The traced module needs torch; load it on first use only.
    if name in ("DensePoseGraph", "densepose_output_names"):
        from fnl_detector.export import graph

        return getattr(graph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
