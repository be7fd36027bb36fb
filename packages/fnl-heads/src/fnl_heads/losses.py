"""Chart-based DensePose losses, reproducing detectron2's ``DensePoseChartLoss``.

What they compute is in docs/model.md, 'Losses'.

Given the predictor outputs of N RoIs (``coarse_segm`` N×K×S×S, ``fine_segm``/``u``/``v``
N×C×S×S, C = 25) and their :class:`~fnl_core.structures.DensePoseTargets`, the loss returns

* ``loss_densepose_U`` / ``loss_densepose_V``: ``point_weight`` × Σ smooth-L1 between the GT
  U/V and the prediction of the point's GT chart, bilinearly sampled at the point (§4);
* ``loss_densepose_I``: ``part_weight`` × mean cross-entropy of the bilinearly sampled fine
  logits against the GT chart (§5);
* ``loss_densepose_S``: ``index_weight`` × mean cross-entropy of the coarse logits against the
  dp_masks label map resampled into the proposal frame (§6).

Every step is vectorised over all points and RoIs of the batch (one gather per map, one
``grid_sample`` for all masks). Geometry follows the reference exactly: points map from the GT
box's 256-unit frame into the proposal's S×S grid with "left edge of cell" coordinates, and
only points inside the proposal count. Degenerate batches give zero losses still connected to
the outputs (``output.sum() * 0``, §8) so that backward and DDP see every parameter.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fnl_core.structures import DensePoseTargets

OUTPUT_KEYS = ("coarse_segm", "fine_segm", "u", "v")
LOSS_KEYS = ("loss_densepose_U", "loss_densepose_V", "loss_densepose_I", "loss_densepose_S")
#: UV confidence type → the predictor outputs its Gaussian loss reads besides u and v.
UV_CONFIDENCE_KEYS = {
    "": (),
    "iid_iso": ("sigma_2",),
    "indep_aniso": ("sigma_2", "kappa_u", "kappa_v"),
}
POINT_FRAME = 256.0
"""dp_x / dp_y units per box side in training: 256; the evaluator uses 255 (docs/data_format.md,
'Point coordinates')."""


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """(…, 4) XYXY boxes → XYWH (the reference does all DensePose geometry in XYWH)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack((x0, y0, x1 - x0, y1 - y0), dim=-1)


class PointGrid(NamedTuple):
    """Where each point falls in its proposal's S×S heatmap (docs/model.md, 'Losses').

    Corners are ordered (y_lo, x_lo), (y_lo, x_hi), (y_hi, x_lo), (y_hi, x_hi), as the
    reference's ``w_ylo_xlo``, ``w_ylo_xhi``, ``w_yhi_xlo``, ``w_yhi_xhi``.
    """

    y: Tensor
    """(P, 4) int64 row of each corner."""
    x: Tensor
    """(P, 4) int64 column of each corner."""
    weight: Tensor
    """(P, 4) bilinear weight of each corner."""
    valid: Tensor
    """(P,) bool: the point lies inside the proposal (left/top inclusive, right/bottom not)."""


