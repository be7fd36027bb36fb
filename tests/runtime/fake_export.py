"""A stand-in for an ``fnl export`` folder: a tiny ONNX graph with the exported graph's
interface (uint8 image in; boxes, scores, labels and DensePose outputs out) whose outputs are
constants, so fnl-runtime is tested without torch or a real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

S = 8  # heatmap size of the stand-in


def fake_outputs(n: int = 2) -> dict[str, np.ndarray]:
    """Boxes in the frame of the *resized* image; the second one is empty (dropped)."""
    rng = np.random.default_rng(0)
    boxes = np.array([[5.0, 10.0, 25.0, 40.0], [0.0, 0.0, 0.0, 5.0]], np.float32)[:n]
    coarse = np.zeros((n, 2, S, S), np.float32)
    coarse[:, 1, 2:6, 2:6] = 1.0  # foreground in the centre
    fine = np.zeros((n, 25, S, S), np.float32)
    fine[:, 3] = 1.0  # part 3 everywhere
    return {
        "boxes": boxes,
        "scores": np.array([0.9, 0.95], np.float32)[:n],
        "labels": np.ones(n, np.int64),
        "coarse_segm": coarse,
        "fine_segm": fine,
        "u": rng.random((n, 25, S, S)).astype(np.float32),
        "v": rng.random((n, 25, S, S)).astype(np.float32),
    }


def write_fake_export(folder: Path, min_size: int = 50, max_size: int = 1333) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    outputs = fake_outputs()
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["h", "w", 3])
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))
        for name, value in outputs.items()
    ]
    # Use the input so that the graph depends on it: image max * 0 added to the scores.
    nodes[1].output[0] = "scores_raw"
    nodes += [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["image_f"], ["image_max"], keepdims=0),
        helper.make_node("Mul", ["image_max", "zero"], ["nothing"]),
        helper.make_node("Add", ["scores_raw", "nothing"], ["scores"]),
    ]
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    outs = [
        helper.make_tensor_value_info(
            k, TensorProto.INT64 if k == "labels" else TensorProto.FLOAT, None
        )
        for k in outputs
    ]
    graph = helper.make_graph(nodes, "fake", [image], outs, initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {
        "format": "fnl-onnx-densepose",
        "format_version": 2,
        "model": "model.onnx",
        "opset": 17,
        "input": {
            "name": "image",
            "resize": {
                "rule": "shortest_edge_pil_bilinear_uint8",
                "min_size_test": min_size,
                "max_size_test": max_size,
            },
        },
        "densepose_outputs": ["coarse_segm", "fine_segm", "u", "v"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
