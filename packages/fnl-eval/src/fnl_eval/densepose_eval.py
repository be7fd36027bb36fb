"""DensePose evaluation (GPS, GPSm, mask IoU) on pycocotools' COCOeval (docs/evaluation.md).

:class:`DensePoseCOCOeval` keeps COCOeval's matcher and accumulator and changes only what the
DensePose protocol changes:

* parameters: pycocotools' keypoint parameters are exactly the DensePose ones (maxDets [20],
  areas all / medium / large, IoU 0.50:0.95, 101 recall points) and so is its 10-number
  summary, so the evaluator is created with ``iouType="keypoints"`` and its similarity hook,
  ``computeOks``, returns GPS, GPSm or mask IoU instead of OKS;
* ``_prepare``: a GT is ignored iff it has no ``dp_x`` (this replaces the crowd rule), and
  objects hidden by image ignore regions are dropped (§3);
* ``evaluateImg``: after COCOeval's greedy matching (pass 1), the box-IoU ≥ 0.8 rescue at the
  0.95 threshold (pass 2), the area filter, and "no usable GT → every detection ignored" (§6).

All similarities of all images are computed in one vectorized batch at the end of ``_prepare``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from fnl_eval.gps import GtPoints, RasterBank, gps_pairs
from fnl_eval.masks import encode_mask, gt_mask_rle, ignore_region_mask, paste_mask
from fnl_eval.surface import SurfaceIndex

__all__ = ["DensePoseCOCOeval", "Mode"]

Mode = Literal["gps", "gpsm", "iou"]

RasterLookup = Callable[[Mapping[str, Any]], "np.ndarray | None"]
"""Returns the decoded (3, h, w) IUV raster of a detection, or None when it has none."""


class DensePoseCOCOeval(COCOeval):
    """COCOeval with a DensePose similarity: ``mode`` is ``gps``, ``gpsm`` or ``iou``."""

    def __init__(
        self,
        coco_gt: Any,
        coco_dt: Any,
        mode: Mode,
        raster: RasterLookup,
        index: SurfaceIndex | None = None,
        ignore_thr_bb: float = 0.7,
        ignore_thr_uv: float = 0.9,
        rescue_box_iou: float = 0.8,
    ) -> None:
        if mode not in ("gps", "gpsm", "iou"):
            raise ValueError(f"unknown DensePose evaluation mode {mode!r} (gps, gpsm or iou)")
        if mode != "iou" and index is None:
            raise ValueError(f"DensePose mode {mode!r} needs a body surface")
        super().__init__(coco_gt, coco_dt, iouType="keypoints")
        self.mode = mode
        self.raster = raster
        self.index = index
        self.ignore_thr_bb = ignore_thr_bb
        self.ignore_thr_uv = ignore_thr_uv
        self.rescue_box_iou = rescue_box_iou
        self._ranked: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self._sims: dict[tuple[int, int], np.ndarray] = {}
        self._box_ious: dict[tuple[int, int], np.ndarray] = {}

    # ------------------------------------------------------------------ preparation (§3)
    def _keep(self, obj: Mapping[str, Any], region: np.ndarray | None, is_det: bool) -> bool:
        """Whether an object survives the image's ignore region (True without a region)."""
        if region is None:
            return True
        x, y, w, h = (int(b) for b in obj["bbox"])
        if w * h == 0:
            return False
        crop = region[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)]
        if crop.sum() == 0:
            return True
        iuv = self.raster(obj) if is_det else None
        if iuv is None:
            return crop.sum() / (w * h) < self.ignore_thr_bb
        fg = iuv[0] > 0
        area = int(fg.sum())
        if area == 0:
            return True
        pasted = paste_mask(fg, obj["bbox"], region.shape[0], region.shape[1])
        inter = int(np.logical_and(pasted > 0, region > 0).sum())
        return inter / area < self.ignore_thr_uv

    def _prepare(self) -> None:
        p = self.params
        gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        regions: dict[int, np.ndarray | None] = {}
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for gt in gts:
            gt["ignore"] = int("dp_x" not in gt)
            img = gt["image_id"]
            if img not in regions:
                regions[img] = ignore_region_mask(self.cocoGt.imgs[img])
            if self._keep(gt, regions[img], is_det=False):
                self._gts[img, gt["category_id"]].append(gt)
        for dt in dts:
            img = dt["image_id"]
            if img not in regions or self._keep(dt, regions[img], is_det=True):
                self._dts[img, dt["category_id"]].append(dt)
        self.evalImgs = defaultdict(list)
        self.eval = {}
        self._compute_similarities()

    # ------------------------------------------------------------------ similarities (§4, §5)
    def _compute_similarities(self) -> None:
        max_det = self.params.maxDets[-1]
        self._ranked, self._sims, self._box_ious = {}, {}, {}
        for key, dt in self._dts.items():
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")[:max_det]
            self._ranked[key] = [dt[i] for i in order]
        keys = [k for k in self._gts if self._dts.get(k)]
        for key in keys:
            dt, gt = self._ranked[key], self._gts[key]
            crowd = [int(g.get("iscrowd", 0)) for g in gt]
            self._box_ious[key] = np.asarray(
                mask_utils.iou([d["bbox"] for d in dt], [g["bbox"] for g in gt], crowd)
            ).reshape(len(dt), len(gt))
        gps = self._gps_matrices(keys) if self.mode in ("gps", "gpsm") else {}
        for key in keys:
            if self.mode == "gps":
                self._sims[key] = gps[key]
                continue
            iou = self._mask_ious(key)
            self._sims[key] = iou if self.mode == "iou" else np.sqrt(gps[key] * iou)

    def _gps_matrices(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
        """GPS of every (ranked detection, GT) pair of every image in one batch."""
        assert self.index is not None
        gt_list: list[Mapping[str, Any]] = []
        det_list: list[Mapping[str, Any]] = []
        pair_gt, pair_det, slots = [], [], []
        out = {}
        for key in keys:
            dt, gt = self._ranked[key], self._gts[key]
            out[key] = np.zeros((len(dt), len(gt)))
            d0 = len(det_list)
            det_list.extend(dt)
            for j, g in enumerate(gt):
                if g["ignore"]:
                    continue
                gj = len(gt_list)
                gt_list.append(g)
                for i in range(len(dt)):
                    pair_gt.append(gj)
                    pair_det.append(d0 + i)
                    slots.append((key, i, j))
        if not slots:
            return out
        points = GtPoints.from_annotations(gt_list, self.index)
        bank = RasterBank.from_rasters(
            [d["bbox"] for d in det_list], [self.raster(d) for d in det_list]
        )
        values = gps_pairs(self.index, points, bank, np.asarray(pair_gt), np.asarray(pair_det))
        for (key, i, j), value in zip(slots, values):
            out[key][i, j] = value
        return out

    def _mask_ious(self, key: tuple[int, int]) -> np.ndarray:
        """Mask IoU of ranked detections (I > 0 pasted) against GT masks, crowd-aware."""
        img = self.cocoGt.imgs[key[0]]
        h, w = int(img["height"]), int(img["width"])
        dt, gt = self._ranked[key], self._gts[key]
        dt_rles = []
        for d in dt:
            iuv = self.raster(d)
            fg = np.zeros((1, 1), bool) if iuv is None else iuv[0] > 0
            dt_rles.append(encode_mask(paste_mask(fg, d["bbox"], h, w)))
        gt_rles = [gt_mask_rle(g, h, w) for g in gt]
        crowd = [int(g.get("iscrowd", 0)) for g in gt]
        return np.asarray(mask_utils.iou(dt_rles, gt_rles, crowd)).reshape(len(dt), len(gt))

    def computeOks(self, imgId: int, catId: int) -> Any:  # noqa: N802, N803 - COCOeval's hook
        return self._sims.get((imgId, catId), [])

    # ------------------------------------------------------------------ matching (§6)
    def evaluateImg(self, imgId: int, catId: int, aRng: list[float], maxDet: int) -> Any:  # noqa: N802, N803
        res = super().evaluateImg(imgId, catId, aRng, maxDet)
        if res is None:
            return None
        key = (imgId, catId)
        gt = self._gts[key]
        gtind = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
        gt = [gt[i] for i in gtind]
        dt = self._ranked.get(key, [])[:maxDet]
        dtm, gtm = res["dtMatches"], res["gtMatches"]
        gt_ig = np.asarray(res["gtIgnore"], dtype=bool)
        # pass-1 ignore flags before COCOeval's area filter (re-applied below, after pass 2)
        position = {g["id"]: k for k, g in enumerate(gt)}
        dt_ig = np.zeros(dtm.shape, dtype=bool)
        matched = dtm > 0
        if matched.any():
            dt_ig[matched] = gt_ig[[position[int(m)] for m in dtm[matched]]]
        if len(dt) and len(gt):
            self._rescue(dt, gt, gt_ig, self._box_ious[key][: len(dt)][:, gtind], dtm, gtm, dt_ig)
        out_of_range = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt], bool)
        dt_ig |= (dtm == 0) & out_of_range.reshape(1, -1)
        if gt_ig.all():  # no usable GT (or none at all): every detection is ignored
            dt_ig[:] = True
        res["dtIgnore"] = dt_ig
        return res

    def _rescue(
        self,
        dt: list[dict[str, Any]],
        gt: list[dict[str, Any]],
        gt_ig: np.ndarray,
        box_iou: np.ndarray,
        dtm: np.ndarray,
        gtm: np.ndarray,
        dt_ig: np.ndarray,
    ) -> None:
        """Pass 2: a detection unmatched at the last threshold takes the ignore flag of the
        free GT it overlaps most (box IoU ≥ ``rescue_box_iou``); an ignored GT is matched."""
        last = dtm.shape[0] - 1
        crowd = [int(g.get("iscrowd", 0)) for g in gt]
        for i, d in enumerate(dt):
            if dtm[last, i] > 0:
                continue
            best, m = self.rescue_box_iou, -1
            for j in range(len(gt)):
                if gtm[last, j] > 0 and not crowd[j]:
                    continue
                if box_iou[i, j] < best:
                    continue
                best, m = box_iou[i, j], j
            if m < 0:
                continue
            dt_ig[:, i] = gt_ig[m]
            if gt_ig[m]:
                dtm[last, i] = gt[m]["id"]
                gtm[last, m] = d["id"]