def _axis(
    coord: Tensor, src0: Tensor, src_size: Tensor, dst0: Tensor, dst_size: Tensor, size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One axis of d2's ``_linear_interpolation_utilities``: (lo, hi, weight of hi, valid)."""
    pos = src0 + coord * src_size / POINT_FRAME
    rel = pos - dst0
    valid = (rel >= 0) & (rel < dst_size)
    g = rel * size / dst_size
    lo = g.floor().clamp(0, size - 1)
    hi = (lo + 1).clamp(max=size - 1)
    alpha = torch.minimum(g, hi) - lo
    return lo.long(), hi.long(), alpha, valid


def point_grid(point_xy: Tensor, gt_xywh: Tensor, proposal_xywh: Tensor, size: int) -> PointGrid:
    """Map points from GT-box 256-unit coordinates into the proposal's ``size``² grid.

    ``point_xy`` is (P, 2); ``gt_xywh`` and ``proposal_xywh`` are (P, 4), the boxes of each
    point's RoI. Reproduces d2 ``BilinearInterpolationHelper.from_matches``: image position
    X = x_G + x̃·w_G/256; valid iff x_P ≤ X < x_P + w_P (and likewise in y); grid coordinate
    g = (X − x_P)·S/w_P; x_lo = clamp(floor g, 0, S−1), x_hi = min(x_lo+1, S−1) and the weight
    of x_hi is min(g, x_hi) − x_lo, so a point in the last cell is not extrapolated.
    """
    x_lo, x_hi, ax, vx = _axis(
        point_xy[:, 0], gt_xywh[:, 0], gt_xywh[:, 2], proposal_xywh[:, 0], proposal_xywh[:, 2], size
    )
    y_lo, y_hi, ay, vy = _axis(
        point_xy[:, 1], gt_xywh[:, 1], gt_xywh[:, 3], proposal_xywh[:, 1], proposal_xywh[:, 3], size
    )
    ys = torch.stack((y_lo, y_lo, y_hi, y_hi), dim=1)
    xs = torch.stack((x_lo, x_hi, x_lo, x_hi), dim=1)
    weight = torch.stack(((1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay), dim=1)
    return PointGrid(y=ys, x=xs, weight=weight, valid=vx & vy)


def sample_at_points(
    z: Tensor, roi: Tensor, grid: PointGrid, channel: Tensor | None = None
) -> Tensor:
    """Bilinearly sample N×C×S×S maps ``z`` at each point of RoI ``roi`` (P,) (one gather).

    With ``channel`` (P,) int: only that channel per point, giving (P,) (d2 reads U/V at the
    point's GT chart). Without: all channels, giving (P, C) (d2 interpolates the fine logits).
    """
    if channel is None:
        corners = z[roi[:, None], :, grid.y, grid.x]  # (P, 4, C)
        return (corners * grid.weight[..., None]).sum(dim=1)
    corners = z[roi[:, None], channel[:, None], grid.y, grid.x]  # (P, 4)
    return (corners * grid.weight).sum(dim=1)


def coarse_segm_targets(masks: Tensor, gt_xywh: Tensor, proposal_xywh: Tensor, size: int) -> Tensor:
    """Resample M×256×256 GT-box-frame label maps onto each proposal's ``size``² grid.

    Reproduces d2 ``resample_data(..., mode="nearest", padding_mode="zeros")`` (docs/model.md,
    'Losses': coarse target):
    output column j samples image x = x_P + (j/S)·w_P (left edge of the cell), the map is
    addressed corner-aligned (column 0 centre on the GT box's left edge, column 255 on its
    right edge), nearest neighbour, 0 outside the map. Returns (M, S, S) int64 labels.
    """
    m = masks.shape[0]
    dtype = gt_xywh.dtype
    x0g, y0g, wg, hg = gt_xywh.unbind(1)
    x0p, y0p, wp, hp = proposal_xywh.unbind(1)
    x0 = 2 * (x0p - x0g) / wg - 1
    y0 = 2 * (y0p - y0g) / hg - 1
    x1 = 2 * (x0p + wp - x0g) / wg - 1
    y1 = 2 * (y0p + hp - y0g) / hg - 1
    steps = torch.arange(size, device=masks.device, dtype=dtype) / size
    gx = steps[None, :] * (x1 - x0)[:, None] + x0[:, None]  # (M, S) per column
    gy = steps[None, :] * (y1 - y0)[:, None] + y0[:, None]  # (M, S) per row
    grid = torch.stack(
        (gx[:, None, :].expand(m, size, size), gy[:, :, None].expand(m, size, size)), dim=3
    )
    sampled = F.grid_sample(
        masks[:, None].to(dtype), grid, mode="nearest", padding_mode="zeros", align_corners=True
    )
    return sampled[:, 0].round().long()


def fake_losses(outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Zero losses connected to every output (d2 ``produce_fake_densepose_losses``)."""
    return {
        "loss_densepose_U": outputs["u"].sum() * 0,
        "loss_densepose_V": outputs["v"].sum() * 0,
        "loss_densepose_I": outputs["fine_segm"].sum() * 0,
        "loss_densepose_S": outputs["coarse_segm"].sum() * 0,
    }


def iid_isotropic_gaussian_uv_loss(
    u: Tensor, v: Tensor, sigma_2: Tensor, u_gt: Tensor, v_gt: Tensor, sigma_lower_bound: float
) -> Tensor:
    """Summed negative log-likelihood of (u_gt, v_gt) under an isotropic Gaussian centred at
    (u, v) with variance ``softplus(sigma_2) + sigma_lower_bound`` (DensePose WC1 models).

    As in DensePose, the constant term is ``0.5 log 2π`` per point (the exact 2-d Gaussian has
    ``log 2π``); it carries no gradient."""
    sigma2 = F.softplus(sigma_2) + sigma_lower_bound
    delta_sq = (u - u_gt) ** 2 + (v - v_gt) ** 2
    return (0.5 * (math.log(2 * math.pi) + 2 * torch.log(sigma2) + delta_sq / sigma2)).sum()


def indep_anisotropic_gaussian_uv_loss(
    u: Tensor,
    v: Tensor,
    sigma_2: Tensor,
    kappa_u: Tensor,
    kappa_v: Tensor,
    u_gt: Tensor,
    v_gt: Tensor,
    sigma_lower_bound: float,
) -> Tensor:
    """Summed negative log-likelihood of (u_gt, v_gt) under a Gaussian with covariance
    ``sigma² I + r rᵀ``, ``r = (kappa_u, kappa_v)`` (DensePose WC2 models; same constant as
    :func:`iid_isotropic_gaussian_uv_loss`)."""
    sigma2 = F.softplus(sigma_2) + sigma_lower_bound
    r_sq = kappa_u**2 + kappa_v**2
    du, dv = u - u_gt, v - v_gt
    delta_sq = du**2 + dv**2
    delta_r_sq = (du * kappa_u + dv * kappa_v) ** 2
    denom2 = sigma2 * (sigma2 + r_sq)
    nll = 0.5 * (
        math.log(2 * math.pi) + torch.log(denom2) + delta_sq / sigma2 - delta_r_sq / denom2
    )
    return nll.sum()


class ChartDensePoseLoss(nn.Module):
    """DensePose chart losses: ``(outputs, targets) -> {loss_densepose_U/V/I/S}``, weighted.

    Args:
        heatmap_size: S, the predictor output size (HEATMAP_SIZE); outputs must be S×S.
        index_weight: weight of the coarse segmentation loss (d2 INDEX_WEIGHTS).
        part_weight: weight of the fine chart-index loss at the points (d2 PART_WEIGHTS).
        point_weight: weight of the summed U and V losses (d2 POINT_REGRESSION_WEIGHTS).
        smooth_l1_beta: beta of the U/V smooth-L1.
        coarse_channels: 2 (fg/bg targets) or 15 (part labels); None takes K from the output.
        uv_confidence: ``""``: smooth-L1 U and V losses; ``"iid_iso"`` / ``"indep_aniso"``:
            one Gaussian negative log-likelihood ``loss_densepose_UV`` (weighted by
            ``point_weight``) that also trains the predictor's ``sigma_2`` (and ``kappa_u``,
            ``kappa_v``), as DensePose's ``DensePoseChartWithConfidenceLoss``.
        uv_confidence_epsilon: lower bound added to ``softplus(sigma_2)``.

    Which RoIs and points count (docs/model.md, 'Losses'):

    * every valid point (inside its proposal) enters the fine-index CE, mean over points;
    * valid points with chart > 0 enter the U/V smooth-L1, summed over points;
    * RoIs with at least one point ("RoIs with DP") enter the coarse CE, mean over RoIs × S²;
      if any of them lacks masks (``has_mask`` false) the coarse loss is the zero dummy;
    * no RoI, no point, or no valid foreground point: all four losses are zero dummies.
    """

    def __init__(
        self,
        *,
        heatmap_size: int,
        index_weight: float = 2.0,
        part_weight: float = 0.3,
        point_weight: float = 0.1,
        smooth_l1_beta: float = 1.0,
        coarse_channels: int | None = None,
        uv_confidence: str = "",
        uv_confidence_epsilon: float = 0.01,
    ) -> None:
        super().__init__()
        if uv_confidence not in UV_CONFIDENCE_KEYS:
            raise ValueError(
                f"uv_confidence must be one of {sorted(UV_CONFIDENCE_KEYS)}, got {uv_confidence!r}"
            )
        self.uv_confidence = uv_confidence
        self.uv_confidence_epsilon = uv_confidence_epsilon
        if heatmap_size <= 0:
            raise ValueError(f"heatmap_size must be positive, got {heatmap_size}")
        if coarse_channels not in (None, 2, 15):
            raise ValueError(f"coarse_channels must be 2, 15 or None, got {coarse_channels}")
        self.heatmap_size = heatmap_size
        self.index_weight = index_weight
        self.part_weight = part_weight
        self.point_weight = point_weight
        self.smooth_l1_beta = smooth_l1_beta
        self.coarse_channels = coarse_channels

    def extra_repr(self) -> str:
        return (
            f"heatmap_size={self.heatmap_size}, index_weight={self.index_weight}, "
            f"part_weight={self.part_weight}, point_weight={self.point_weight}, "
            f"smooth_l1_beta={self.smooth_l1_beta}, coarse_channels={self.coarse_channels}, "
            f"uv_confidence={self.uv_confidence!r}"
        )

    def _check_outputs(self, outputs: dict[str, Tensor]) -> None:
        if "embedding" in outputs and "fine_segm" not in outputs:
            raise KeyError(
                "DensePose chart loss: the predictor gives CSE embeddings, not charts; FnL runs "
                "CSE models for inference only (no CSE training loss)"
            )
        missing = [
            k for k in (*OUTPUT_KEYS, *UV_CONFIDENCE_KEYS[self.uv_confidence]) if k not in outputs
        ]
        if missing:
            raise KeyError(
                f"DensePose chart loss: predictor outputs lack {missing}; "
                f"expected keys {list(OUTPUT_KEYS)}, got {sorted(outputs)}"
            )
        s = self.heatmap_size
        fine = outputs["fine_segm"]
        for key in OUTPUT_KEYS:
            t = outputs[key]
            if t.dim() != 4 or t.shape[0] != fine.shape[0] or tuple(t.shape[2:]) != (s, s):
                raise ValueError(
                    f"DensePose chart loss: outputs[{key!r}] has shape {tuple(t.shape)}, "
                    f"expected N×C×{s}×{s} with N = {fine.shape[0]} (heatmap_size must equal "
                    "the predictor output size)"
                )
        for key in ("u", "v"):
            if outputs[key].shape[1] != fine.shape[1]:
                raise ValueError(
                    f"DensePose chart loss: outputs[{key!r}] has {outputs[key].shape[1]} "
                    f"channels, fine_segm has {fine.shape[1]}; they must match"
                )
        k = outputs["coarse_segm"].shape[1]
        expected = (self.coarse_channels,) if self.coarse_channels else (2, 15)
        if k not in expected:
            raise ValueError(
                f"DensePose chart loss: coarse_segm has {k} channels, expected "
                f"{' or '.join(map(str, expected))} (coarse_channels)"
            )

    def forward(self, outputs: dict[str, Tensor], targets: DensePoseTargets) -> dict[str, Tensor]:
        self._check_outputs(outputs)
        coarse, fine, u, v = (outputs[k] for k in OUTPUT_KEYS)
        n, num_charts = fine.shape[:2]
        device = fine.device
        if targets.proposals.shape[0] != n or targets.gt_boxes.shape[0] != n:
            raise ValueError(
                f"DensePose chart loss: targets describe {targets.proposals.shape[0]} proposals "
                f"and {targets.gt_boxes.shape[0]} GT boxes but the outputs have {n} RoIs"
            )
        point_roi = targets.point_roi.to(device=device, dtype=torch.long)
        if n == 0 or point_roi.numel() == 0:
            return self._fake_losses(outputs)

        geo = torch.promote_types(targets.proposals.dtype, torch.float32)
        proposals = xyxy_to_xywh(targets.proposals.to(device=device, dtype=geo))
        gt_boxes = xyxy_to_xywh(targets.gt_boxes.to(device=device, dtype=geo))
        labels = targets.point_i.to(device).long()
        bad = ((point_roi < 0) | (point_roi >= n)).any() | (
            (labels < 0) | (labels >= num_charts)
        ).any()
        if bool(bad):
            raise ValueError(
                f"DensePose chart loss: point_roi must lie in 0..{n - 1} and point_i in "
                f"0..{num_charts - 1}; got point_roi {point_roi.min().item()}.."
                f"{point_roi.max().item()}, point_i {labels.min().item()}..{labels.max().item()}"
            )
        grid = point_grid(
            targets.point_xy.to(device=device, dtype=geo),
            gt_boxes[point_roi],
            proposals[point_roi],
            self.heatmap_size,
        )
        valid_fg = grid.valid & (labels > 0)
        if not bool(valid_fg.any()):
            return self._fake_losses(outputs)

        losses: dict[str, Tensor] = {}
        if self.uv_confidence:
            est = {
                key: sample_at_points(outputs[key], point_roi, grid, labels)[valid_fg]
                for key in ("u", "v", *UV_CONFIDENCE_KEYS[self.uv_confidence])
            }
            u_gt = targets.point_u.to(device=device, dtype=est["u"].dtype)[valid_fg]
            v_gt = targets.point_v.to(device=device, dtype=est["v"].dtype)[valid_fg]
            eps = self.uv_confidence_epsilon
            if self.uv_confidence == "iid_iso":
                nll = iid_isotropic_gaussian_uv_loss(
                    est["u"], est["v"], est["sigma_2"], u_gt, v_gt, eps
                )
            else:
                nll = indep_anisotropic_gaussian_uv_loss(
                    est["u"],
                    est["v"],
                    est["sigma_2"],
                    est["kappa_u"],
                    est["kappa_v"],
                    u_gt,
                    v_gt,
                    eps,
                )
            losses["loss_densepose_UV"] = nll * self.point_weight
        else:
            for key, pred, gt in (("U", u, targets.point_u), ("V", v, targets.point_v)):
                est = sample_at_points(pred, point_roi, grid, labels)[valid_fg]
                ref = gt.to(device=device, dtype=est.dtype)[valid_fg]
                loss = F.smooth_l1_loss(est, ref, reduction="sum", beta=self.smooth_l1_beta)
                losses[f"loss_densepose_{key}"] = loss * self.point_weight
        fine_est = sample_at_points(fine, point_roi, grid)[grid.valid]
        losses["loss_densepose_I"] = (
            F.cross_entropy(fine_est, labels[grid.valid]) * self.part_weight
        )
        losses["loss_densepose_S"] = self._coarse_loss(
            coarse, targets, point_roi, gt_boxes, proposals
        )
        return losses

    def _fake_losses(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        losses = fake_losses(outputs)
        if self.uv_confidence:
            losses.pop("loss_densepose_U")
            losses.pop("loss_densepose_V")
            losses["loss_densepose_UV"] = (
                sum(outputs[k].sum() for k in ("u", "v", *UV_CONFIDENCE_KEYS[self.uv_confidence]))
                * 0
            )
        return losses

    def _coarse_loss(
        self,
        coarse: Tensor,
        targets: DensePoseTargets,
        point_roi: Tensor,
        gt_boxes: Tensor,
        proposals: Tensor,
    ) -> Tensor:
        """Coarse CE over "RoIs with DP" (those with points), d2 ``SegmentationLoss``."""
        n = coarse.shape[0]
        rois = (torch.bincount(point_roi, minlength=n) > 0).nonzero().squeeze(1)
        has_mask = torch.as_tensor(targets.has_mask, device=coarse.device).bool()
        if not bool(has_mask[rois].all()):
            return coarse.sum() * 0
        with torch.no_grad():
            target = coarse_segm_targets(
                targets.masks.to(coarse.device)[rois],
                gt_boxes[rois],
                proposals[rois],
                self.heatmap_size,
            )
            if coarse.shape[1] == 2:
                target = (target > 0).long()
        return F.cross_entropy(coarse[rois], target) * self.index_weight


__all__ = [
    "LOSS_KEYS",
    "OUTPUT_KEYS",
    "UV_CONFIDENCE_KEYS",
    "ChartDensePoseLoss",
    "PointGrid",
    "coarse_segm_targets",
    "fake_losses",
    "iid_isotropic_gaussian_uv_loss",
    "indep_anisotropic_gaussian_uv_loss",
    "point_grid",
    "sample_at_points",
    "xyxy_to_xywh",
]
