"""The Predictor's ONNX Runtime backend (``Predictor(..., backend="onnxruntime")``).

The detector is exported once to a single ONNX graph (:func:`fnl_detector.export.export_onnx`),
checked against PyTorch on two images (:func:`fnl_detector.export.verify_export`; a mismatch
is an error, never a silent fallback), and cached by content under
``$FNL_CACHE_DIR/onnx/<key>/`` (spec, weights, opset and library versions), so later
predictors of the same model start at once. Images are read and resized exactly as the
PyTorch path does them; the graph runs the rest. Needs ``onnx`` and ``onnxruntime`` (the
``fnl-detector[export]`` extra).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.errors import InputError
from fnl_core.files import fsync_dir

#: Export format of the cache entries; part of the key, bumped when exports change.
CACHE_FORMAT = 2


def model_key(model: Any, opset: int) -> str:
    """A hex digest of what the exported graph depends on: the spec, every weight and buffer
    (names, shapes, bytes), the opset and the versions of torch, onnx and fnl-detector."""
    from importlib.metadata import version

    import onnx
    import torch

    digest = hashlib.sha256()
    spec = getattr(model, "spec", None)
    header = {
        "format": CACHE_FORMAT,
        "spec": spec.to_dict() if spec is not None else None,
        "opset": opset,
        "versions": [torch.__version__, onnx.__version__, version("fnl-detector")],
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cached_export(
    model: Any,
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The folder holding ``model``'s verified export, exporting it on first use (``progress``
    is told before the export starts, which takes seconds).

    The export is written to a temporary folder beside the cache entry and renamed into place
    once verified, so an interrupted export leaves nothing that a later run would trust.
    """
    from fnl_core.download import cache_root
    from fnl_detector.export import (
        DEFAULT_OPSET,
        MANIFEST,
        MODEL_FILE,
        export_onnx,
        verification_images,
        verify_export,
        write_json_atomic,
    )

    root = Path(cache_dir) if cache_dir is not None else cache_root() / "onnx"
    folder = root / model_key(model, DEFAULT_OPSET)[:24]
    if (folder / MODEL_FILE).is_file() and (folder / MANIFEST).is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress(f"exporting the model to ONNX for ONNX Runtime, once (cached in {folder})...")
    model = model.eval().cpu()
    images = verification_images(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        manifest_path = export_onnx(model, tmp, images[0])
        report = verify_export(model, tmp, images)
        if not report["ok"]:
            raise InputError(
                "backend onnxruntime: the exported graph does not reproduce the PyTorch model "
                f"(matched {report['matched']} of {report['detections']} detections, largest "
                f"differences {report['images'][0].get('max_diff')}); use the torch backend"
            )
        manifest = json.loads(manifest_path.read_text())
        manifest["verification"] = report
        write_json_atomic(manifest_path, manifest)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same export first
            if not (folder / MODEL_FILE).is_file():
                raise
        else:
            fsync_dir(root)  # the rename reaches the disk with the files it names
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


class OnnxBackend:
    """A verified, cached ONNX export of a detector, run by onnxruntime on resized uint8
    images (``run``: the graph's outputs, boxes in the resized image's frame)."""

    def __init__(
        self,
        model: Any,
        *,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        from fnl_detector.export import BOX_OUTPUTS, MODEL_FILE, onnx_session, require_export_deps

        require_export_deps()  # else an ImportError naming the extra to install
        self.folder = cached_export(model, cache_dir=cache_dir, progress=progress)
        try:
            self.session = onnx_session(self.folder / MODEL_FILE, threads, spin=False)
        except Exception:  # a cache entry damaged after it was verified: export it again, once
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = cached_export(model, cache_dir=cache_dir, progress=progress)
            self.session = onnx_session(self.folder / MODEL_FILE, threads, spin=False)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.densepose_outputs = [n for n in self.output_names if n not in BOX_OUTPUTS]

    def run(self, resized: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs for one resized H×W×3 uint8 image."""
        outputs = self.session.run(None, {"image": np.ascontiguousarray(resized)})
        return dict(zip(self.output_names, outputs))


__all__ = ["OnnxBackend", "cached_export", "model_key"]
