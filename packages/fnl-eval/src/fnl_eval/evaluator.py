"""The DensePose-COCO evaluator: box AP, mask AP, GPS AP and GPSm AP of a results list.

Box and mask AP are plain pycocotools COCOeval (``bbox`` / ``segm``); GPS, GPSm and the
DensePose mask-IoU AP (``dp_segm``) run :class:`fnl_eval.densepose_eval.DensePoseCOCOeval`.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fnl_core.errors import AnnotationError, InputError, ResultsError
from fnl_eval.checks import check_ground_truth, check_results
from fnl_eval.densepose_eval import DensePoseCOCOeval
from fnl_eval.masks import encode_mask, gt_mask_rle, paste_mask
from fnl_eval.matching import boxes_outside, match_images
from fnl_eval.results import decode_iuv
from fnl_eval.surface import SurfaceIndex

__all__ = [
    "DENSEPOSE_STATS",
    "DETECTION_STATS",
    "METRICS",
    "DensePoseEvaluator",
    "format_table",
    "load_results",
]

METRICS = ("bbox", "segm", "gps", "gpsm", "dp_segm")
"""Metric names: COCO box AP, COCO mask AP, GPS AP, GPSm AP, DensePose mask-IoU AP."""

SURFACE_METRICS = ("gps", "gpsm")

DETECTION_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
                   "ARm", "ARl")  # fmt: skip
"""The 12 numbers of a COCO box / mask summary, in pycocotools' order."""

DENSEPOSE_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
"""The 10 numbers of a DensePose summary (maxDets 20, no small area), in pycocotools' order."""

_DENSEPOSE_MODES = {"gps": "gps", "gpsm": "gpsm", "dp_segm": "iou"}

_STAT_ROWS: dict[str, tuple[bool, str, str, int]] = {
    # name: (precision?, IoU label, area, maxDets)
    "AP": (True, "0.50:0.95", "all", 100), "AP50": (True, "0.50", "all", 100),
    "AP75": (True, "0.75", "all", 100), "APs": (True, "0.50:0.95", "small", 100),
    "APm": (True, "0.50:0.95", "medium", 100), "APl": (True, "0.50:0.95", "large", 100),
    "AR1": (False, "0.50:0.95", "all", 1), "AR10": (False, "0.50:0.95", "all", 10),
    "AR100": (False, "0.50:0.95", "all", 100), "AR": (False, "0.50:0.95", "all", 100),
    "AR50": (False, "0.50", "all", 100), "AR75": (False, "0.75", "all", 100),
    "ARs": (False, "0.50:0.95", "small", 100), "ARm": (False, "0.50:0.95", "medium", 100),
    "ARl": (False, "0.50:0.95", "large", 100),
}  # fmt: skip


def format_table(metric: str, stats: Mapping[str, float]) -> str:
    """COCO-style summary lines of one metric's stats (as returned by ``evaluate``)."""
    max_dets = 20 if metric in _DENSEPOSE_MODES else None
    lines = [f"[{metric}]"]
    for name, value in stats.items():
        is_ap, iou, area, dets = _STAT_ROWS[name]
        title = "Average Precision  (AP)" if is_ap else "Average Recall     (AR)"
        lines.append(
            f" {title} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets or dets:>3d} ] "
            f"= {value:0.3f}"
        )
    return "\n".join(lines)


def _quiet() -> contextlib.AbstractContextManager[Any]:
    """pycocotools prints progress on stdout; keep it off the caller's output."""
    return contextlib.redirect_stdout(io.StringIO())


