"""The contract of an ``fnl export`` folder, shared by its writer and its readers.

fnl-detector writes the folder (:mod:`fnl_detector.export`); fnl-runtime and fnl-detector's
ONNX Runtime backend read it. Both sides take the names below from here, so a change to the
contract is made once. Standard library only (no torch, no onnx).

The folder holds :data:`MODEL_FILE` (one ONNX graph), optionally :data:`INT8_FILE` (its
static int8 version) and :data:`MANIFEST_FILE`, a JSON object with at least:

* ``format`` = :data:`FORMAT`, ``format_version`` = :data:`FORMAT_VERSION` (bumped on
  incompatible changes; 1 was the three-graph split);
* ``model``: the graph's file name; ``opset``;
* ``input``: ``name`` (:data:`INPUT_NAME`: uint8 ``[H, W, 3]`` RGB, already resized),
  ``resize`` (``rule`` = :data:`RESIZE_RULE`, ``min_size_test``, ``max_size_test``), and the
  normalisation the graph applies (``format``, ``pixel_mean``, ``pixel_std``,
  ``size_divisibility``);
* ``outputs``: per graph output its ``shape`` (``D`` = detections) and meaning; the graph's
  outputs are :data:`BOX_OUTPUTS` then ``densepose_outputs`` (the DensePose predictor's, in
  its order; :data:`CHART_OUTPUTS` among them for chart models);
* ``int8`` (when the folder has the int8 graph): ``model`` = its file name, and how it was
  quantised;
* ``sha256`` (optional: manifests written before it lack it): per graph file name
  the hex sha256 of its bytes. Readers check a graph against it before loading it
  (:func:`graph_file_problem`), so a truncated or bit-flipped graph is refused in one line
  instead of failing inside onnxruntime or running with wrong outputs.

Everything else in the manifest (spec, provenance, versions, verification) is a record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

#: File names inside an export folder.
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: Manifest format tag and version.
FORMAT = "fnl-onnx-densepose"
FORMAT_VERSION = 2
#: How a runtime resizes an image before the graph (see :mod:`fnl_core.imaging`): shortest
#: edge to ``min_size_test``, longest at most ``max_size_test``, Pillow bilinear on uint8.
RESIZE_RULE = "shortest_edge_pil_bilinear_uint8"
#: The graph's input and its first outputs.
INPUT_NAME = "image"
BOX_OUTPUTS = ("boxes", "scores", "labels")
#: Manifest key: {graph file name: hex sha256}.
SHA256_KEY = "sha256"
#: The DensePose outputs an IUV chart is made of.
CHART_OUTPUTS = ("coarse_segm", "fine_segm", "u", "v")

__all__ = [
    "BOX_OUTPUTS",
    "CHART_OUTPUTS",
    "FORMAT",
    "FORMAT_VERSION",
    "INPUT_NAME",
    "INT8_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "RESIZE_RULE",
    "SHA256_KEY",
    "file_sha256",
    "graph_file_problem",
    "manifest_problem",
]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def graph_file_problem(manifest: dict[str, Any], graph: str | Path) -> str | None:
    """Why the graph file ``graph`` of an export folder cannot be used, or None: missing, or
    its bytes differ from the manifest's ``sha256`` record (no record: not checked)."""
    graph = Path(graph)
    if not graph.is_file():
        return "missing"
    recorded = manifest.get(SHA256_KEY)
    expected = recorded.get(graph.name) if isinstance(recorded, dict) else None
    if isinstance(expected, str) and file_sha256(graph) != expected.lower():
        return (
            f"its sha256 differs from the one in {MANIFEST_FILE} (the file is damaged or was "
            "replaced); export the model again"
        )
    return None


def manifest_problem(manifest: Any) -> str | None:
    """Why a reader of this contract cannot use ``manifest`` (parsed JSON), or None."""
    if not isinstance(manifest, dict):
        return f"expected a JSON object, got {type(manifest).__name__}"
    if manifest.get("format") != FORMAT:
        return f"format is {manifest.get('format')!r}, expected {FORMAT!r}"
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        return (
            f"format_version {version} is not the one this reader knows ({FORMAT_VERSION}); "
            "export the model again with the matching fnl-detector"
        )
    resize = manifest.get("input")
    resize = resize.get("resize") if isinstance(resize, dict) else None
    if not isinstance(resize, dict) or "rule" not in resize:
        return "missing entry input.resize.rule"
    rule, model = resize["rule"], manifest.get("model")
    if rule != RESIZE_RULE:
        return f"unknown resize rule {rule!r}, expected {RESIZE_RULE!r}"
    if not isinstance(model, str) or not model:
        return f"'model' must name the graph file, got {model!r}"
    return None
