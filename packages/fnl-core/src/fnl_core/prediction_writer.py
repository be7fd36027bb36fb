"""Writing the output folder of ``fnl predict`` / ``fnl run`` (no torch).

For every image OUT gets ``<name>_densepose.png`` (part colours and U/V contour lines of the
detections above ``min_score``) and ``<name>_iuv.png`` (3-channel uint8 I, 255·U, 255·V in
full-image coordinates; overlaps go to the highest score). ``<name>`` is the file's stem,
prefixed with its folder names where two inputs share a stem (:func:`output_names`). Video
frames give no per-frame pictures (the caller encodes them into a video); their results and
index entries carry the ``frame`` index. All detections go to ``OUT/results.json``
(DensePose-COCO results, :mod:`fnl_core.results`) and ``OUT/images.json`` maps each
``image_id`` to its file; both are appended per image to ``results.jsonl`` / ``images.jsonl``
as they are produced and written in full by :meth:`PredictionWriter.finish`, so an interrupted
run loses nothing already done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.files import atomic_write_text
from fnl_core.imaging import save_png
from fnl_core.results import make_result
from fnl_core.visualize import draw_prediction, iuv_image

__all__ = ["OUTPUT_PATTERNS", "PredictionWriter", "output_names"]

#: What an output folder of ``fnl predict`` / ``fnl run`` holds (glob patterns): an earlier run's
#: results, refused without ``--overwrite`` (:func:`fnl_core.outputs.check_output_dir`).
OUTPUT_PATTERNS = (
    "results.json",
    "images.json",
    "results.jsonl",
    "images.jsonl",
    "*_densepose.png",
    "*_densepose.mp4",
    "*_iuv.png",
    "*_iuv",
)


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name per file: its stem, with parent folder names prefixed (as many
    as needed) where stems collide, and a counter as the last resort."""
    names: dict[Path, str] = {}
    parts = {f: Path(os.path.abspath(f)).with_suffix("").parts for f in files}
    depth = dict.fromkeys(files, 1)
    while True:
        proposed = {f: "_".join(parts[f][-depth[f] :]).lstrip("_/") for f in files}
        clashes = [f for f in files if list(proposed.values()).count(proposed[f]) > 1]
        growable = [f for f in clashes if depth[f] < len(parts[f])]
        if not growable:
            break
        for f in growable:
            depth[f] += 1
    taken: set[str] = set()
    for f in files:
        name, k = proposed[f] or "image", 2
        while name in taken:
            name, k = f"{proposed[f]}-{k}", k + 1
        taken.add(name)
        names[f] = name
    return names


class PredictionWriter:
    """One output folder (see the module docstring); call :meth:`finish` at the end."""

    def __init__(self, out_dir: str | Path, min_score: float = 0.8) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.min_score = min_score
        self.results_lines = self.out_dir / "results.jsonl"
        self.images_lines = self.out_dir / "images.jsonl"
        self._results = self.results_lines.open("w", encoding="utf-8")
        self._images = self.images_lines.open("w", encoding="utf-8")
        self.images = 0
        self.detections = 0

    def add(
        self,
        path: str | Path,
        name: str,
        image: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        charts: Sequence[np.ndarray] | None,
        *,
        frame: int | None = None,
        on_picture: Callable[[np.ndarray], Any] | None = None,
        extras: Sequence[Mapping[str, Any]] | None = None,
        picture: np.ndarray | None = None,
        iuv: np.ndarray | None = None,
    ) -> int:
        """Write one image's (or video frame's) outputs; returns the number of detections
        above ``min_score``. ``boxes`` XYXY float32 in image pixels, ``charts`` per detection
        uint8 (3, h, w) IUV; a frame's picture goes to ``on_picture`` instead of a file.

        ``extras`` (per detection) are merged into the result entries (confidences, CSE vertex
        maps); ``picture`` replaces the default drawing. Models without charts (CSE) pass
        ``charts=None``: no IUV raster is written and the entries carry only ``extras``.
        ``iuv`` is the full-image raster of the detections above ``min_score`` when the caller
        already has it (:func:`fnl_core.visualize.iuv_image`); else it is computed here, once.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        keep = [k for k in range(len(scores)) if float(scores[k]) > self.min_score]
        if charts is not None and iuv is None and (picture is None or frame is None):
            kept = [charts[k] for k in keep]
            iuv = iuv_image(image.shape[:2], boxes[keep], kept, scores[keep])
        if picture is None:
            if charts is None:
                raise ValueError("a prediction without charts needs its picture")
            picture = draw_prediction(image, boxes, scores, list(charts), self.min_score, iuv=iuv)
        if frame is None:
            if charts is not None:
                save_png(iuv, self.out_dir / f"{name}_iuv.png")
            save_png(picture, self.out_dir / f"{name}_densepose.png")
        elif on_picture is not None:
            on_picture(np.ascontiguousarray(picture))
        image_id = self.images + 1
        detections = []
        for k in range(len(scores)):
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            box, score = [x0, y0, x1 - x0, y1 - y0], float(scores[k])
            if charts is not None:
                entry = make_result(image_id, box, score, charts[k])
            else:
                entry = {"image_id": image_id, "category_id": 1, "bbox": box, "score": score}
            if extras is not None:
                entry.update(extras[k])
            if frame is not None:
                entry["frame"] = frame
            detections.append(entry)
        index = {
            "id": image_id,
            "file_name": str(path),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "detections": len(keep),
        }
        if frame is not None:
            index["frame"] = frame
        if detections:
            self._results.write("".join(json.dumps(d) + "\n" for d in detections))
            self._results.flush()
        self._images.write(json.dumps(index) + "\n")
        self._images.flush()
        self.images += 1
        self.detections += len(detections)
        return len(keep)

    def finish(self) -> None:
        """Write the JSON files; the line files are removed once both are in place."""
        self._results.close()
        self._images.close()
        for lines, target, indent in (
            (self.results_lines, self.out_dir / "results.json", None),
            (self.images_lines, self.out_dir / "images.json", 2),
        ):
            entries = [json.loads(line) for line in lines.read_text("utf-8").splitlines() if line]
            atomic_write_text(target, json.dumps(entries, indent=indent))
        self.results_lines.unlink()
        self.images_lines.unlink()
