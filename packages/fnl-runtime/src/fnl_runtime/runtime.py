"""``Runtime``: an ``fnl export`` folder run by onnxruntime, numpy and Pillow (no torch).

Per image: read (:func:`fnl_core.imaging.read_image`), resize by the manifest's rule
(:func:`fnl_core.imaging.resize_shortest_edge`: Pillow bilinear on uint8, the same pixels the
PyTorch predictor sees), run the graph, then bring the boxes back to the original frame as the
PyTorch model does (scale, clip, drop empty boxes). IUV charts come from
:func:`fnl_core.charts.densepose_to_iuv`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.charts import densepose_to_iuv
from fnl_core.errors import InputError
from fnl_core.imaging import read_image, resize_image, resized_shape
from fnl_core.onnx_manifest import (
    BOX_OUTPUTS,
    CHART_OUTPUTS,
    INPUT_NAME,
    MANIFEST_FILE,
    graph_file_problem,
    manifest_problem,
)

__all__ = ["Runtime", "load_manifest", "to_original_frame"]


def load_manifest(model: str | Path) -> tuple[dict[str, Any], Path]:
    """(manifest, graph path) of an export folder or of a ``.onnx`` file inside one."""
    path = Path(model)
    if path.is_dir():
        folder, graph = path, None
    elif path.suffix == ".onnx" and path.is_file():
        folder, graph = path.parent, path
    else:
        raise InputError(f"{path}: expected an `fnl export` folder or a .onnx file in one")
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path}: missing; is {folder} a folder written by `fnl export`?")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{manifest_path}: not valid JSON ({exc})") from None
    problem = manifest_problem(manifest)
    if problem is not None:
        raise InputError(f"{manifest_path}: {problem}")
    graph = graph or folder / manifest["model"]
    if not graph.is_file():
        raise InputError(f"{graph}: missing (named by {manifest_path})")
    return manifest, graph


def open_session(graph: Path, manifest: dict[str, Any], options: Any, providers: Any) -> Any:
    """An onnxruntime session of ``graph``, checked against the manifest's sha256 first; a
    graph onnxruntime cannot load is one :class:`InputError` line, not its traceback."""
    import onnxruntime as ort

    problem = graph_file_problem(manifest, graph)
    if problem is not None:
        raise InputError(f"{graph}: {problem}")
    try:
        return ort.InferenceSession(str(graph), options, providers=list(providers))
    except Exception as exc:  # onnxruntime's InvalidProtobuf, Fail, NoSuchFile, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{graph}: onnxruntime cannot load this graph ({first[:200]}); is the file "
            "complete? export the model again"
        ) from None


def to_original_frame(
    boxes: np.ndarray, resized_hw: tuple[int, int], original_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes from the resized to the original frame, clipped; (boxes, keep mask) where
    ``keep`` drops boxes left empty, in float32 as the PyTorch model computes it."""
    (rh, rw), (oh, ow) = resized_hw, original_hw
    scale = np.asarray([ow / rw, oh / rh, ow / rw, oh / rh], dtype=np.float32)
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale
    out[:, 0::2] = np.clip(out[:, 0::2], np.float32(0), np.float32(ow))
    out[:, 1::2] = np.clip(out[:, 1::2], np.float32(0), np.float32(oh))
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out, keep


