"""RoI pooling over one or several feature levels, on ``torchvision.ops.roi_align``/``roi_pool``.

torchvision's ``MultiScaleRoIAlign`` only does ``aligned=False`` and its own level mapping;
detectron2's models need ``aligned`` either way, any sampling ratio and the level rule
``floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to the
levels pooled from.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from fnl_detector.modeling.parallel import (
    ATEN_GRAIN_SIZE,
    parallel_workers,
    run_pieces,
    split_evenly,
)

#: Pool in parallel only if a piece small enough to stay out of OpenMP (see
#: :mod:`fnl_detector.modeling.parallel`) still holds this many RoIs. Measured at 512 px on
#: 2 cores: pieces of 2 RoIs (ResNet-50 FPN, 256 channels) still pay off, 1.45 -> 1.30 s.
MIN_ROIS_PER_PIECE = 1


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """List of per-image XYXY boxes -> Tensor[N, 5] of (image index, x0, y0, x1, y1)."""
    if not boxes:
        return torch.zeros((0, 5))
    idx = torch.cat([torch.full_like(b[:, :1], k) for k, b in enumerate(boxes)])
    return torch.cat([idx, torch.cat(list(boxes))], dim=1)


def assign_levels(
    boxes: Tensor, min_level: int, max_level: int, canonical_box_size: float, canonical_level: int
) -> Tensor:
    """Pyramid level (absolute, e.g. 2..5) of each XYXY box, detectron2's rule."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    levels = torch.floor(canonical_level + torch.log2(area.sqrt() / canonical_box_size + 1e-8))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64)


class RoIPooler(nn.Module):
    """Pools ``resolution`` x ``resolution`` features for boxes from named feature levels.

    The pooled tensor has the memory format of the feature maps (channels_last in, channels_last
    out), so the convolutions after it need no layout conversion. At inference on CPU, groups of
    RoIs are pooled side by side on torch's threads (see :mod:`fnl_detector.modeling.parallel`).
    """

    def __init__(
        self,
        *,
        in_features: Sequence[str],
        strides: Sequence[int],
        resolution: int,
        sampling_ratio: int = 0,
        aligned: bool = True,
        op: str = "roi_align",
        canonical_box_size: float = 224.0,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if len(in_features) != len(strides) or not in_features:
            raise ValueError("need one stride per input feature")
        levels = [math.log2(s) for s in strides]
        if any(lv != int(lv) for lv in levels) or any(
            b - a != 1 for a, b in itertools.pairwise(levels)
        ):
            raise ValueError(
                f"pooled features must have power-of-two strides that double from one level to "
                f"the next, got {dict(zip(in_features, strides))}"
            )
        if op not in ("roi_align", "roi_pool"):
            raise ValueError(f"op must be roi_align or roi_pool, got {op!r}")
        self.in_features = list(in_features)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.resolution = int(resolution)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.op = op
        self.canonical_box_size = float(canonical_box_size)
        self.canonical_level = int(canonical_level)

    def _pool(self, x: Tensor, rois: Tensor, scale: float) -> Tensor:
        size = (self.resolution, self.resolution)
        if self.op == "roi_pool":
            return roi_pool(x, rois, size, scale)
        return roi_align(x, rois, size, scale, self.sampling_ratio, self.aligned)

    def _pool_traced(self, xs: list[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        """The pooling of :meth:`forward` as an ONNX graph with a dynamic RoI count: one
        ``RoiAlign`` per level on that level's RoIs, concatenated in level order, then the
        rows gathered back into RoI order (a 1-D scatter builds the inverse permutation;
        scattering the pooled [N, C, R, R] rows themselves, as the pieces of the eager path
        do, is several times slower in onnxruntime)."""
        if len(xs) == 1:
            return self._pool(xs[0], rois, self.scales[0])
        idx = [torch.where(levels == k)[0] for k in range(len(xs))]
        pooled = torch.cat([self._pool(x, rois[i], s) for x, i, s in zip(xs, idx, self.scales)])
        order = torch.cat(idx)
        rank = torch.arange(order.shape[0], device=order.device)
        inverse = torch.zeros_like(order).scatter(0, order, rank)
        return pooled[inverse]

    def forward(
        self,
        features: dict[str, Tensor],
        boxes: Sequence[Tensor],
        memory_format: torch.memory_format | None = None,
    ) -> Tensor:
        """Pooled features [R, C, S, S] of the boxes of all images, in ``memory_format``
        (default: the layout of the maps)."""
        xs = [features[f] for f in self.in_features]
        rois = boxes_to_rois(boxes).to(dtype=xs[0].dtype, device=xs[0].device)
        if len(xs) == 1:
            levels = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
        else:
            levels = (
                assign_levels(
                    rois[:, 1:],
                    self.min_level,
                    self.max_level,
                    self.canonical_box_size,
                    self.canonical_level,
                )
                - self.min_level
            )
        if torch.jit.is_tracing():
            return self._pool_traced(xs, rois, levels)
        if memory_format is None:
            channels_last = xs[0].is_contiguous(memory_format=torch.channels_last)
            memory_format = torch.channels_last if channels_last else torch.contiguous_format
        fmt = memory_format
        workers = parallel_workers(rois.device)
        per_piece = ATEN_GRAIN_SIZE // (xs[0].shape[1] * self.resolution**2)
        if workers > 1 and per_piece >= MIN_ROIS_PER_PIECE:
            # The CPU kernels read NCHW; convert a channels_last map once, not once per piece.
            xs = [x.contiguous() for x in xs]
        else:
            workers, per_piece = 1, rois.shape[0]
        pieces = []
        for k in range(len(xs)):
            idx = (levels == k).nonzero().flatten()
            for part in split_evenly(idx.numel(), -(-idx.numel() // max(per_piece, 1))):
                pieces.append((xs[k], rois[idx[part]], self.scales[k], idx[part]))
        if len(xs) == 1 and len(pieces) <= 1:
            return self._pool(xs[0], rois, self.scales[0]).contiguous(memory_format=fmt)
        shape = (rois.shape[0], xs[0].shape[1], self.resolution, self.resolution)
        out = torch.empty(shape, dtype=xs[0].dtype, device=xs[0].device, memory_format=fmt)

        def pool(x: Tensor, piece_rois: Tensor, scale: float, where: Tensor) -> None:
            # Each piece writes its rows of ``out`` (disjoint rows, no cat or re-ordering
            # gather); the copy also changes the layout. Pieces are small (see above).
            out.index_copy_(0, where, self._pool(x, piece_rois, scale))

        run_pieces(pool, pieces, workers, costs=[float(len(p[1])) for p in pieces])
        return out
