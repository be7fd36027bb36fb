"""The assembled detector on stand-in components: training, inference, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import fake_annotation, fake_batch
from detector_standins import tiny_spec

from fnl_detector import build_detector, load_spec
from fnl_detector.modeling.densepose_targets import build_densepose_targets
from fnl_detector.modeling.roi_heads import RoIHeads
from fnl_detector.modeling.transform import ImageTransform, resized_shape

LOSS_KEYS = {
    "loss_rpn_cls",
    "loss_rpn_loc",
    "loss_box_cls",
    "loss_box_reg",
    "loss_densepose_I",
    "loss_densepose_U",
    "loss_densepose_V",
    "loss_densepose_S",
}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return build_detector(load_spec(tiny_spec(), [f"{k}={v}" for k, v in overrides.items()]))


def test_training_step_gives_finite_losses_and_gradients(tiny_components):
    model = tiny_model().train()
    images, targets = fake_batch()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone", "neck", "proposal_generator", "roi_heads"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert any(
        g.abs().sum() > 0 for g in (p.grad for p in model.roi_heads.densepose_head.parameters())
    )


def test_densepose_rois_need_iou_above_threshold_and_annotation(tiny_components):
    model = tiny_model().train()
    images, targets = fake_batch()
    model(images, targets)
    dp_targets = model.roi_heads.densepose_loss.calls[-1]
    from torchvision.ops import box_iou

    iou = box_iou(dp_targets.proposals, dp_targets.gt_boxes).diagonal()
    assert len(iou) > 0 and (iou > 0.7).all()
    # image 1's second person has no DensePose data; image 1's first has no masks
    assert (~dp_targets.has_mask).any() and dp_targets.has_mask.any()
    assert dp_targets.masks.shape[1:] == (256, 256) and dp_targets.masks.dtype == torch.int64
    assert dp_targets.point_roi.max() < len(dp_targets.proposals)
    model2 = tiny_model(**{"densepose.iou_threshold": 0.99}).train()
    losses = model2(images, targets)  # only the appended GT boxes qualify
    assert torch.isfinite(sum(losses.values()))


def test_no_densepose_annotation_gives_zero_connected_losses(tiny_components):
    model = tiny_model().train()
    images, targets = fake_batch()
    for t in targets:
        t["densepose"] = [None] * len(t["boxes"])
    losses = model(images, targets)
    for k in "IUVS":
        assert losses[f"loss_densepose_{k}"].item() == 0.0
        assert losses[f"loss_densepose_{k}"].requires_grad
    sum(losses.values()).backward()


def test_image_without_people_trains(tiny_components):
    model = tiny_model().train()
    images, targets = fake_batch()
    targets[1] = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "densepose": [],
    }
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_inference_outputs_in_original_frame(tiny_components):
    model = tiny_model(**{"test.score_thresh": 0.0, "test.detections_per_image": 7}).eval()
    images, _ = fake_batch(sizes=((100, 150), (256, 200)))
    with torch.inference_mode():
        out = model(images)
    for pred, img in zip(out, images):
        h, w = img.shape[-2:]
        k = len(pred["boxes"])
        assert 0 < k <= 7
        assert pred["scores"].shape == (k,) and pred["labels"].tolist() == [1] * k
        assert (pred["boxes"][:, 0::2] <= w).all() and (pred["boxes"][:, 1::2] <= h).all()
        assert (pred["boxes"][:, 2:] > pred["boxes"][:, :2]).all()
        assert torch.all(pred["scores"][:-1] >= pred["scores"][1:])
        dp = pred["densepose"]
        assert dp["coarse_segm"].shape == (k, 15, 16, 16)
        assert dp["fine_segm"].shape == dp["u"].shape == dp["v"].shape == (k, 25, 16, 16)


def test_no_detection_inference_does_not_call_the_head(tiny_components):
    model = tiny_model(**{"test.score_thresh": 1.0}).eval()
    called = []
    model.roi_heads.densepose_head.register_forward_hook(lambda *a: called.append(1))
    images, _ = fake_batch()
    with torch.inference_mode():
        out = model(images)
    assert not called
    for pred in out:
        assert pred["boxes"].shape == (0, 4) and pred["scores"].shape == (0,)
        assert pred["densepose"]["coarse_segm"].shape == (0, 15, 16, 16)
        assert pred["densepose"]["u"].shape == (0, 25, 16, 16)


def test_inference_with_zero_proposals(tiny_components, monkeypatch):
    """Random weights can leave no proposal (all decoded boxes empty): no crash, no head call."""
    model = tiny_model().eval()
    rpn_forward = model.proposal_generator.forward

    def no_proposals(*args, **kwargs):
        proposals, scores, losses = rpn_forward(*args, **kwargs)
        return [p[:0] for p in proposals], [s[:0] for s in scores], losses

    monkeypatch.setattr(model.proposal_generator, "forward", no_proposals)
    images, _ = fake_batch()
    with torch.inference_mode():
        out = model(images)
    for pred in out:
        assert pred["boxes"].shape == (0, 4) and pred["labels"].shape == (0,)
        assert pred["densepose"]["fine_segm"].shape == (0, 25, 16, 16)


def test_eval_and_train_mode_errors(tiny_components):
    model = tiny_model().train()
    images, targets = fake_batch()
    with pytest.raises(ValueError, match="targets"):
        model(images)
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        model(images, targets[:1])


def test_rpn_selection_is_per_level_then_per_image(tiny_components):
    model = tiny_model(**{"rpn.pre_nms_top_n_test": 2, "rpn.post_nms_top_n_test": 3}).eval()
    rpn = model.proposal_generator
    anchors = [
        torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 11, 11]]),
        torch.tensor([[40.0, 40, 60, 60], [0, 0, 60, 60]]),
    ]
    logits = [torch.tensor([[5.0, 1.0, 4.0]]), torch.tensor([[3.0, 2.0]])]
    deltas = [torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)]
    boxes, scores = rpn.select_proposals(anchors, logits, deltas, [(100, 100)])
    # level 0 keeps its top 2 (5 and 4), NMS drops the 4 (IoU 0.83 > 0.7); level 1 keeps both
    assert scores[0].tolist() == [5.0, 3.0, 2.0]
    assert boxes[0][0].tolist() == [0, 0, 10, 10]


def test_box_inference_decodes_and_filters():
    heads = RoIHeads.__new__(RoIHeads)
    torch.nn.Module.__init__(heads)
    from torchvision.models.detection._utils import BoxCoder

    heads.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0), math.log(1000 / 16))
    heads.num_classes, heads.score_thresh, heads.nms_thresh = 1, 0.5, 0.5
    heads.detections_per_image = 10
    props = torch.tensor([[10.0, 10, 30, 50], [12, 10, 30, 50], [60, 60, 80, 80]])
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # scores .88, .73, .5
    deltas = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    det = heads.predict_boxes([props], logits, deltas, [(100, 100)])[0]
    assert det["proposal_index"].tolist() == [0]  # 1 overlaps (NMS), 2 has score 0.5 (not >)
    assert det["boxes"][0].tolist() == pytest.approx([12.0, 10, 32, 50])


def test_transform_resizes_pads_and_filters_targets():
    t = ImageTransform(
        min_size_train=[64],
        max_size_train=100,
        min_size_test=32,
        max_size_test=1000,
        pixel_mean=[1.0, 2.0, 3.0],
        pixel_std=[1.0, 1.0, 2.0],
        size_divisibility=32,
        input_format="BGR",
    )
    assert resized_shape(512, 683, 512, 1333) == (512, 683)
    assert resized_shape(100, 400, 64, 100) == (25, 100)
    img = torch.zeros(3, 40, 80)
    img[0] = 10.0
    t.train()
    targets = [
        {
            "boxes": torch.tensor([[0.0, 0, 40, 20], [70, 30, 90, 50], [1, 1, 2, 2]]),
            "labels": torch.ones(3, dtype=torch.int64),
            "iscrowd": torch.tensor([0, 0, 1]),
            "densepose": ["a", "b", "c"],
        }
    ]
    x, sizes, out = t([img], targets)
    assert sizes == [(50, 100)] and x.shape == (1, 3, 64, 128)
    assert out[0]["densepose"] == ["a", "b"]  # the crowd box is dropped
    assert out[0]["boxes"].tolist() == [[0, 0, 50, 25], [87.5, 37.5, 100, 50]]
    assert x[0, 2, 0, 0].item() == pytest.approx((10 - 3) / 2)  # BGR: R is the last channel
    assert x[0, :, 60, 120].abs().sum() == 0  # zero padding
    t.eval()
    assert t([img])[1] == [(32, 64)]


def test_densepose_targets_pack_points():
    rng = np.random.default_rng(0)
    anns = [fake_annotation(rng, points=3), fake_annotation(rng, points=2, masks=False)]
    props = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]])
    t = build_densepose_targets(props, props + 1, anns)
    assert t.point_roi.tolist() == [0, 0, 0, 1, 1]
    assert t.point_xy.shape == (5, 2) and t.point_i.dtype == torch.int64
    assert torch.allclose(t.point_u[:3], torch.as_tensor(anns[0].u, dtype=torch.float32))
    assert t.has_mask.tolist() == [True, False] and t.masks[1].abs().sum() == 0
    with pytest.raises(ValueError, match="one GT box and one annotation"):
        build_densepose_targets(props, props, anns[:1])
