"""Spec -> model: builds every registered component and wires the detector machinery."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnl_core.spec import ShapeSpec
from fnl_detector.spec import DetectorSpec, PoolerSpec, load_spec

if TYPE_CHECKING:
    from fnl_detector.modeling.detector import DensePoseRCNN


class SpecBuildError(ValueError):
    """The spec is valid on its own but its parts do not fit together."""


def _shapes_of(path: str, module: Any) -> dict[str, Any]:
    fn = getattr(module, "output_shape", None)
    if not callable(fn):
        raise SpecBuildError(f"{path}: {type(module).__name__} has no output_shape() method")
    return dict(fn())


def _level_channels(path: str, shapes: dict[str, Any], names: list[str]) -> tuple[int, list[int]]:
    missing = [n for n in names if n not in shapes]
    if missing:
        raise SpecBuildError(
            f"{path}: the neck has no feature(s) {missing}; it outputs {list(shapes)}"
        )
    channels = {shapes[n].channels for n in names}
    if len(channels) != 1:
        raise SpecBuildError(
            f"{path}: features {names} have different channel counts "
            f"{[shapes[n].channels for n in names]}; a shared head needs equal channels"
        )
    return channels.pop(), [shapes[n].stride for n in names]


def _pooler(path: str, spec: PoolerSpec, shapes: dict[str, Any]) -> tuple[Any, int]:
    from fnl_detector.modeling.poolers import RoIPooler

    channels, strides = _level_channels(f"{path}.in_features", shapes, spec.in_features)
    try:
        pooler = RoIPooler(
            in_features=spec.in_features,
            strides=strides,
            resolution=spec.resolution,
            sampling_ratio=spec.sampling_ratio,
            aligned=spec.aligned,
            op=spec.op,
            canonical_box_size=spec.canonical_box_size,
            canonical_level=spec.canonical_level,
        )
    except ValueError as exc:
        raise SpecBuildError(f"{path}: {exc}") from exc
    return pooler, channels


def build_detector(spec: DetectorSpec | dict[str, Any] | str | Path) -> DensePoseRCNN:
    """Build a :class:`~fnl_detector.modeling.detector.DensePoseRCNN` from a spec, a spec dict,
    a spec file or a preset name (see :func:`fnl_detector.spec.load_spec`)."""
    import torch

    from fnl_detector.modeling.anchors import AnchorGenerator
    from fnl_detector.modeling.detector import DensePoseRCNN
    from fnl_detector.modeling.roi_heads import BoxPredictor, RoIHeads
    from fnl_detector.modeling.rpn import RPN
    from fnl_detector.modeling.transform import ImageTransform

    if not isinstance(spec, DetectorSpec):
        spec = load_spec(spec)

    backbone = spec.backbone.build()
    neck = spec.neck.build(input_shape=_shapes_of("backbone", backbone))
    shapes = _shapes_of("neck", neck)

    rpn_channels, rpn_strides = _level_channels("rpn.in_features", shapes, spec.rpn.in_features)
    anchors = AnchorGenerator(
        sizes=spec.anchors.sizes,
        aspect_ratios=spec.anchors.aspect_ratios,
        strides=rpn_strides,
        offset=spec.anchors.offset,
        round_anchors=spec.anchors.round,
    )
    rpn = RPN(
        rpn_head=spec.rpn.head.build(
            in_channels=rpn_channels, num_anchors=anchors.num_anchors_per_location[0]
        ),
        anchor_generator=anchors,
        in_features=spec.rpn.in_features,
        pre_nms_top_n=(spec.rpn.pre_nms_top_n_train, spec.rpn.pre_nms_top_n_test),
        post_nms_top_n=(spec.rpn.post_nms_top_n_train, spec.rpn.post_nms_top_n_test),
        nms_thresh=spec.rpn.nms_thresh,
        min_size=spec.rpn.min_size,
        batch_size_per_image=spec.rpn.batch_size_per_image,
        positive_fraction=spec.rpn.positive_fraction,
        fg_iou_thresh=spec.rpn.fg_iou_thresh,
        bg_iou_thresh=spec.rpn.bg_iou_thresh,
        bbox_reg_weights=spec.rpn.bbox_reg_weights,
    )

    box_pooler, box_channels = _pooler("box_pooler", spec.box_pooler, shapes)
    box_head = spec.box_head.build(in_channels=box_channels, resolution=spec.box_pooler.resolution)
    out_features = getattr(box_head, "out_features", None)
    if not isinstance(out_features, int):
        raise SpecBuildError(f"box_head: {type(box_head).__name__} has no int out_features")
    box_predictor = BoxPredictor(
        out_features, spec.box_predictor.num_classes, spec.box_predictor.cls_agnostic_bbox_reg
    )

    dp = spec.densepose
    dp_decoder = None
    if dp.decoder is None:
        dp_pooler, dp_channels = _pooler("densepose.pooler", dp.pooler, shapes)
    else:
        levels = dp.pooler.in_features
        _level_channels("densepose.pooler.in_features", shapes, levels)
        dp_decoder = dp.decoder.build(input_shape={n: shapes[n] for n in levels})
        decoded = ShapeSpec(channels=dp_decoder.out_channels, stride=dp_decoder.common_stride)
        dp_pooler, dp_channels = _pooler(
            "densepose.pooler",
            dp.pooler.model_copy(update={"in_features": levels[:1]}),
            {levels[0]: decoded},
        )
    dp_head = dp.head.build(in_channels=dp_channels)
    head_channels = getattr(dp_head, "out_channels", None)
    if not isinstance(head_channels, int):
        raise SpecBuildError(f"densepose.head: {type(dp_head).__name__} has no int out_channels")
    dp_predictor = dp.predictor.build(in_channels=head_channels, heatmap_size=dp.heatmap_size)
    dp_loss = dp.loss.build(heatmap_size=dp.heatmap_size)
    dp_embedder = None
    if dp.embedder is not None:
        embed_size = getattr(dp.predictor, "embed_size", None)
        if not isinstance(embed_size, int):
            raise SpecBuildError(
                f"densepose.embedder: the predictor {dp.predictor.type!r} gives no embeddings; "
                "a mesh embedder needs an embedding predictor (densepose.predictor.type 'cse')"
            )
        dp_embedder = dp.embedder.build(embed_size=embed_size)

    roi_heads = RoIHeads(
        box_pooler=box_pooler,
        box_head=box_head,
        box_predictor=box_predictor,
        densepose_pooler=dp_pooler,
        densepose_head=dp_head,
        densepose_predictor=dp_predictor,
        densepose_loss=dp_loss,
        decoder=dp_decoder,
        embedder=dp_embedder,
        bbox_reg_weights=spec.box_predictor.bbox_reg_weights,
        batch_size_per_image=spec.roi_heads.batch_size_per_image,
        positive_fraction=spec.roi_heads.positive_fraction,
        iou_threshold=spec.roi_heads.iou_threshold,
        proposal_append_gt=spec.roi_heads.proposal_append_gt,
        densepose_iou_threshold=dp.iou_threshold,
        score_thresh=spec.test.score_thresh,
        nms_thresh=spec.test.nms_thresh,
        detections_per_image=spec.test.detections_per_image,
    )
    with torch.no_grad():
        probe = dp_predictor(
            torch.zeros(1, head_channels, dp.pooler.resolution, dp.pooler.resolution)
        )
    for key, value in probe.items():
        if value.shape[-1] != dp.heatmap_size or value.shape[-2] != dp.heatmap_size:
            raise SpecBuildError(
                f"densepose.heatmap_size is {dp.heatmap_size} but the predictor's {key!r} output "
                f"is {tuple(value.shape[-2:])} for {dp.pooler.resolution}x"
                f"{dp.pooler.resolution} RoIs (densepose.pooler.resolution)"
            )
    roi_heads.densepose_output_shapes = {k: tuple(v.shape[1:]) for k, v in probe.items()}

    divisibility = spec.input.size_divisibility or int(getattr(neck, "size_divisibility", 1) or 1)
    transform = ImageTransform(
        min_size_train=spec.input.min_size_train,
        max_size_train=spec.input.max_size_train,
        min_size_test=spec.input.min_size_test,
        max_size_test=spec.input.max_size_test,
        pixel_mean=spec.input.pixel_mean,
        pixel_std=spec.input.pixel_std,
        input_format=spec.input.format,
        size_divisibility=divisibility,
        interpolation=spec.input.interpolation,
        antialias=spec.input.antialias,
    )
    model = DensePoseRCNN(
        transform=transform,
        backbone=backbone,
        neck=neck,
        proposal_generator=rpn,
        roi_heads=roi_heads,
    )
    model.spec = spec
    return model
