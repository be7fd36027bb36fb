"""RoI heads: box branch (pooler, registered box head, :class:`BoxPredictor`) and DensePose
branch (pooler, registered head, predictor and loss).

Training (detectron2 ``StandardROIHeads`` + DensePose): GT boxes appended to the proposals,
matched at IoU >= ``iou_threshold``, a balanced sample per image; the box head trains on the
sample, the DensePose head on its foreground RoIs whose IoU with their GT is > the DensePose
threshold (strict) and whose GT has DensePose data, pooled at the proposal boxes.

Inference: class-specific box decoding, clip, score > threshold, NMS per class, top-k; the
DensePose head then runs on the final boxes (no detections: no head call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.ops import box_iou

from fnl_detector.modeling.boxes import clip_boxes
from fnl_detector.modeling.densepose_targets import build_densepose_targets
from fnl_detector.modeling.parallel import batched_nms_by_group
from fnl_detector.modeling.poolers import RoIPooler
from fnl_detector.modeling.sampling import BalancedSampler
from fnl_detector.spec import DEFAULT_SCALE_CLAMP


class BoxPredictor(nn.Module):
    """``cls_score``: K + 1 logits (foreground classes first, background last, as detectron2);
    ``bbox_pred``: 4 deltas per class (or 4 when class-agnostic)."""

    def __init__(self, in_features: int, num_classes: int, cls_agnostic: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 * (1 if cls_agnostic else num_classes))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(nn.Module):
    """Box and DensePose branches on top of the neck features."""

    def __init__(
        self,
        *,
        box_pooler: RoIPooler,
        box_head: nn.Module,
        box_predictor: BoxPredictor,
        densepose_pooler: RoIPooler,
        densepose_head: nn.Module,
        densepose_predictor: nn.Module,
        densepose_loss: Callable[[dict[str, Tensor], Any], dict[str, Tensor]],
        decoder: nn.Module | None = None,
        embedder: nn.Module | None = None,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        iou_threshold: float = 0.5,
        proposal_append_gt: bool = True,
        densepose_iou_threshold: float = 0.7,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.densepose_pooler = densepose_pooler
        self.densepose_head = densepose_head
        self.densepose_predictor = densepose_predictor
        self.densepose_loss = densepose_loss
        #: Optional DensePose feature decoder (detectron2 ``roi_heads.decoder``): merges the
        #: pooler's levels into the one map the DensePose pooler reads.
        self.decoder = decoder
        #: Optional CSE mesh vertex embedder (detectron2 ``roi_heads.embedder``).
        self.embedder = embedder
        self.num_classes = box_predictor.num_classes
        self.box_coder = BoxCoder(tuple(bbox_reg_weights), DEFAULT_SCALE_CLAMP)
        self.matcher = Matcher(iou_threshold, iou_threshold, allow_low_quality_matches=False)
        #: Picks the proposals each image trains on (replaceable, see ``modeling.sampling``).
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)
        self.proposal_append_gt = proposal_append_gt
        self.densepose_iou_threshold = densepose_iou_threshold
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        #: (channels, height, width) of each DensePose output, for empty results.
        self.densepose_output_shapes: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ inference
    def box_outputs(
        self,
        features: dict[str, Tensor],
        proposals: Sequence[Tensor],
        memory_format: torch.memory_format | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Class logits [N, K+1] and deltas [N, 4K] for the proposals of all images
        (``memory_format``: of the pooled features; default the maps' own)."""
        x = self.box_pooler(features, proposals, memory_format=memory_format)
        return self.box_predictor(self.box_head(x))

    def predict_boxes(
        self,
        proposals: Sequence[Tensor],
        class_logits: Tensor,
        box_deltas: Tensor,
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per image: boxes (resized frame), scores, labels (1-based) and ``proposal_index``.
        Also the exported ONNX graph's box selection (traced, one image, ``image_sizes`` as
        traced values)."""
        scores_all = F.softmax(class_logits, dim=-1)[:, :-1]
        if len(proposals) == 1:  # no split: its sizes would be constants in a traced graph
            scores_all, deltas_all = [scores_all], [box_deltas]
        else:
            counts = [len(p) for p in proposals]
            scores_all, deltas_all = scores_all.split(counts), box_deltas.split(counts)
        k = self.num_classes
        results = []
        for props, scores, deltas, size in zip(proposals, scores_all, deltas_all, image_sizes):
            boxes = self.box_coder.decode_single(deltas, props)
            per_box = deltas.shape[1] // 4  # K classes, or 1 when class-agnostic
            boxes = clip_boxes(boxes.view(-1, 4), size).view(-1, per_box, 4)
            if boxes.shape[1] == 1 and k > 1:
                boxes = boxes.expand(-1, k, 4)
            ok = torch.isfinite(boxes).all(dim=(1, 2)) & torch.isfinite(scores).all(dim=1)
            if torch.jit.is_tracing() or not bool(ok.all()):  # a graph filters whatever comes
                ok_idx = torch.where(ok)[0]
                boxes, scores = boxes[ok_idx], scores[ok_idx]
            else:
                ok_idx = None
            where = (scores > self.score_thresh).nonzero()
            sel_boxes = boxes[where[:, 0], where[:, 1]]
            sel_scores = scores[where[:, 0], where[:, 1]]
            keep = batched_nms_by_group(
                sel_boxes, sel_scores, where[:, 1], self.nms_thresh, num_groups=k
            )
            keep = keep[: self.detections_per_image]
            rows = where[keep, 0]
            if ok_idx is not None:
                rows = ok_idx[rows]
            results.append(
                {
                    "boxes": sel_boxes[keep],
                    "scores": sel_scores[keep],
                    "labels": where[keep, 1] + 1,
                    "proposal_index": rows,
                }
            )
        return results

    def predict_densepose(
        self,
        features: dict[str, Tensor],
        boxes: Sequence[Tensor],
        memory_format: torch.memory_format | None = None,
    ) -> dict[str, Tensor]:
        """DensePose outputs for the given boxes (resized frame) of all images, concatenated
        (``memory_format``: of the pooled features; default the maps' own)."""
        if not torch.jit.is_tracing() and sum(len(b) for b in boxes) == 0:
            ref = next(iter(features.values()))
            return {
                k: ref.new_zeros((0, *shape)) for k, shape in self.densepose_output_shapes.items()
            }
        x = self.densepose_pooler(
            self.densepose_features(features), boxes, memory_format=memory_format
        )
        return self.densepose_predictor(self.densepose_head(x))

    def densepose_features(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """The features the DensePose pooler reads: the decoder's single map when there is a
        decoder (named after its finest input level), else the neck features."""
        if self.decoder is None:
            return features
        names = self.decoder.in_features
        return {names[0]: self.decoder([features[n] for n in names])}

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def sample_proposals(
        self, proposals: Sequence[Tensor], targets: Sequence[dict[str, Any]]
    ) -> list[dict[str, Tensor]]:
        """Per image: sampled ``proposals``, ``gt_classes`` (K = background), ``matched_idxs``
        (index of the matched GT, -1 for background) and ``ious`` with the matched GT."""
        out = []
        for props, t in zip(proposals, targets):
            if self.proposal_append_gt:
                props = torch.cat([props, t["boxes"].to(props.dtype)])
            labels = self.label_proposals(props, t)
            pos, neg = self.sampler(
                labels["gt_classes"], bg_label=self.num_classes, candidates=props
            )
            idx = torch.cat([pos, neg])
            out.append({k: v[idx] for k, v in labels.items()})
        return out

    @torch.no_grad()
    def label_proposals(self, proposals: Tensor, target: dict[str, Any]) -> dict[str, Tensor]:
        """Match one image's ``proposals`` to its GT boxes: ``proposals``, ``gt_classes``
        (0-based class, K = background), ``matched_idxs`` (-1 for background) and ``ious``
        (with the best GT box)."""
        gt = target["boxes"]
        if gt.numel():
            iou = box_iou(gt, proposals)
            ious, _ = iou.max(dim=0)
            matched = self.matcher(iou)
            classes = target["labels"][matched.clamp(min=0)] - 1
            classes[matched < 0] = self.num_classes
        else:
            ious = proposals.new_zeros(len(proposals))
            matched = torch.full((len(proposals),), -1, dtype=torch.int64, device=proposals.device)
            classes = torch.full_like(matched, self.num_classes)
        return {
            "proposals": proposals,
            "gt_classes": classes,
            "matched_idxs": matched,
            "ious": ious,
        }

    def box_losses(
        self,
        samples: Sequence[dict[str, Tensor]],
        targets: Sequence[dict[str, Any]],
        class_logits: Tensor,
        box_deltas: Tensor,
    ) -> dict[str, Tensor]:
        """Cross-entropy averaged over the sampled RoIs; L1 on the foreground RoIs' deltas of
        their class, divided by the number of sampled RoIs (the reference's normalisation)."""
        gt_classes = torch.cat([s["gt_classes"] for s in samples])
        loss_cls = F.cross_entropy(class_logits, gt_classes, reduction="mean")
        reg_targets = self.box_regression_targets(samples, targets)
        fg = ((gt_classes >= 0) & (gt_classes < self.num_classes)).nonzero().flatten()
        if box_deltas.shape[1] == 4:  # class-agnostic
            cols = torch.arange(4, device=box_deltas.device)
            pred = box_deltas[fg[:, None], cols]
        else:
            cols = 4 * gt_classes[fg, None] + torch.arange(4, device=box_deltas.device)
            pred = box_deltas[fg[:, None], cols]
        loss_reg = F.l1_loss(pred, reg_targets[fg], reduction="sum")
        return {
            "loss_box_cls": loss_cls,
            "loss_box_reg": loss_reg / max(gt_classes.numel(), 1),
        }

    @torch.no_grad()
    def box_regression_targets(
        self, samples: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Any]]
    ) -> Tensor:
        """Deltas from each sampled RoI to its matched GT box, all images' RoIs in order."""
        out = []
        for s, t in zip(samples, targets):
            gt = (
                t["boxes"][s["matched_idxs"].clamp(min=0)] if t["boxes"].numel() else s["proposals"]
            )
            out.append(self.box_coder.encode_single(gt, s["proposals"]))
        return torch.cat(out)

    def densepose_losses(
        self,
        features: dict[str, Tensor],
        samples: Sequence[dict[str, Tensor]],
        targets: Sequence[dict[str, Any]],
    ) -> dict[str, Tensor]:
        boxes, gt_boxes, annotations = [], [], []
        for s, t in zip(samples, targets):
            dp = t.get("densepose") or [None] * len(t["boxes"])
            fg = (s["gt_classes"] < self.num_classes) & (s["ious"] > self.densepose_iou_threshold)
            idx = fg.nonzero().flatten().tolist()
            m = s["matched_idxs"].tolist()
            idx = [i for i in idx if dp[m[i]] is not None]
            sel = torch.as_tensor(idx, dtype=torch.int64, device=s["proposals"].device)
            boxes.append(s["proposals"][sel])
            gt_boxes.append(t["boxes"][s["matched_idxs"][sel]])
            annotations.extend(dp[m[i]] for i in idx)
        x = self.densepose_pooler(self.densepose_features(features), boxes)
        outputs = self.densepose_predictor(self.densepose_head(x))
        if not annotations:
            zero = sum(v.sum() for v in outputs.values()) * 0.0
            return {f"loss_densepose_{k}": zero for k in "IUVS"}
        dp_targets = build_densepose_targets(torch.cat(boxes), torch.cat(gt_boxes), annotations)
        return dict(self.densepose_loss(outputs, dp_targets))

    # ------------------------------------------------------------------ forward
    def pooling_layout(
        self, features: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], torch.memory_format]:
        """``features`` with the maps the poolers read in NCHW layout, and the layout the heads
        run in (the maps' own). torchvision's RoIAlign kernels read NCHW and copy a
        channels_last map at every call; converting once here spares the second copy (both
        poolers read P2, the largest map)."""
        pooled = {*self.box_pooler.in_features, *self.densepose_pooler.in_features}
        maps = [x for name, x in features.items() if name in pooled and x.dim() == 4]
        channels_last = bool(maps) and maps[0].is_contiguous(memory_format=torch.channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        converted = {
            name: x.contiguous() if name in pooled and x.dim() == 4 else x
            for name, x in features.items()
        }
        return converted, layout

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training: ([], losses). Inference: (detections with ``densepose`` outputs, {})."""
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            samples = self.sample_proposals(proposals, targets)
            logits, deltas = self.box_outputs(features, [s["proposals"] for s in samples])
            losses = self.box_losses(samples, targets, logits, deltas)
            losses.update(self.densepose_losses(features, samples, targets))
            return [], losses
        features, layout = self.pooling_layout(features)
        logits, deltas = self.box_outputs(features, proposals, layout)
        detections = self.predict_boxes(proposals, logits, deltas, image_sizes)
        dp = self.predict_densepose(features, [d["boxes"] for d in detections], layout)
        if len(detections) == 1:  # no split: its sizes would be constants in a traced graph
            detections[0]["densepose"] = dict(dp)
            return detections, {}
        counts = [len(d["boxes"]) for d in detections]
        for d, *chunks in zip(detections, *(dp[k].split(counts) for k in dp)):
            d["densepose"] = dict(zip(dp.keys(), chunks))
        return detections, {}
