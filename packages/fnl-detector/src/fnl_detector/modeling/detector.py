"""`DensePoseRCNN`: transform -> backbone -> neck -> RPN -> RoI heads (box + DensePose)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fnl_detector.modeling.roi_heads import RoIHeads
from fnl_detector.modeling.rpn import RPN
from fnl_detector.modeling.transform import ImageTransform


class DensePoseRCNN(nn.Module):
    """A Generalized R-CNN with a DensePose branch.

    Training, ``model.train()``::

        losses = model(images, targets)

    ``images``: list of float Tensor[3, H, W], RGB, values 0..255, any sizes. ``targets``: per
    image a dict with ``boxes`` (float Tensor[K, 4], XYXY, that image's pixels), ``labels``
    (int64 Tensor[K], 1 = person), optional ``iscrowd`` (int64 Tensor[K]) and ``densepose``
    (list of K ``DensePoseAnnotation | None``). Returns scalar losses ``loss_rpn_cls``,
    ``loss_rpn_loc``, ``loss_box_cls``, ``loss_box_reg``, ``loss_densepose_{I,U,V,S}``.

    Inference, ``model.eval()``::

        predictions = model(images)

    Per image: ``boxes`` (Tensor[K, 4] XYXY in the original image frame), ``scores``,
    ``labels`` and ``densepose``: ``coarse_segm`` [K, C, S, S], ``fine_segm``, ``u``, ``v``
    [K, 25, S, S] (box-relative heatmaps; see :func:`fnl_detector.postprocess.densepose_to_iuv`).

    Module names follow detectron2 (``proposal_generator.rpn_head``, ``roi_heads.box_head``,
    ``roi_heads.box_predictor``, ``roi_heads.densepose_head``, ``roi_heads.densepose_predictor``)
    so reference checkpoints map by prefix.
    """

    def __init__(
        self,
        *,
        transform: ImageTransform,
        backbone: nn.Module,
        neck: nn.Module,
        proposal_generator: RPN,
        roi_heads: RoIHeads,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.neck = neck
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        #: The :class:`~fnl_detector.spec.DetectorSpec` this model was built from (if any).
        self.spec: Any = None
        #: Feed the backbone a channels_last batch (set with ``model.to(memory_format=...)``).
        self.channels_last = False

    def extract_features(self, x: Tensor) -> dict[str, Tensor]:
        """Backbone + neck on a normalised, padded batch: ``{"p2": ..., "p6": ...}``."""
        return self.neck(self.backbone(x))

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Any]] | None = None,
        *,
        original_sizes: list[tuple[int, int]] | None = None,
        presized: bool = False,
    ) -> dict[str, Tensor] | list[dict[str, Any]]:
        """``original_sizes`` (inference only): the images are already resized to the network
        input size (:class:`fnl_detector.Predictor` does this); boxes are returned in the frame
        of these original (h, w) sizes instead. ``presized`` (training): the images and the
        targets' boxes are already at the network input size (the trainer's data path resizes
        them as the reference's mapper does); the model only normalises and pads."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")
        presized = presized or original_sizes is not None
        if original_sizes is not None:
            if self.training:
                raise ValueError("original_sizes is for inference only (model is in train mode)")
            if len(original_sizes) != len(images):
                raise ValueError(f"got {len(images)} images but {len(original_sizes)} sizes")
            original_sizes = [(int(h), int(w)) for h, w in original_sizes]
        else:
            original_sizes = [tuple(int(s) for s in img.shape[-2:]) for img in images]
        x, sizes, targets = self.transform(
            images, targets if self.training else None, resize=not presized
        )
        if targets is not None:
            targets = [_to_device(t, x.device) for t in targets]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.extract_features(x)
        proposals, _, rpn_losses = self.proposal_generator(features, sizes, targets)
        detections, roi_losses = self.roi_heads(features, proposals, sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return [
            self._to_original(d, size, orig)
            for d, size, orig in zip(detections, sizes, original_sizes)
        ]

    @staticmethod
    def _to_original(
        det: dict[str, Any], size: tuple[int, int], original: tuple[int, int]
    ) -> dict[str, Any]:
        boxes, keep = ImageTransform.postprocess(det["boxes"], size, original)
        if bool(keep.all()):
            return {
                "boxes": boxes,
                "scores": det["scores"],
                "labels": det["labels"],
                "densepose": det["densepose"],
            }
        return {
            "boxes": boxes[keep],
            "scores": det["scores"][keep],
            "labels": det["labels"][keep],
            "densepose": {k: v[keep] for k, v in det["densepose"].items()},
        }


def _to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in target.items()}
