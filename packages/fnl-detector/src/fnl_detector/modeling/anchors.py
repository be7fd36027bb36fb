"""Anchors as detectron2 makes them: unrounded cell anchors, grid offset 0 by default.

torchvision's ``AnchorGenerator`` rounds the cell anchors to integers and centres them
differently; the reference models were trained with detectron2's anchors, so this is a small
generator of our own. Order of the anchors of one level: grid row, then column, then cell anchor
(sizes outer, aspect ratios inner), i.e. the flattening of an RPN head output
``B x A x H x W`` permuted to ``B x H x W x A``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def cell_anchors(
    sizes: Sequence[float], aspect_ratios: Sequence[float], *, round_: bool = False
) -> Tensor:
    """XYXY anchors centred on 0: for each size, each ratio r = h / w with area size²."""
    out = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    anchors = torch.tensor(out, dtype=torch.float32)
    return anchors.round() if round_ else anchors


class AnchorGenerator(nn.Module):
    """Anchors for each feature level (same for every image of a batch)."""

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        strides: Sequence[int],
        offset: float = 0.0,
        round_anchors: bool = False,
    ) -> None:
        super().__init__()
        if len(aspect_ratios) == 1:
            aspect_ratios = list(aspect_ratios) * len(sizes)
        if not (len(sizes) == len(aspect_ratios) == len(strides)):
            raise ValueError(
                f"need one entry per level: {len(sizes)} sizes, {len(aspect_ratios)} "
                f"aspect-ratio lists, {len(strides)} strides"
            )
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        self.num_levels = len(sizes)
        for k, (s, r) in enumerate(zip(sizes, aspect_ratios)):
            self.register_buffer(
                f"cell_anchors_{k}", cell_anchors(s, r, round_=round_anchors), False
            )
        self._cache: dict[tuple, list[Tensor]] = {}

    @property
    def cell_anchors(self) -> list[Tensor]:
        return [getattr(self, f"cell_anchors_{k}") for k in range(self.num_levels)]

    @property
    def num_anchors_per_location(self) -> list[int]:
        return [a.shape[0] for a in self.cell_anchors]

    def grid_anchors(self, grid_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Per level, Tensor[H * W * A, 4] for the given (H, W) feature sizes (traced values
        when tracing: the anchors of an ONNX graph follow its input size; no cache then)."""
        tracing = torch.jit.is_tracing()
        device = self.cell_anchors_0.device
        key = (tuple(tuple(g) for g in grid_sizes), str(device), torch.is_inference_mode_enabled())
        cached = None if tracing else self._cache.get(key)
        if cached is not None:
            return cached
        out = []
        for (h, w), stride, base in zip(grid_sizes, self.strides, self.cell_anchors):
            # start + i * stride in float64 then float32: what torch.arange(start, end, step)
            # computes on the CPU, with the count (w, h) as an operand that can be traced.
            start = self.offset * stride
            xs = torch.arange(w, dtype=torch.float64, device=device) * stride + start
            ys = torch.arange(h, dtype=torch.float64, device=device) * stride + start
            sy, sx = torch.meshgrid(ys.float(), xs.float(), indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        if tracing:
            return out
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = out
        return out

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return self.grid_anchors([tuple(f.shape[-2:]) for f in features])
