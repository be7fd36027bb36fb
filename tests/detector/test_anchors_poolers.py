"""Anchors (unrounded, offset 0, d2 order) and the multi-level RoI pooler."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import roi_align

from fnl_detector.modeling.anchors import AnchorGenerator, cell_anchors
from fnl_detector.modeling.poolers import RoIPooler, assign_levels


def test_cell_anchors_are_not_rounded():
    a = cell_anchors([32], [0.5, 1.0, 2.0])
    w = math.sqrt(32**2 / 0.5)
    expected = torch.tensor(
        [[-w / 2, -w / 4, w / 2, w / 4], [-16, -16, 16, 16], [-w / 4, -w / 2, w / 4, w / 2]]
    )
    assert torch.allclose(a, expected)
    assert a[0, 0].item() == pytest.approx(-22.627416610717773)
    assert torch.equal(cell_anchors([32], [0.5], round_=True), torch.tensor([[-23.0, -11, 23, 11]]))


def test_grid_order_is_row_column_anchor():
    gen = AnchorGenerator(sizes=[[32], [64]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4, 8])
    feats = [torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)]
    p2, p3 = gen(feats)
    assert p2.shape == (2 * 3 * 3, 4) and p3.shape == (2 * 3, 4)
    centres = (p2[:, :2] + p2[:, 2:]) / 2
    # (row 0, col 1, anchor 2) is index (0 * 3 + 1) * 3 + 2 = 5: centre (4, 0)
    assert centres[5].tolist() == [4.0, 0.0]
    # (row 1, col 0, anchor 0) is index 9: centre (0, 4)
    assert centres[9].tolist() == [0.0, 4.0]
    assert torch.equal(p2[1], torch.tensor([-16.0, -16, 16, 16]))
    offset = AnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[4], offset=0.5)
    assert offset([torch.zeros(1, 1, 1, 1)])[0][0].tolist() == [-14.0, -14.0, 18.0, 18.0]


def test_level_assignment_follows_detectron2():
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],
            [0, 0, 112, 112],
            [0, 0, 224, 224],
            [0, 0, 447, 447],
            [0, 0, 448, 448],
            [0, 0, 2000, 2000],
        ],
        dtype=torch.float32,
    )
    assert assign_levels(boxes, 2, 5, 224, 4).tolist() == [2, 3, 4, 4, 5, 5]


def test_pooler_single_and_multi_level():
    torch.manual_seed(0)
    feats = {
        f"p{k}": torch.randn(2, 4, 64 // 2 ** (k - 2), 64 // 2 ** (k - 2)) for k in (2, 3, 4, 5)
    }
    boxes = [
        torch.tensor([[3.0, 4.0, 40.0, 50.0]]),
        torch.tensor([[0.0, 0.0, 250.0, 250.0], [5.0, 5, 9, 9]]),
    ]
    single = RoIPooler(
        in_features=["p2"], strides=[4], resolution=7, sampling_ratio=0, aligned=True
    )
    out = single(feats, boxes)
    rois = torch.tensor([[0, 3.0, 4, 40, 50], [1, 0, 0, 250, 250], [1, 5, 5, 9, 9]])
    assert torch.equal(out, roi_align(feats["p2"], rois, (7, 7), 0.25, 0, True))
    multi = RoIPooler(
        in_features=["p2", "p3", "p4", "p5"],
        strides=[4, 8, 16, 32],
        resolution=7,
        sampling_ratio=2,
        aligned=False,
    )
    out = multi(feats, boxes)
    assert out.shape == (3, 4, 7, 7)
    big = roi_align(feats["p4"], rois[1:2], (7, 7), 1 / 16, 2, False)  # sqrt(area) 250: P4
    assert torch.equal(out[1:2], big)
    pool = RoIPooler(in_features=["p2"], strides=[4], resolution=5, op="roi_pool")
    assert pool(feats, boxes).shape == (3, 4, 5, 5)
    with pytest.raises(ValueError, match="double"):
        RoIPooler(in_features=["p2", "p4"], strides=[4, 16], resolution=7)
