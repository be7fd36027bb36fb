"""`DetectorSpec`: the whole description of a DensePose R-CNN as data.

A spec is JSON: component fields (``backbone``, ``neck``, ``rpn.head``, ``box_head``,
``densepose.head``, ``densepose.predictor``, ``densepose.loss``) are ``{"type": NAME, ...}``
objects resolved through the registry; every other field is a plain setting of the detector
machinery (anchors, RPN, poolers, RoI sampling, test-time filtering). A spec may start from a
preset: ``{"preset": "mobile_parsing_rcnn_b", "test": {"nms_thresh": 0.3}}`` is the preset
deep-merged with the rest. Validation errors carry full dotted paths.

This module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from fnl_core import groups
from fnl_core.spec import Component, SpecModel, deep_merge, parse_override, read_spec_file

#: Version written by this release; older spec files are migrated by :func:`migrate_spec`.
SPEC_VERSION = 1

#: Box-size clamp of the box coder: log(1000 / 16) (detectron2 ``_DEFAULT_SCALE_CLAMP``).
DEFAULT_SCALE_CLAMP = 4.135166556742356


class _Section(SpecModel):
    """A fixed section of the detector spec (unknown keys are errors naming the closest one)."""


class InputSpec(_Section):
    """Preprocessing done inside the model: resize by shortest side, normalise, pad."""

    min_size_train: list[int] = Field(
        default_factory=lambda: [512, 864],
        min_length=1,
        description="training short sides; one is chosen uniformly per image",
    )
    max_size_train: int = Field(1333, gt=0, description="cap on the longest side when training")
    min_size_test: int = Field(800, gt=0, description="shortest side at inference")
    max_size_test: int = Field(1333, gt=0, description="cap on the longest side at inference")
    pixel_mean: list[float] = Field(
        default_factory=lambda: [123.675, 116.28, 103.53],
        min_length=3,
        max_length=3,
        description="subtracted per channel (0..255 scale, in the channel order of `format`)",
    )
    pixel_std: list[float] = Field(
        default_factory=lambda: [58.395, 57.12, 57.375],
        min_length=3,
        max_length=3,
        description="divides each channel after the mean (channel order of `format`)",
    )
    format: Literal["RGB", "BGR"] = Field(
        "RGB",
        description="channel order the backbone expects; images are always given as RGB and "
        "are flipped to BGR inside the model when this says BGR",
    )
    size_divisibility: int | None = Field(
        None, gt=0, description="pad to a multiple of this (default: the neck's)"
    )
    resize: Literal["pil_bilinear_uint8", "interpolate"] = Field(
        "pil_bilinear_uint8",
        description="resize of fnl_detector.Predictor and of the trainer's data path: "
        "'pil_bilinear_uint8' resamples the uint8 image with Pillow's BILINEAR filter, as the "
        "reference implementations do at test and training time (exact same pixels); "
        "'interpolate' resizes the float image with torch (interpolation / antialias below)",
    )
    interpolation: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="torch resize mode (with resize='interpolate')"
    )
    antialias: bool = Field(
        True, description="antialias when shrinking (closest to Pillow's BILINEAR resize)"
    )
    random_flip: Literal["horizontal", "none"] = Field(
        "horizontal",
        description="training augmentation (detectron2 INPUT.RANDOM_FLIP): 'horizontal' mirrors "
        "each image with probability 0.5, DensePose charts following the body's left/right "
        "symmetry; 'none' never flips",
    )

    @field_validator("min_size_train")
    @classmethod
    def _positive_sizes(cls, v: list[int]) -> list[int]:
        if any(s <= 0 for s in v):
            raise ValueError("every size must be > 0")
        return v

    @field_validator("pixel_std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v


class AnchorSpec(_Section):
    """Anchors: sizes per level (one list per RPN level) times aspect ratios (h / w)."""

    sizes: list[list[float]] = Field(
        default_factory=lambda: [[32.0], [64.0], [128.0], [256.0], [512.0]],
        min_length=1,
        description="anchor sizes (square root of the area, in input pixels): one list per RPN "
        "level, in the order of rpn.in_features",
    )
    aspect_ratios: list[list[float]] = Field(
        default_factory=lambda: [[0.5, 1.0, 2.0]],
        min_length=1,
        description="one list for all levels, or one list per level",
    )
    offset: float = Field(0.0, ge=0.0, lt=1.0, description="anchor centre offset, in strides")
    round: bool = Field(
        False, description="round cell anchors to integers (torchvision style); d2/FnL: false"
    )

    @model_validator(mode="after")
    def _check(self) -> AnchorSpec:
        if any(not s or any(x <= 0 for x in s) for s in self.sizes):
            raise ValueError("sizes: every level needs at least one size > 0")
        if any(not r or any(x <= 0 for x in r) for r in self.aspect_ratios):
            raise ValueError("aspect_ratios: every list needs at least one ratio > 0")
        if len(self.aspect_ratios) not in (1, len(self.sizes)):
            raise ValueError(
                f"aspect_ratios: give one list or one per level ({len(self.sizes)}), "
                f"got {len(self.aspect_ratios)}"
            )
        return self

    def ratios_for(self, level: int) -> list[float]:
        return self.aspect_ratios[0 if len(self.aspect_ratios) == 1 else level]

    @property
    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(self.ratios_for(k)) for k, s in enumerate(self.sizes)]


class RPNSpec(_Section):
    """Region proposal network: head, anchor matching and proposal selection."""

    head: Component(groups.RPN_HEADS) = Field(
        default_factory=lambda: {"type": "standard"},
        validate_default=True,
        description="objectness and box deltas per anchor; one module shared by all levels",
    )
    in_features: list[str] = Field(
        default_factory=lambda: ["p2", "p3", "p4", "p5", "p6"],
        min_length=1,
        description="neck levels the RPN runs on (named after their strides)",
    )
    pre_nms_top_n_train: int = Field(2000, gt=0, description="per level")
    pre_nms_top_n_test: int = Field(1000, gt=0, description="per level")
    post_nms_top_n_train: int = Field(1000, gt=0, description="per image, all levels merged")
    post_nms_top_n_test: int = Field(1000, gt=0, description="per image, all levels merged")
    nms_thresh: float = Field(0.7, gt=0.0, le=1.0, description="applied per level")
    min_size: float = Field(0.0, ge=0.0, description="proposals with w or h <= this are dropped")
    batch_size_per_image: int = Field(256, gt=0, description="anchors sampled per image")
    positive_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="largest share of positives among the sampled anchors"
    )
    fg_iou_thresh: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="anchors with IoU >= this with a ground-truth box are positives (so is each "
        "box's best anchor)",
    )
    bg_iou_thresh: float = Field(
        0.3, ge=0.0, le=1.0, description="anchors with IoU < this are negatives; between: ignored"
    )
    bbox_reg_weights: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 1.0, 1.0],
        min_length=4,
        max_length=4,
        description="box-coder weights (x, y, w, h) of the RPN deltas",
    )

    @model_validator(mode="after")
    def _check(self) -> RPNSpec:
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError("bg_iou_thresh must be <= fg_iou_thresh")
        return self


class PoolerSpec(_Section):
    """RoI feature pooling over one or several feature levels.

    With several levels, each RoI is pooled from level
    ``floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to the
    levels given (detectron2's rule).
    """

    in_features: list[str] = Field(
        default_factory=lambda: ["p2", "p3", "p4", "p5"],
        min_length=1,
        description="neck levels to pool from (equal channel counts, strides doubling)",
    )
    resolution: int = Field(7, gt=0, description="each RoI is pooled to resolution x resolution")
    sampling_ratio: int = Field(0, ge=0, description="0 = adaptive")
    aligned: bool = Field(True, description="true: ROIAlignV2 (half-pixel shift)")
    op: Literal["roi_align", "roi_pool"] = Field(
        "roi_align", description="torchvision's RoIAlign or RoIPool"
    )
    canonical_box_size: float = Field(
        224.0, gt=0, description="box size (square root of the area) pooled from canonical_level"
    )
    canonical_level: int = Field(
        4, ge=0, description="level (log2 of the stride) for boxes of canonical_box_size"
    )


class BoxPredictorSpec(_Section):
    """Class logits (foreground classes, then background last) and class-specific deltas."""

    num_classes: int = Field(1, gt=0, description="foreground classes (1: person)")
    bbox_reg_weights: list[float] = Field(
        default_factory=lambda: [10.0, 10.0, 5.0, 5.0],
        min_length=4,
        max_length=4,
        description="box-coder weights (x, y, w, h) of the box deltas",
    )
    cls_agnostic_bbox_reg: bool = Field(
        False, description="one box regression for all classes instead of one per class"
    )


class RoIHeadsSpec(_Section):
    """Sampling of proposals for the box (and DensePose) heads during training."""

    batch_size_per_image: int = Field(
        512, gt=0, description="proposals sampled per image for the heads during training"
    )
    positive_fraction: float = Field(
        0.25, gt=0.0, le=1.0, description="largest share of foreground among them"
    )
    iou_threshold: float = Field(0.5, ge=0.0, le=1.0, description="fg if IoU >= this")
    proposal_append_gt: bool = Field(
        True, description="add the ground-truth boxes to the proposals during training"
    )


class DensePoseSpec(_Section):
    """DensePose branch: pooler, head, predictor and loss."""

    head: Component(groups.DENSEPOSE_HEADS) = Field(
        description="convolutional head on the pooled RoI features"
    )
    predictor: Component(groups.DENSEPOSE_PREDICTORS) = Field(
        default_factory=lambda: {"type": "chart"},
        validate_default=True,
        description="turns the head's features into the DensePose outputs at heatmap_size",
    )
    loss: Component(groups.DENSEPOSE_LOSSES) = Field(
        default_factory=lambda: {"type": "chart"},
        validate_default=True,
        description="DensePose training losses",
    )
    pooler: PoolerSpec = Field(
        default_factory=lambda: PoolerSpec(in_features=["p2"], resolution=32)
    )
    decoder: Component(groups.DENSEPOSE_DECODERS) | None = Field(
        None,
        description="merge the pooler's levels into one map first (detectron2 DECODER_ON); "
        "the pooler then reads that map only; null = pool the levels directly",
    )
    embedder: Component(groups.DENSEPOSE_EMBEDDERS) | None = Field(
        None,
        description="mesh vertex embeddings of a CSE model (predictor 'cse'); per-pixel "
        "closest vertices are found against them",
    )
    heatmap_size: int = Field(
        64, gt=0, description="the predictor's output size S (S x S per detection)"
    )
    iou_threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="train on fg RoIs with IoU > this (strict)"
    )


class TestSpec(_Section):
    """Inference filtering of the box head output."""

    __test__ = False  # not a pytest class

    score_thresh: float = Field(0.05, ge=0.0, le=1.0, description="keep scores > this")
    nms_thresh: float = Field(0.5, gt=0.0, le=1.0, description="IoU of the final box NMS")
    detections_per_image: int = Field(100, gt=0, description="keep at most this many")


def _preset_schema(schema: dict[str, Any]) -> None:
    """Editors see the ``"preset"`` key (with the installed names); with a preset every other
    key is optional, so nothing is marked required."""
    from fnl_core import registry

    schema.setdefault("properties", {})["preset"] = {
        "type": "string",
        "enum": registry.names(groups.PRESETS),
        "description": "start from this preset; the other keys override it (deep merge)",
    }
    schema.pop("required", None)


class DetectorSpec(_Section):
    """A DensePose R-CNN: components from the registry plus the detector settings."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, json_schema_extra=_preset_schema
    )

    spec_version: int = Field(
        SPEC_VERSION, ge=1, le=SPEC_VERSION, description="format version; older specs migrate"
    )
    description: str = Field("", description="free text about the model")
    input: InputSpec = Field(default_factory=InputSpec)
    backbone: Component(groups.BACKBONES) = Field(description="image -> features by stride")
    neck: Component(groups.NECKS) = Field(description="backbone features -> equal-width levels")
    anchors: AnchorSpec = Field(default_factory=AnchorSpec)
    rpn: RPNSpec = Field(default_factory=RPNSpec)
    box_pooler: PoolerSpec = Field(default_factory=PoolerSpec)
    box_head: Component(groups.BOX_HEADS) = Field(
        description="pooled RoI features -> one vector per RoI for the box predictor"
    )
    box_predictor: BoxPredictorSpec = Field(default_factory=BoxPredictorSpec)
    roi_heads: RoIHeadsSpec = Field(default_factory=RoIHeadsSpec)
    densepose: DensePoseSpec
    test: TestSpec = Field(default_factory=TestSpec)
    schedule: Literal["s1x", "s3x"] = Field(
        "s1x",
        description="the reference schedule `fnl train --recipe paper` uses for this model "
        "(batch 16, LR 0.002): s1x = 130k steps, LR x0.1 at 100k and 120k; s3x = 390k steps, "
        "x0.1 at 330k and 370k; --iters stretches it",
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = migrate_spec(resolve_presets(data))
        return data

    @model_validator(mode="after")
    def _check(self) -> DetectorSpec:
        if len(self.anchors.sizes) != len(self.rpn.in_features):
            raise ValueError(
                f"anchors.sizes has {len(self.anchors.sizes)} levels but rpn.in_features has "
                f"{len(self.rpn.in_features)} ({', '.join(self.rpn.in_features)}): give one "
                "list of sizes per RPN level"
            )
        counts = set(self.anchors.num_anchors_per_location)
        if len(counts) != 1:
            raise ValueError(
                "anchors: every level needs the same number of anchors per location (the RPN "
                f"head is shared), got {self.anchors.num_anchors_per_location}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data that validates back to an equal spec."""
        return self.model_dump(mode="json")


def migrate_spec(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older spec dict to :data:`SPEC_VERSION` (drops ``$``-keys: the editor-only
    ``$schema`` and the ``$provenance`` record that fnl writes into run files)."""
    data = {k: v for k, v in data.items() if not k.startswith("$")}
    version = data.get("spec_version", SPEC_VERSION)
    if isinstance(version, int) and version > SPEC_VERSION:
        raise ValueError(
            f"spec_version {version} is newer than this fnl-detector understands "
            f"({SPEC_VERSION}); upgrade fnl-detector"
        )
    return data


def resolve_presets(data: dict[str, Any], _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Expand a ``"preset"`` key: the preset's spec deep-merged with the other keys."""
    if "preset" not in data:
        return data
    from fnl_detector.presets import get_preset

    name = data["preset"]
    if not isinstance(name, str):
        raise ValueError(f"preset: expected a preset name, got {type(name).__name__}")
    if name in _seen:
        raise ValueError(f"preset: cycle {' -> '.join((*_seen, name))}")
    base = resolve_presets(get_preset(name).load(), (*_seen, name))
    rest = {k: v for k, v in data.items() if k != "preset"}
    return deep_merge(base, rest)


def load_spec(
    spec: DetectorSpec | dict[str, Any] | str | Path, overrides: list[str] | None = None
) -> DetectorSpec:
    """A validated :class:`DetectorSpec` from a spec, a dict, a file path or a preset name.

    ``overrides`` are ``dotted.key=value`` strings (values parsed as JSON when possible), applied
    in order after the preset and file contents.
    """
    if isinstance(spec, DetectorSpec):
        data = spec.to_dict()
    elif isinstance(spec, dict):
        data = dict(spec)
    elif isinstance(spec, (str, Path)):
        data = _read_spec_or_preset(spec)
    else:
        raise TypeError(
            f"expected a DetectorSpec, a dict, a spec file path or a preset name, got "
            f"{type(spec).__name__}"
        )
    data = resolve_presets(data)
    for text in overrides or []:
        data = deep_merge(data, parse_override(text))
    return DetectorSpec.model_validate(data)


def _read_spec_or_preset(spec: str | Path) -> dict[str, Any]:
    from fnl_core import registry

    path = Path(spec)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.is_file():
        return read_spec_file(path)
    name = str(spec)
    try:
        registry.get(groups.PRESETS, name)
    except registry.UnknownComponentError as exc:
        raise FileNotFoundError(f"{name!r} is not a spec file, and {exc}") from None
    return {"preset": name}


__all__ = [
    "SPEC_VERSION",
    "AnchorSpec",
    "BoxPredictorSpec",
    "DensePoseSpec",
    "DetectorSpec",
    "InputSpec",
    "PoolerSpec",
    "RPNSpec",
    "RoIHeadsSpec",
    "TestSpec",
    "load_spec",
    "migrate_spec",
    "resolve_presets",
]
