"""The exported computation: the model's own inference modules, wrapped for one uint8 image.

:class:`DensePoseGraph` adds only what the graph's input needs (HWC uint8 to a normalised,
padded NCHW batch, with the image size as traced values) and calls the model's backbone,
neck, :class:`~fnl_detector.modeling.rpn.RPN` (anchors, proposal selection) and
:class:`~fnl_detector.modeling.roi_heads.RoIHeads` (poolers, box selection, DensePose).
Those functions trace to ONNX operators (``TopK``, ``NonMaxSuppression``, ``RoiAlign``) with
dynamic sizes; where an op must differ in a graph they branch on ``torch.jit.is_tracing()``
(:mod:`fnl_detector.modeling.boxes`, ``RoIPooler._pool_traced``,
``batched_nms_by_group(num_groups=...)``). A change to inference in ``modeling/`` is a change
to the exported graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from fnl_detector.modeling.detector import DensePoseRCNN

__all__ = ["DensePoseGraph", "densepose_output_names"]


class DensePoseGraph(nn.Module):
    """``forward(image uint8 [H, W, 3])`` -> (boxes, scores, labels, *DensePose outputs named
    ``densepose_outputs``, in that order), boxes in the image's frame; what
    ``model.eval()`` computes on that image with ``original_sizes`` = its own size."""

    def __init__(self, model: DensePoseRCNN, densepose_outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.densepose_outputs = list(densepose_outputs)

    def preprocess(self, image: Tensor) -> Tensor:
        """``model.transform``'s normalise and pad for one image whose size is traced (its
        ``batch`` computes the padded size in Python, which a trace would freeze)."""
        t = self.model.transform
        x = image.permute(2, 0, 1).to(torch.float32)
        # Normalised as [3, H*W, 1] (the same arithmetic): onnxruntime moves the transpose of
        # an int8 graph's first convolution up to the input and would otherwise run the
        # subtraction and division on HWC data with a 3-wide innermost broadcast, several
        # times slower (measured 7.5 against 0.9 ms at 512x683 on 2 threads).
        x = t.normalize(x.reshape(3, -1, 1)).reshape_as(x)
        d = t.size_divisibility
        if d > 1:
            shape = torch._shape_as_tensor(image)
            x = F.pad(x, (0, (-shape[1]) % d, 0, (-shape[0]) % d))
        return x[None]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        shape = torch._shape_as_tensor(image)
        sizes = [(shape[0], shape[1])]
        model = self.model
        features = model.extract_features(self.preprocess(image))
        proposals, _, _ = model.proposal_generator(features, sizes)
        detections, _ = model.roi_heads(features, proposals, sizes)
        det = detections[0]
        return (
            det["boxes"],
            det["scores"],
            det["labels"],
            *(det["densepose"][k] for k in self.densepose_outputs),
        )


def densepose_output_names(model: DensePoseRCNN) -> list[str]:
    """The DensePose predictor's outputs, in the order the predictor returns them."""
    roi = model.roi_heads
    pooler = roi.densepose_pooler
    channels = getattr(roi.densepose_head, "in_channels", None)
    if channels is None:
        channels = next(p for p in roi.densepose_head.parameters() if p.dim() == 4).shape[1]
    x = torch.zeros((1, channels, pooler.resolution, pooler.resolution))
    with torch.no_grad():
        out = roi.densepose_predictor(roi.densepose_head(x))
    return list(out)