def _load_json(source: Any, what: str, error: type[InputError]) -> tuple[Any, str]:
    """The JSON data of a path (or ``source`` itself) and a name for messages."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
        try:
            return json.loads(path.read_bytes().decode("utf-8")), str(path)
        except UnicodeDecodeError as exc:
            raise error(
                f"{what} file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        except json.JSONDecodeError as exc:
            raise error(f"{what} file {path}: invalid JSON: {exc}") from None
        except RecursionError:
            raise error(f"{what} file {path}: JSON nested too deeply") from None
    return source, what


def load_results(results: Any) -> list[dict[str, Any]]:
    """Results as a list of dicts from a path, a list, or None (no detections).

    Malformed input raises :class:`~fnl_core.errors.ResultsError` naming the entry and field.
    """
    data, name = _load_json(results, "results", ResultsError)
    if data is None:
        return []
    check_results(data, name)
    return [dict(det) for det in data]


def _gt_dataset(gt_json: Any) -> dict[str, Any]:
    """The ground truth as a checked COCO dict (:class:`~fnl_core.errors.AnnotationError`)."""
    data, name = _load_json(gt_json, "ground-truth", AnnotationError)
    if isinstance(data, COCO):
        data = data.dataset
    check_ground_truth(data, name)
    return dict(data)


def _coco(dataset: Mapping[str, Any]) -> COCO:
    """A COCO index over shallow copies of the annotations (COCOeval edits them in place)."""
    anns = []
    for ann in dataset["annotations"]:
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        anns.append(ann)
    coco = COCO()
    coco.dataset = {
        **dataset,
        "annotations": anns,
        "categories": list(dataset.get("categories") or [{"id": 1, "name": "person"}]),
    }
    with _quiet():
        coco.createIndex()
    return coco


def _load_res(gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """pycocotools ``loadRes`` (ids 1.., iscrowd 0, area = box area), also for no results."""
    if not results:
        res = COCO()
        res.dataset = {"images": list(gt.dataset["images"]),
                       "categories": list(gt.dataset["categories"]), "annotations": []}  # fmt: skip
        with _quiet():
            res.createIndex()
        return res
    unknown = sorted({d["image_id"] for d in results} - set(gt.getImgIds()))
    if unknown:
        raise ResultsError(
            f"results refer to {len(unknown)} image id(s) absent from the ground truth, e.g. "
            f"{unknown[:5]}"
        )
    with _quiet():
        return gt.loadRes([dict(d) for d in results])


class _RasterCache:
    """Decodes each detection's ``densepose`` entry once, keyed by position in the results."""

    def __init__(self, results: Sequence[Mapping[str, Any]]) -> None:
        self._results = results
        self._cache: dict[int, np.ndarray | None] = {}

    def __call__(self, det: Mapping[str, Any]) -> np.ndarray | None:
        k = int(det["id"]) - 1  # loadRes numbers results 1, 2, ... in list order
        if k not in self._cache:
            entry = self._results[k].get("densepose")
            try:
                self._cache[k] = None if not entry else decode_iuv(entry)
            except (ValueError, TypeError, KeyError) as exc:
                raise ResultsError(f"results[{k}].densepose: {exc}") from None
        return self._cache[k]


