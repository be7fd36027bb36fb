"""Static int8 quantisation of an exported graph (onnxruntime's QDQ tools), keeping the
paper's float islands. No torch at module level."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.files import atomic_output
from fnl_core.onnx_manifest import INPUT_NAME, INT8_FILE, MODEL_FILE
from fnl_detector.export.writer import check_image, require_export_deps

#: Nodes kept float in the int8 graph (fnmatch patterns of ONNX node names), the paper's
#: section 3.4 float islands: the RPN's objectness and delta convolutions (proposals are
#: decoded from float outputs), the box predictor's two linear layers (scores and deltas) and
#: the ASPP image-pooling branch. BiFPN's fast normalised fusion (weights, weighted sums),
#: resampling, RoiAlign and NMS stay float because only the operators below are quantised.
#: Node names follow the module tree (``/proposal_generator/rpn_head/...``,
#: ``/roi_heads/box_predictor/...``); the leading ``*`` also matches older graphs' names.
INT8_FLOAT_NODES = (
    "*/rpn_head/objectness_logits*",
    "*/rpn_head/anchor_deltas*",
    "*/box_predictor/*",
    "*/densepose_head/ASPP/convs.4/*",
)
#: Operators quantised everywhere (weights int8) ...
INT8_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: ... and operators quantised where they join quantised convolutions (ReLU, residual sums,
#: max pooling inside the backbone and the heads), so that onnxruntime fuses them with the
#: convolutions instead of dequantising around each of them.
INT8_JOIN_OP_TYPES = ("Relu", "Add", "MaxPool")
INT8_JOIN_SCOPES = ("/backbone/*", "*/rpn_head/*", "*/box_head/*", "*/densepose_head/*")


def int8_nodes(graph: Any, float_nodes: Sequence[str] = INT8_FLOAT_NODES) -> list[str]:
    """Names of the nodes :func:`quantize_onnx` quantises."""
    import fnmatch

    def matches(name: str, patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    out = []
    for node in graph.node:
        if matches(node.name, float_nodes):
            continue
        if node.op_type in INT8_OP_TYPES or (
            node.op_type in INT8_JOIN_OP_TYPES and matches(node.name, INT8_JOIN_SCOPES)
        ):
            out.append(node.name)
    return out


def add_int8_graph(
    out: str | Path, manifest: dict[str, Any], calibration_images: Sequence[np.ndarray]
) -> None:
    """Quantise ``out/model.onnx`` into ``out/model.int8.onnx`` (:func:`quantize_onnx`) and
    record it in ``manifest`` (``int8`` entry and file size; the caller writes the manifest),
    which is what ``fnl_runtime.Runtime(out, int8=True)`` reads."""
    out = Path(out)
    info = quantize_onnx(out / MODEL_FILE, out / INT8_FILE, calibration_images)
    manifest["int8"] = {"model": INT8_FILE, **info}
    manifest.setdefault("files_bytes", {})[INT8_FILE] = (out / INT8_FILE).stat().st_size


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_images: Sequence[np.ndarray],
    *,
    float_nodes: Sequence[str] = INT8_FLOAT_NODES,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Static int8 quantisation (QDQ: int8 weights per channel, uint8 activations) with
    onnxruntime's tools, activation ranges calibrated (min/max) on ``calibration_images``
    (resized uint8 [H, W, 3]). Returns what was quantised and kept float."""
    _, _ = require_export_deps()
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration_images:
        raise ValueError("int8 calibration needs at least one image")
    images = [check_image(i) for i in calibration_images]
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    quantized = int8_nodes(graph, float_nodes)
    weighted = [n for n in graph.node if n.op_type in INT8_OP_TYPES]
    excluded = [n.name for n in weighted if n.name not in set(quantized)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{INPUT_NAME: i} for i in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    out = Path(out_path)
    root = logging.getLogger()  # the quantiser advises "pre-processing" on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    with atomic_output(out) as tmp, tempfile.TemporaryDirectory() as work:
        # The calibrator writes an augmented copy of the graph; keep it out of the export folder.
        augmented = Path(work) / "augmented.onnx"
        quantize_static(
            str(fp32_path),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=[*INT8_OP_TYPES, *INT8_JOIN_OP_TYPES],
            nodes_to_quantize=quantized,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={
                "CalibTensorRangeSymmetric": False,
                "AugmentedModelPath": str(augmented),
            },
        )
        root.setLevel(level)
        model = onnx.load(str(tmp))
        del model.graph.value_info[:]  # shapes the quantiser inferred; runtimes do not need them
        onnx.save(model, str(tmp))
    return {
        "format": "QDQ",
        "weights": "int8, per channel" if per_channel else "int8, per tensor",
        "activations": "uint8, per tensor, min/max calibrated",
        "calibration_images": len(images),
        "quantized_nodes": len(quantized),
        "float_nodes": excluded,
        "float_node_patterns": list(float_nodes),
    }
