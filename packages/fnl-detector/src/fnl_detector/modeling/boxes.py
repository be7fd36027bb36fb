"""Box helpers of the RPN and the RoI heads that also trace to ONNX.

The exported graph (:mod:`fnl_detector.export`) runs these same functions with the image size
as traced values (a graph with dynamic height and width), where torchvision's helpers would
bake the example's size in as constants.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import clip_boxes_to_image

__all__ = ["clip_boxes", "top_k"]


def clip_boxes(boxes: Tensor, size: tuple) -> Tensor:
    """``torchvision.ops.clip_boxes_to_image``; when tracing, ``size`` (h, w) may hold traced
    0-dim tensors (then the bounds come from the graph's input, not from the example)."""
    if not torch.jit.is_tracing():
        return clip_boxes_to_image(boxes, size)
    h, w = (torch.as_tensor(s).to(boxes.dtype) for s in size)
    x = torch.min(boxes[..., 0::2].clamp(min=0), w)
    y = torch.min(boxes[..., 1::2].clamp(min=0), h)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def top_k(x: Tensor, k: int, dim: int) -> tuple[Tensor, Tensor]:
    """``x.topk(min(k, x.shape[dim]), dim)``; when tracing, the ``min`` is a graph op (a
    dynamic ``TopK`` count) instead of a constant taken from the example."""
    return x.topk(_topk_min(x, k, dim), dim=dim)
