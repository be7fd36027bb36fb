"""Chart DensePose losses against a slow per-point / per-pixel reference and hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fnl_core.structures import DensePoseTargets
from fnl_heads.losses import ChartDensePoseLoss, coarse_segm_targets, point_grid

S = 16
C = 25


def random_targets(
    counts: list[int], seed: int, *, jitter: float = 0.2, has_mask: list[bool] | None = None
) -> DensePoseTargets:
    """RoIs with random GT boxes, proposals jittered around them (so some points fall outside),
    ``counts[n]`` random points in RoI n and blocky random coarse label maps."""
    g = torch.Generator().manual_seed(seed)
    n = len(counts)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = 20 + torch.rand(n, 2, generator=g) * 80
    gt = torch.cat((xy, xy + wh), dim=1)
    proposals = gt + (torch.rand(n, 4, generator=g) - 0.5) * 2 * jitter * wh.repeat(1, 2)
    point_roi = torch.repeat_interleave(torch.arange(n), torch.tensor(counts, dtype=torch.long))
    p = point_roi.numel()
    blocks = torch.randint(0, 15, (n, 8, 8), generator=g)
    masks = blocks.repeat_interleave(32, dim=1).repeat_interleave(32, dim=2)
    return DensePoseTargets(
        proposals=proposals,
        gt_boxes=gt,
        point_roi=point_roi,
        point_xy=torch.rand(p, 2, generator=g) * 256,
        point_i=torch.randint(1, C, (p,), generator=g),
        point_u=torch.rand(p, generator=g),
        point_v=torch.rand(p, generator=g),
        masks=masks,
        has_mask=torch.tensor(has_mask if has_mask is not None else [True] * n),
    )


def random_outputs(n: int, seed: int, k: int = 15) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "coarse_segm": torch.randn(n, k, S, S, generator=g).requires_grad_(),
        "fine_segm": torch.randn(n, C, S, S, generator=g).requires_grad_(),
        "u": torch.rand(n, C, S, S, generator=g).requires_grad_(),
        "v": torch.rand(n, C, S, S, generator=g).requires_grad_(),
    }


def make_loss(**kwargs) -> ChartDensePoseLoss:
    return ChartDensePoseLoss(heatmap_size=S, **kwargs)


def _xywh(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(c) for c in box)
    return x0, y0, x1 - x0, y1 - y0


def _corners(p: float, box0: float, box_size: float) -> tuple[int, int, float]:
    """One axis of the point mapping (docs/model.md, 'Losses'), written out with Python floats."""
    g = (p - box0) * S / box_size
    lo = min(max(math.floor(g), 0), S - 1)
    hi = min(lo + 1, S - 1)
    return lo, hi, min(g, hi) - lo


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + math.log(float(np.exp(x - m).sum()))


def slow_reference(
    outputs: dict[str, torch.Tensor],
    t: DensePoseTargets,
    *,
    wi: float = 0.3,
    wp: float = 0.1,
    ws: float = 2.0,
    beta: float = 1.0,
) -> dict[str, float] | None:
    """The losses of docs/model.md one point and one pixel at a time; None when they are fake."""
    coarse, fine, u, v = (
        outputs[k].detach().double().numpy() for k in ("coarse_segm", "fine_segm", "u", "v")
    )
    k_coarse = coarse.shape[1]
    ce_points, su, sv, num_fg = [], 0.0, 0.0, 0
    for p in range(t.point_roi.numel()):
        r = int(t.point_roi[p])
        xg, yg, wg, hg = _xywh(t.gt_boxes[r])
        xp, yp, wpp, hpp = _xywh(t.proposals[r])
        x = xg + float(t.point_xy[p, 0]) * wg / 256
        y = yg + float(t.point_xy[p, 1]) * hg / 256
        if not (xp <= x < xp + wpp and yp <= y < yp + hpp):
            continue
        xl, xh, ax = _corners(x, xp, wpp)
        yl, yh, ay = _corners(y, yp, hpp)
        corners = [
            (yl, xl, (1 - ax) * (1 - ay)),
            (yl, xh, ax * (1 - ay)),
            (yh, xl, (1 - ax) * ay),
            (yh, xh, ax * ay),
        ]
        label = int(t.point_i[p])
        logits = sum(w * fine[r, :, yy, xx] for yy, xx, w in corners)
        ce_points.append(_logsumexp(logits) - logits[label])
        if label > 0:
            num_fg += 1
            for pred, gt, acc in ((u, t.point_u, "u"), (v, t.point_v, "v")):
                d = abs(sum(w * pred[r, label, yy, xx] for yy, xx, w in corners) - float(gt[p]))
                term = 0.5 * d * d / beta if d < beta else d - 0.5 * beta
                if acc == "u":
                    su += term
                else:
                    sv += term
    if num_fg == 0:
        return None
    losses = {
        "loss_densepose_U": wp * su,
        "loss_densepose_V": wp * sv,
        "loss_densepose_I": wi * sum(ce_points) / len(ce_points),
    }
    rois = sorted(set(t.point_roi.tolist()))
    if not all(bool(t.has_mask[r]) for r in rois):
        losses["loss_densepose_S"] = 0.0
        return losses
    masks = t.masks.numpy()
    ce_pixels = []
    for r in rois:
        xg, yg, wg, hg = _xywh(t.gt_boxes[r])
        xp, yp, wpp, hpp = _xywh(t.proposals[r])
        for i in range(S):
            for j in range(S):
                col = round((xp + j / S * wpp - xg) * 255 / wg)
                row = round((yp + i / S * hpp - yg) * 255 / hg)
                label = int(masks[r, row, col]) if 0 <= row <= 255 and 0 <= col <= 255 else 0
                if k_coarse == 2:
                    label = int(label > 0)
                ce_pixels.append(_logsumexp(coarse[r, :, i, j]) - coarse[r, label, i, j])
    losses["loss_densepose_S"] = ws * sum(ce_pixels) / len(ce_pixels)
    return losses


def assert_losses_close(got: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key


# --------------------------------------------------------------------------------------------
# Geometry conventions (hand-computed)


def test_point_grid_follows_the_256_left_edge_convention():
    box = torch.tensor([[10.0, 20.0, 128.0, 64.0]])  # XYWH, GT == proposal
    pts = torch.tensor([[64.0, 96.0], [255.0, 0.0], [256.0, 10.0], [0.0, 256.0]])
    grid = point_grid(pts, box.expand(4, 4), box.expand(4, 4), 4)
    # x̃ = 64 → X = 10 + 64·128/256 = 42 → g = 32·4/128 = 1; ỹ = 96 → Y = 44 → g = 1.5.
    assert grid.x[0].tolist() == [1, 2, 1, 2]
    assert grid.y[0].tolist() == [1, 1, 2, 2]
    assert grid.weight[0].tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0])
    # x̃ = 255 → g = 3.984: the last cell is not extrapolated (x_lo = x_hi = 3, weight on x_lo).
    assert grid.x[1].tolist() == [3, 3, 3, 3]
    assert grid.weight[1].sum().item() == pytest.approx(1.0)
    assert grid.weight[1].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    # x̃ = 256 (right edge) and ỹ = 256 (bottom edge) lie outside the proposal.
    assert grid.valid.tolist() == [True, True, False, False]


def test_point_grid_maps_from_gt_box_into_the_proposal():
    gt = torch.tensor([[0.0, 0.0, 256.0, 256.0]])
    proposal = torch.tensor([[100.0, 50.0, 100.0, 100.0]])
    pts = torch.tensor([[150.0, 75.0], [99.0, 75.0], [199.0, 149.5]])
    grid = point_grid(pts, gt.expand(3, 4), proposal.expand(3, 4), 10)
    assert grid.valid.tolist() == [True, False, True]
    # X = 150 → g = 50·10/100 = 5; Y = 75 → g = 2.5.
    assert (grid.x[0].tolist(), grid.y[0].tolist()) == ([5, 6, 5, 6], [2, 2, 3, 3])
    assert grid.weight[0].tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0])


def test_coarse_targets_are_corner_aligned_nearest_with_zero_outside():
    rows = torch.arange(256)[:, None] // 64
    cols = torch.arange(256)[None, :] // 64
    masks = (1 + 3 * rows + cols)[None]  # labels 1..13, mask index == image pixel
    gt = torch.tensor([[0.0, 0.0, 255.0, 255.0]])
    proposal = torch.tensor([[-8.0, 0.0, 128.0, 256.0]])
    target = coarse_segm_targets(masks, gt, proposal, 4)[0]
    # Columns sample x = -8, 24, 56, 88 (left cell edges): -8 is outside the GT box → 0.
    # Rows sample y = 0, 64, 128, 192.
    expected = torch.tensor(
        [[0] + [1 + 3 * r + c for c in (0, 0, 1)] for r in range(4)], dtype=torch.long
    )
    assert torch.equal(target, expected)


def test_coarse_targets_near_the_right_edge_use_255_spacing():
    masks = (1 + torch.arange(256) % 14).expand(256, 256)[None]  # label of column c
    gt = torch.tensor([[0.0, 0.0, 255.0, 255.0]])
    proposal = torch.tensor([[250.3, 0.0, 8.0, 255.0]])
    target = coarse_segm_targets(masks, gt, proposal, 4)[0]
    # x = 250.3, 252.3, 254.3, 256.3 → columns 250, 252, 254 and "outside" (0). A 256-pixel
    # spacing (align_corners=False) would read columns 251, 253, 255 instead.
    assert target[0].tolist() == [13, 1, 3, 0]
    assert bool((target == target[0]).all())


# --------------------------------------------------------------------------------------------
# Agreement with the slow reference


@pytest.mark.parametrize("k", [15, 2])
def test_matches_slow_reference(k):
    counts = [30, 0, 25, 40, 12]
    targets = random_targets(counts, seed=k)
    outputs = random_outputs(len(counts), seed=k + 1, k=k)
    expected = slow_reference(outputs, targets)
    got = make_loss()(outputs, targets)
    assert expected is not None
    assert_losses_close(got, expected)
    # The data exercises the inside-proposal test: some points are dropped, most are kept.
    t = targets
    grid = point_grid(
        t.point_xy,
        _xywh_t(t.gt_boxes)[t.point_roi],
        _xywh_t(t.proposals)[t.point_roi],
        S,
    )
    assert 0 < int((~grid.valid).sum()) < len(grid.valid) // 2


def _xywh_t(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), dim=1)


def test_matches_slow_reference_with_other_weights_and_beta():
    counts = [20, 20, 20]
    targets = random_targets(counts, seed=7)
    outputs = random_outputs(3, seed=8)
    with torch.no_grad():
        outputs["u"].mul_(4.0)  # residuals beyond beta exercise the linear branch
    expected = slow_reference(outputs, targets, wi=1.0, wp=0.01, ws=5.0, beta=0.5)
    got = make_loss(index_weight=5.0, part_weight=1.0, point_weight=0.01, smooth_l1_beta=0.5)(
        outputs, targets
    )
    assert_losses_close(got, expected)


def test_uv_losses_are_summed_and_segmentation_losses_averaged():
    targets = random_targets([15, 15], seed=3)
    outputs = random_outputs(2, seed=4)
    twice_t = DensePoseTargets(
        proposals=targets.proposals.repeat(2, 1),
        gt_boxes=targets.gt_boxes.repeat(2, 1),
        point_roi=torch.cat((targets.point_roi, targets.point_roi + 2)),
        point_xy=targets.point_xy.repeat(2, 1),
        point_i=targets.point_i.repeat(2),
        point_u=targets.point_u.repeat(2),
        point_v=targets.point_v.repeat(2),
        masks=targets.masks.repeat(2, 1, 1),
        has_mask=targets.has_mask.repeat(2),
    )
    twice_o = {k: torch.cat((o, o)) for k, o in outputs.items()}
    loss = make_loss()
    once, twice = loss(outputs, targets), loss(twice_o, twice_t)
    for key in ("loss_densepose_U", "loss_densepose_V"):
        assert twice[key].item() == pytest.approx(2 * once[key].item(), rel=1e-5)
    for key in ("loss_densepose_I", "loss_densepose_S"):
        assert twice[key].item() == pytest.approx(once[key].item(), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Perfect predictions


def perfect_case(k: int) -> tuple[DensePoseTargets, dict[str, torch.Tensor], torch.Tensor]:
    """Proposal == GT box, one coarse label per RoI and distinct charts within each RoI, so
    constant-per-channel maps equal every target; returns also each RoI's coarse label."""
    n, per_roi = 3, 10
    targets = random_targets([per_roi] * n, seed=11, jitter=0.0)
    g = torch.Generator().manual_seed(12)
    charts = torch.stack([torch.randperm(24, generator=g)[:per_roi] + 1 for _ in range(n)])
    targets.point_i = charts.flatten()
    labels = torch.tensor([3, 0, 14])
    targets.masks = labels[:, None, None].expand(n, 256, 256).clone()
    u = torch.zeros(n, C, S, S)
    v = torch.zeros(n, C, S, S)
    fine = torch.zeros(n, C, S, S)
    for r in range(n):
        for p in range(per_roi):
            idx = r * per_roi + p
            u[r, charts[r, p]] = targets.point_u[idx]
            v[r, charts[r, p]] = targets.point_v[idx]
    coarse_labels = labels if k == 15 else (labels > 0).long()
    coarse = torch.zeros(n, k, S, S)
    coarse[torch.arange(n), coarse_labels] = 30.0
    outputs = {"coarse_segm": coarse, "fine_segm": fine, "u": u, "v": v}
    return targets, outputs, coarse_labels