class DensePoseEvaluator:
    """Evaluates DensePose-COCO results (see :mod:`fnl_eval.results`) against a GT json.

    ``surface`` (a :class:`fnl_core.structures.BodySurface`) is needed for ``gps``/``gpsm``;
    its nearest-vertex index is built once here and reused by every ``evaluate`` call.
    """

    def __init__(
        self,
        surface: Any | None = None,
        metrics: Iterable[str] = ("bbox", "segm", "gps", "gpsm"),
        ignore_thr_bb: float = 0.7,
        ignore_thr_uv: float = 0.9,
        rescue_box_iou: float = 0.8,
    ) -> None:
        self.metrics = tuple(metrics)
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; choose from {', '.join(METRICS)}")
        needs = [m for m in self.metrics if m in SURFACE_METRICS]
        if needs and surface is None:
            raise ValueError(
                f"metrics {', '.join(needs)} need a body surface (e.g. fnl eval --surface toy "
                "or --surface smpl:DIR); without one, ask only for bbox, segm, dp_segm"
            )
        self.surface = surface
        self.index = SurfaceIndex(surface) if surface is not None else None
        self.thresholds = {
            "ignore_thr_bb": ignore_thr_bb,
            "ignore_thr_uv": ignore_thr_uv,
            "rescue_box_iou": rescue_box_iou,
        }

    def evaluate(
        self, gt_json: Any, results: Any, images: Any = None
    ) -> dict[str, dict[str, float]]:
        """``{metric: {stat: value}}`` with COCO summary values in [0, 1] (-1: no GT).

        ``gt_json`` is a path, a dict or a pycocotools COCO; ``results`` a path, a list of
        detection dicts or None. Empty results give 0 AP wherever there is GT. ``images``: the
        ``images.json`` (path or list) of ``fnl predict`` / ``fnl run``; the results' image ids
        are then matched to the ground truth by file name and only those images are scored
        (:func:`fnl_eval.matching.match_images`). Detections whose boxes lie outside their
        image give a :class:`UserWarning`.
        """
        dataset = _gt_dataset(gt_json)
        dets = load_results(results)
        if images is not None:
            dataset, dets = match_images(dataset, dets, images)
        outside, example = boxes_outside(dataset, dets)
        if outside:
            warnings.warn(
                f"{outside} of {len(dets)} detections lie outside their image ({example}); do "
                "the results' image ids belong to this ground truth? (fnl predict numbers its "
                "images 1, 2, ...: give its images.json to match them by file name)",
                UserWarning,
                stacklevel=2,
            )
        raster = _RasterCache(dets)
        out: dict[str, dict[str, float]] = {}
        for metric in self.metrics:
            gt = _coco(dataset)
            if metric == "bbox":
                stats = self._coco_eval(gt, _load_res(gt, dets), "bbox")
            elif metric == "segm":
                stats = self._segm(gt, dets, raster)
            else:
                ev = DensePoseCOCOeval(
                    gt, _load_res(gt, dets), _DENSEPOSE_MODES[metric], raster, self.index,
                    **self.thresholds,
                )  # fmt: skip
                stats = self._run(ev, DENSEPOSE_STATS)
            out[metric] = stats
        return out

    def similarities(
        self, gt_json: Any, results: Any, metric: str = "gps"
    ) -> dict[tuple[int, int], np.ndarray]:
        """Per-image similarity matrices of a DensePose metric (``gps``, ``gpsm``, ``dp_segm``).

        Keys are ``(image_id, category_id)``; rows are that image's detections by decreasing
        score (top 20), columns its GTs in file order (after ignore-region filtering).
        """
        if metric not in _DENSEPOSE_MODES:
            raise ValueError(f"metric {metric!r} has no pairwise similarity; use gps, gpsm or "
                             "dp_segm")  # fmt: skip
        dataset = _gt_dataset(gt_json)
        dets = load_results(results)
        gt = _coco(dataset)
        ev = DensePoseCOCOeval(
            gt, _load_res(gt, dets), _DENSEPOSE_MODES[metric], _RasterCache(dets), self.index,
            **self.thresholds,
        )  # fmt: skip
        with _quiet():
            ev.evaluate()
        return {(int(i), int(c)): np.asarray(v) for (i, c), v in ev.ious.items() if len(v)}

    @staticmethod
    def _run(ev: COCOeval, names: Sequence[str]) -> dict[str, float]:
        with _quiet():
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {n: float(v) for n, v in zip(names, ev.stats)}

    def _coco_eval(self, gt: COCO, res: COCO, iou_type: str) -> dict[str, float]:
        return self._run(COCOeval(gt, res, iou_type), DETECTION_STATS)

    def _segm(self, gt: COCO, dets: list[dict[str, Any]], raster: _RasterCache) -> dict[str, float]:
        """COCO mask AP: GT ``segmentation`` (else ``dp_masks``), detections I > 0 pasted.

        As detectron2's COCO evaluator, each detection's ``bbox`` is dropped before scoring, so
        pycocotools takes its area (which decides small / medium / large) and its box from the
        mask; with the box kept, APs/APm/APl would bin detections by box area instead.
        """
        for ann in gt.dataset["annotations"]:
            img = gt.imgs[ann["image_id"]]
            h, w = int(img["height"]), int(img["width"])
            if not ann.get("segmentation"):
                ann["segmentation"] = gt_mask_rle(ann, h, w)
            else:  # decoded here so that a bad one fails with its annotation named
                ann["segmentation"] = gt_mask_rle({**ann, "dp_masks": None}, h, w)
        with_masks = []
        for k, det in enumerate(dets):
            img = gt.imgs.get(det["image_id"])
            det = dict(det)
            iuv = raster({"id": k + 1})
            if img is not None and (iuv is not None or "segmentation" not in det):
                h, w = int(img["height"]), int(img["width"])
                fg = np.zeros((1, 1), bool) if iuv is None else iuv[0] > 0
                det["segmentation"] = encode_mask(paste_mask(fg, det["bbox"], h, w))
            det.pop("bbox", None)
            with_masks.append(det)
        return self._coco_eval(gt, _load_res(gt, with_masks), "segm")