class Runtime:
    """DensePose on images with an exported graph::

        runtime = Runtime("onnx-b/")              # or "onnx-b/model.int8.onnx", int8=True
        prediction = runtime("photo.jpg")         # path, PIL image or HxWx3 uint8 RGB array

    ``prediction``: ``boxes`` float32 [D, 4] XYXY in original-image pixels, ``scores`` [D],
    ``labels`` int64 [D] (1 = person), ``densepose`` (every DensePose output of the graph,
    ``[D, ...]``: ``coarse_segm``, ``fine_segm``, ``u``, ``v`` and, when the model has them,
    confidences or embeddings) and ``image_hw``. :meth:`iuv` turns it into per-detection
    IUV charts.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        int8: bool = False,
        threads: int | None = None,
        spin: bool = False,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        """``threads``: onnxruntime intra-op threads (None: its default, one per core).
        ``spin``: let idle pool threads busy-wait for work; off by default, because on a
        machine whose cores are busy with other work spinning threads steal them (the
        PyTorch commands set ``OMP_WAIT_POLICY=PASSIVE`` for the same reason)."""
        import onnxruntime as ort

        self.manifest, graph = load_manifest(model)
        if int8:
            if "int8" not in self.manifest:
                raise InputError(
                    f"{graph.parent}: no int8 graph (export with `fnl export ... --int8`)"
                )
            graph = graph.parent / self.manifest["int8"]["model"]
            if not graph.is_file():
                raise InputError(
                    f"{graph}: missing, though {MANIFEST_FILE} names it as the int8 graph; "
                    "export again with `fnl export ... --int8`"
                )
        self.path = graph
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = open_session(graph, self.manifest, options, providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = [k for k in BOX_OUTPUTS if k not in self.output_names]
        if missing:
            raise InputError(f"{graph}: graph outputs lack {missing}; not an FnL DensePose graph")
        resize = self.manifest["input"]["resize"]
        self.min_size, self.max_size = int(resize["min_size_test"]), int(resize["max_size_test"])

    @property
    def densepose_outputs(self) -> list[str]:
        return [n for n in self.output_names if n not in BOX_OUTPUTS]

    def preprocess(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """(original uint8 image, resized uint8 image the graph takes)."""
        original = read_image(image)
        size = resized_shape(*original.shape[:2], self.min_size, self.max_size)
        return original, resize_image(original, size)

    def run_graph(self, resized: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs for one resized uint8 image (boxes in its frame)."""
        return dict(zip(self.output_names, self.session.run(None, {INPUT_NAME: resized})))

    def __call__(self, image: Any) -> dict[str, Any]:
        return self.predict(image)

    def predict(self, image: Any) -> dict[str, Any]:
        original, resized = self.preprocess(image)
        out = self.run_graph(resized)
        boxes, keep = to_original_frame(out["boxes"], resized.shape[:2], original.shape[:2])
        return {
            "boxes": boxes[keep],
            "scores": out["scores"][keep],
            "labels": out["labels"][keep].astype(np.int64),
            "densepose": {k: out[k][keep] for k in self.densepose_outputs},
            "image_hw": tuple(original.shape[:2]),
        }

    @staticmethod
    def result_extras(prediction: dict[str, Any], charts: list[np.ndarray]) -> list[dict]:
        """Per detection what the results JSON carries beyond the IUV chart: ``confidences``
        (encoded arrays, as ``fnl predict`` writes them) when the graph outputs any."""
        from fnl_core.charts import chart_confidences
        from fnl_core.results import encode_array

        if not charts:
            return []
        maps = chart_confidences(prediction["boxes"], prediction["densepose"], charts)
        return [
            {"confidences": {k: encode_array(v) for k, v in m.items()}} if m else {} for m in maps
        ]

    def coco_results(self, image_id: int, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        """DensePose-COCO result entries of one :meth:`predict` output, as ``fnl predict``
        writes them to ``results.json`` (IUV chart, and confidences when the graph has them):
        what an evaluator scores."""
        from fnl_core.results import make_result

        charts = self.iuv(prediction)
        extras = self.result_extras(prediction, charts)
        entries = []
        for k, (box, score, chart) in enumerate(
            zip(prediction["boxes"], prediction["scores"], charts, strict=True)
        ):
            x0, y0, x1, y1 = (float(v) for v in box)
            entry = make_result(image_id, [x0, y0, x1 - x0, y1 - y0], float(score), chart)
            entries.append({**entry, **extras[k]})
        return entries

    @staticmethod
    def iuv(prediction: dict[str, Any]) -> list[np.ndarray]:
        """Per detection the uint8 (3, h, w) chart [I, 255 U, 255 V] at its integer box."""
        missing = [k for k in CHART_OUTPUTS if k not in prediction["densepose"]]
        if missing:
            raise InputError(
                f"the graph has no chart outputs {missing} (a CSE model?): fnl-runtime draws "
                "and writes IUV charts only; use Runtime.predict for the raw outputs"
            )
        if len(prediction["boxes"]) == 0:
            return []
        return densepose_to_iuv(prediction["boxes"], prediction["densepose"])