@pytest.mark.parametrize("k", [15, 2])
def test_perfect_predictions_give_minimal_losses(k):
    targets, outputs, _ = perfect_case(k)
    loss = make_loss()
    got = loss(outputs, targets)
    assert got["loss_densepose_U"].item() == pytest.approx(0.0, abs=1e-10)
    assert got["loss_densepose_V"].item() == pytest.approx(0.0, abs=1e-10)
    assert got["loss_densepose_S"].item() == pytest.approx(0.0, abs=1e-8)
    # Uniform fine logits: CE = log 25 per point (the confident case has its own test).
    assert got["loss_densepose_I"].item() == pytest.approx(0.3 * math.log(C), rel=1e-6)

    worse = dict(outputs)
    worse["u"] = outputs["u"] + 0.2
    assert loss(worse, targets)["loss_densepose_U"].item() > 1e-3
    wrong = dict(outputs)
    wrong["coarse_segm"] = outputs["coarse_segm"].roll(1, dims=1)
    assert loss(wrong, targets)["loss_densepose_S"].item() > 10.0


def test_confident_right_chart_gives_near_zero_fine_loss():
    targets = random_targets([1, 1, 1, 1], seed=21, jitter=0.0)
    outputs = random_outputs(4, seed=22)
    fine = torch.zeros(4, C, S, S)
    fine[torch.arange(4), targets.point_i] = 30.0
    outputs["fine_segm"] = fine
    loss = make_loss()
    assert loss(outputs, targets)["loss_densepose_I"].item() == pytest.approx(0.0, abs=1e-8)
    outputs["fine_segm"] = fine.roll(1, dims=1)
    assert loss(outputs, targets)["loss_densepose_I"].item() > 5.0


