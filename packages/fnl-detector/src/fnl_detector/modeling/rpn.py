"""Region proposal network (detectron2 behaviour on torchvision ops).

Selection per image: on each level the ``pre_nms_top_n`` highest raw logits, decode, clip,
drop boxes with w or h <= ``min_size``, NMS per level, then the ``post_nms_top_n`` best over all
levels. Training: anchors matched by IoU (>= fg: positive, < bg: negative, for each GT its best
anchors are positive too), a balanced sample of ``batch_size_per_image`` anchors, BCE on the
logits and L1 on the deltas of positives, both divided by (#images x batch size per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.ops import box_iou

from fnl_detector.modeling.anchors import AnchorGenerator
from fnl_detector.modeling.boxes import clip_boxes, top_k
from fnl_detector.modeling.parallel import batched_nms_by_group
from fnl_detector.modeling.sampling import BalancedSampler
from fnl_detector.spec import DEFAULT_SCALE_CLAMP


def flatten_head_outputs(
    objectness: Sequence[Tensor], deltas: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """B x A x H x W and B x 4A x H x W per level -> B x (H W A) and B x (H W A) x 4."""
    logits, boxes = [], []
    for o, d in zip(objectness, deltas):
        b, a, h, w = o.shape
        logits.append(o.permute(0, 2, 3, 1).reshape(b, -1))
        boxes.append(d.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4))
    return logits, boxes


class RPN(nn.Module):
    """Proposal generator: ``rpn_head`` (a registered component) plus anchors and selection."""

    def __init__(
        self,
        *,
        rpn_head: nn.Module,
        anchor_generator: AnchorGenerator,
        in_features: Sequence[str],
        pre_nms_top_n: tuple[int, int] = (2000, 1000),
        post_nms_top_n: tuple[int, int] = (1000, 1000),
        nms_thresh: float = 0.7,
        min_size: float = 0.0,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.rpn_head = rpn_head
        self.anchor_generator = anchor_generator
        self.in_features = list(in_features)
        self.pre_nms_top_n = {"train": pre_nms_top_n[0], "test": pre_nms_top_n[1]}
        self.post_nms_top_n = {"train": post_nms_top_n[0], "test": post_nms_top_n[1]}
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.batch_size_per_image = batch_size_per_image
        self.box_coder = BoxCoder(tuple(bbox_reg_weights), DEFAULT_SCALE_CLAMP)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        #: Picks the anchors each image trains on (replaceable, see ``modeling.sampling``).
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)

    def _mode(self) -> str:
        return "train" if self.training else "test"

    def select_proposals(
        self,
        anchors: Sequence[Tensor],
        logits: Sequence[Tensor],
        deltas: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image (boxes Tensor[R, 4], raw logits Tensor[R]) sorted by logit, descending.

        ``logits[l]`` is B x N_l, ``deltas[l]`` B x N_l x 4, ``anchors[l]`` N_l x 4. Also the
        exported ONNX graph's proposal selection (traced, ``image_sizes`` as traced values).
        """
        pre, post = self.pre_nms_top_n[self._mode()], self.post_nms_top_n[self._mode()]
        batch = logits[0].shape[0]
        cand_boxes, cand_scores, cand_levels = [], [], []
        for level, (a, lg, dl) in enumerate(zip(anchors, logits, deltas)):
            top, idx = top_k(lg, pre, 1)
            sel_deltas = dl.gather(1, idx[..., None].expand(-1, -1, 4))
            sel_anchors = a[idx.reshape(-1)]
            boxes = self.box_coder.decode_single(sel_deltas.reshape(-1, 4), sel_anchors)
            cand_boxes.append(boxes.view(batch, -1, 4))
            cand_scores.append(top)
            cand_levels.append(torch.full_like(top[0], level, dtype=torch.int64))
        all_boxes = torch.cat(cand_boxes, dim=1)
        all_scores = torch.cat(cand_scores, dim=1)
        all_levels = torch.cat(cand_levels)
        out_boxes, out_scores = [], []
        for b, size in enumerate(image_sizes):
            boxes, scores, levels = all_boxes[b], all_scores[b], all_levels
            ok = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            if torch.jit.is_tracing() or not bool(ok.all()):  # a graph filters whatever comes
                ok = torch.where(ok)[0]
                boxes, scores, levels = boxes[ok], scores[ok], levels[ok]
            boxes = clip_boxes(boxes, size)
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            keep = torch.where((w > self.min_size) & (h > self.min_size))[0]
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
            keep = batched_nms_by_group(
                boxes, scores, levels, self.nms_thresh, num_groups=len(anchors)
            )[:post]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
        return out_boxes, out_scores

    def forward(
        self,
        features: dict[str, Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
        """(proposals per image, their logits, losses (empty at inference))."""
        feats = [features[f] for f in self.in_features]
        objectness, deltas = self.rpn_head(feats)
        anchors = self.anchor_generator(feats)
        logits, box_deltas = flatten_head_outputs(objectness, deltas)
        with torch.no_grad():
            proposals, scores = self.select_proposals(
                anchors,
                [x.detach() for x in logits],
                [x.detach() for x in box_deltas],
                image_sizes,
            )
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            losses = self.losses(
                torch.cat(anchors), torch.cat(logits, 1), torch.cat(box_deltas, 1), targets
            )
        return proposals, scores, losses

    @torch.no_grad()
    def label_anchors(
        self, anchors: Tensor, targets: Sequence[dict[str, Any]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: each anchor's label after matching (1 object, 0 background, -1 ignored)
        and its regression target to the matched GT box (zeros where the image has none)."""
        labels, regression = [], []
        for t in targets:
            gt = t["boxes"]
            if gt.numel() == 0:
                labels.append(torch.zeros(anchors.shape[0], device=anchors.device))
                regression.append(torch.zeros_like(anchors))
                continue
            matched = self.matcher(box_iou(gt, anchors))
            lab = (matched >= 0).to(torch.float32)
            lab[matched == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
            regression.append(self.box_coder.encode_single(gt[matched.clamp(min=0)], anchors))
        return labels, regression

    def losses(
        self, anchors: Tensor, logits: Tensor, deltas: Tensor, targets: Sequence[dict[str, Any]]
    ) -> dict[str, Tensor]:
        """BCE on the sampled anchors' logits and L1 on the positives' deltas, both divided by
        (#images x batch size per image), as the reference normalises them."""
        labels, regression = self.label_anchors(anchors, targets)
        pos_masks, neg_masks = [], []
        for lab in labels:
            pos_idx, neg_idx = self.sampler(lab, bg_label=0, candidates=anchors)
            pos_masks.append(torch.zeros_like(lab, dtype=torch.bool).index_fill_(0, pos_idx, True))
            neg_masks.append(torch.zeros_like(lab, dtype=torch.bool).index_fill_(0, neg_idx, True))
        pos = torch.cat(pos_masks)
        sampled = pos | torch.cat(neg_masks)
        flat_logits = logits.reshape(-1)
        flat_labels = torch.cat(labels)
        normalizer = float(self.batch_size_per_image * len(targets))
        loss_cls = F.binary_cross_entropy_with_logits(
            flat_logits[sampled], flat_labels[sampled], reduction="sum"
        )
        loss_loc = F.l1_loss(
            deltas.reshape(-1, 4)[pos], torch.cat(regression)[pos], reduction="sum"
        )
        return {"loss_rpn_cls": loss_cls / normalizer, "loss_rpn_loc": loss_loc / normalizer}
