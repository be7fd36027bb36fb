"""Packing DensePose annotations of the selected RoIs into :class:`DensePoseTargets`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from fnl_core.structures import DensePoseAnnotation, DensePoseTargets

MASK_SIZE = 256


def build_densepose_targets(
    proposals: Tensor, gt_boxes: Tensor, annotations: Sequence[DensePoseAnnotation]
) -> DensePoseTargets:
    """Targets for N RoIs: ``proposals`` and ``gt_boxes`` are N x 4 XYXY (network-input frame),
    ``annotations[n]`` the DensePose data of RoI n's matched GT (box-relative, 256 units)."""
    if not (len(proposals) == len(gt_boxes) == len(annotations)):
        raise ValueError(
            f"need one GT box and one annotation per RoI, got {len(proposals)} RoIs, "
            f"{len(gt_boxes)} GT boxes and {len(annotations)} annotations"
        )
    device = proposals.device
    counts, xs, ys, ii, us, vs = [], [], [], [], [], []
    for k, ann in enumerate(annotations):
        arrays = [
            np.asarray(a, dtype=np.float64).reshape(-1) for a in (ann.x, ann.y, ann.i, ann.u, ann.v)
        ]
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ValueError(
                f"DensePose annotation of RoI {k}: x, y, i, u, v must have the same length, got "
                f"{[len(a) for a in arrays]}"
            )
        counts.append(n)
        for store, a in zip((xs, ys, ii, us, vs), arrays):
            store.append(a)

    def cat(parts: list[np.ndarray], dtype: torch.dtype) -> Tensor:
        data = np.concatenate(parts) if parts else np.zeros(0)
        return torch.as_tensor(data).to(device=device, dtype=dtype)

    point_roi = torch.repeat_interleave(
        torch.arange(len(annotations), device=device),
        torch.as_tensor(counts, dtype=torch.int64, device=device),
    )
    masks = torch.zeros((len(annotations), MASK_SIZE, MASK_SIZE), dtype=torch.int64)
    has_mask = torch.zeros(len(annotations), dtype=torch.bool)
    for k, ann in enumerate(annotations):
        if ann.masks is None:
            continue
        m = np.asarray(ann.masks)
        if m.shape != (MASK_SIZE, MASK_SIZE):
            raise ValueError(
                f"DensePose annotation of RoI {k}: masks must be a {MASK_SIZE}x{MASK_SIZE} label "
                f"map, got shape {m.shape}"
            )
        masks[k] = torch.from_numpy(m.astype(np.int64))
        has_mask[k] = True
    return DensePoseTargets(
        proposals=proposals.detach(),
        gt_boxes=gt_boxes.detach().to(proposals.dtype),
        point_roi=point_roi,
        point_xy=torch.stack([cat(xs, torch.float32), cat(ys, torch.float32)], dim=1),
        point_i=cat(ii, torch.int64),
        point_u=cat(us, torch.float32),
        point_v=cat(vs, torch.float32),
        masks=masks.to(device),
        has_mask=has_mask.to(device),
    )