# --------------------------------------------------------------------------------------------
# Degenerate batches and masks


def _check_fake(losses: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
    assert set(losses) == {
        "loss_densepose_U",
        "loss_densepose_V",
        "loss_densepose_I",
        "loss_densepose_S",
    }
    for value in losses.values():
        assert value.item() == 0.0 and torch.isfinite(value)
        assert value.requires_grad
    sum(losses.values()).backward()
    for key, out in outputs.items():
        assert out.grad is not None, key
        assert torch.count_nonzero(out.grad) == 0


def test_no_points_gives_graph_connected_zero_losses():
    targets = random_targets([0, 0], seed=5)
    outputs = random_outputs(2, seed=6)
    _check_fake(make_loss()(outputs, targets), outputs)


def test_no_rois_gives_graph_connected_zero_losses():
    targets = random_targets([], seed=5)
    assert targets.point_roi.numel() == 0 and targets.masks.shape[0] == 0
    outputs = random_outputs(0, seed=6)
    _check_fake(make_loss()(outputs, targets), outputs)


def test_points_all_outside_proposals_make_every_loss_fake():
    targets = random_targets([10, 10], seed=9, jitter=0.0)
    targets.point_xy = targets.point_xy * 0.1 + 258.0  # beyond the right/bottom box edges
    outputs = random_outputs(2, seed=10)
    _check_fake(make_loss()(outputs, targets), outputs)


def test_missing_mask_on_a_roi_with_points_drops_only_the_coarse_loss():
    counts = [10, 12, 8]
    full_t = random_targets(counts, seed=13)
    outputs = random_outputs(3, seed=14)
    loss = make_loss()
    full = loss(outputs, full_t)
    missing_t = random_targets(counts, seed=13, has_mask=[True, False, True])
    missing = loss(outputs, missing_t)
    assert full["loss_densepose_S"].item() > 0
    assert missing["loss_densepose_S"].item() == 0.0
    assert missing["loss_densepose_S"].requires_grad
    for key in ("loss_densepose_U", "loss_densepose_V", "loss_densepose_I"):
        assert missing[key].item() == pytest.approx(full[key].item(), rel=1e-6)
    assert_losses_close(missing, slow_reference(outputs, missing_t))


def test_rois_without_points_are_ignored_by_the_coarse_loss():
    outputs = random_outputs(3, seed=16)
    with_empty = random_targets([10, 0, 8], seed=15, has_mask=[True, False, True])
    got = make_loss()(outputs, with_empty)
    assert got["loss_densepose_S"].item() > 0  # the maskless RoI has no points: no dummy
    assert_losses_close(got, slow_reference(outputs, with_empty))
    only = DensePoseTargets(
        proposals=with_empty.proposals[[0, 2]],
        gt_boxes=with_empty.gt_boxes[[0, 2]],
        point_roi=torch.where(with_empty.point_roi == 2, 1, 0),
        point_xy=with_empty.point_xy,
        point_i=with_empty.point_i,
        point_u=with_empty.point_u,
        point_v=with_empty.point_v,
        masks=with_empty.masks[[0, 2]],
        has_mask=with_empty.has_mask[[0, 2]],
    )
    sub_outputs = {k: o[[0, 2]] for k, o in outputs.items()}
    expected = make_loss()(sub_outputs, only)
    for key, value in expected.items():
        assert got[key].item() == pytest.approx(value.item(), rel=1e-6), key


def test_gradient_reaches_all_four_outputs():
    targets = random_targets([20, 15], seed=17)
    outputs = random_outputs(2, seed=18)
    losses = make_loss()(outputs, targets)
    sum(losses.values()).backward()
    for key, out in outputs.items():
        assert out.grad is not None and torch.count_nonzero(out.grad) > 0, key
    # U/V gradients only touch the GT chart channels of annotated points.
    touched = outputs["u"].grad.abs().sum(dim=(0, 2, 3)) > 0
    assert set(torch.nonzero(touched).flatten().tolist()) <= set(targets.point_i.tolist())


# --------------------------------------------------------------------------------------------
# Input validation


def test_heatmap_size_must_match_outputs():
    targets = random_targets([5], seed=19)
    outputs = random_outputs(1, seed=20)
    with pytest.raises(ValueError, match="heatmap_size"):
        ChartDensePoseLoss(heatmap_size=S * 2)(outputs, targets)


def test_coarse_channels_must_match_outputs():
    targets = random_targets([5], seed=19)
    outputs = random_outputs(1, seed=20, k=15)
    with pytest.raises(ValueError, match="coarse_channels"):
        make_loss(coarse_channels=2)(outputs, targets)


def test_targets_must_describe_the_output_rois():
    targets = random_targets([5, 5], seed=19)
    outputs = random_outputs(3, seed=20)
    with pytest.raises(ValueError, match="3 RoIs"):
        make_loss()(outputs, targets)


def test_missing_output_key_is_named():
    targets = random_targets([5], seed=19)
    outputs = random_outputs(1, seed=20)
    del outputs["v"]
    with pytest.raises(KeyError, match="'v'"):
        make_loss()(outputs, targets)


def test_chart_ids_out_of_range_are_rejected():
    targets = random_targets([5], seed=19)
    targets.point_i[0] = 25
    with pytest.raises(ValueError, match="point_i"):
        make_loss()(random_outputs(1, seed=20), targets)
