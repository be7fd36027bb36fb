"""The backbones of the paper (Table 2 ablation in Mobile Parsing R-CNN (A), and Mobile B's).

Pure data, no torch: the detector's presets (``mobile_parsing_rcnn_a_<timm name>``) are made
from :data:`PAPER_BACKBONES` with :meth:`PaperBackbone.backbone_spec`; Model B uses
:data:`MOBILE_B_BACKBONE`.

Feature choice (docs/paper.md, Table 2 and 'Counting parameters'): Model A feeds its FPN with
the **outputs** of stages s1, s2, s3, s5 of the EfficientNet-like ``blocks`` (strides
4/8/16/32; later stages pruned); MobileNetV3-Small already reaches stride 4 in its first stage,
so s0, s1, s2, s4; ResNet-50 uses timm's feature indices 1-4 (``layer1``-``layer4``). Model B
feeds its BiFPN with timm's "expansion" features at indices 1-4.

``backbone_params`` were measured (``tests/backbones/test_paper.py`` checks them): parameters of
the backbone as built from ``backbone_spec()`` with frozen BatchNorm (BN values are buffers).
Adding the FPN-256 and the A heads (:attr:`PaperBackbone.detector_params_a`) reproduces
every printed ``paper_params_m``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Parameters of Model A outside backbone and FPN: RPN 593 935 + conv box head 1 255 430 +
#: ASPP DensePose head 4 590 080 + predictor 368 730 (docs/paper.md, 'Counting parameters').
A_HEADS_PARAMS = 593_935 + 1_255_430 + 4_590_080 + 368_730

#: Parameters of Model B outside the backbone: BiFPN-64 147 918 + RPN 37 903 + conv box head
#: 92 678 + ASPP DensePose head 287 360 + predictor 92 250 (docs/paper.md, 'Counting parameters').
B_REST_PARAMS = 147_918 + 37_903 + 92_678 + 287_360 + 92_250


def fpn256_params(in_channels: tuple[int, ...]) -> int:
    """Parameters of the 256-channel FPN: per level conv1×1 (in→256) + conv3×3 (256→256)."""
    c = 256
    return sum(ch * c + c for ch in in_channels) + len(in_channels) * (9 * c * c + c)


@dataclass(frozen=True)
class PaperBackbone:
    """One backbone of the paper, as one of its models uses it, built with timm 1.0.31."""

    paper_name: str
    timm_name: str
    top1: float
    """ImageNet top-1 printed in the paper."""
    paper_params_m: float
    """#params of the whole detector with this backbone, as printed (M)."""
    fpn_channels: tuple[int, int, int, int]
    """Channels of the neck inputs at strides 4, 8, 16, 32."""
    backbone_params: int
    """Measured backbone parameters at the paper setting (frozen BN)."""
    stages: tuple[int, ...] | None = None
    out_indices: tuple[int, ...] | None = None
    feature_location: str = ""
    freeze_at: int | None = None
    paper_code_name: str = ""
    """Name used by the paper's code when it differs from today's timm name."""
    note: str = ""
    strides: tuple[int, int, int, int] = field(default=(4, 8, 16, 32))

    def backbone_spec(self, *, pretrained: bool | str = False) -> dict[str, Any]:
        """Spec fragment of the ``timm`` backbone with the paper's settings (frozen BN)."""
        spec: dict[str, Any] = {"type": "timm", "model_name": self.timm_name}
        if self.stages is not None:
            spec["stages"] = list(self.stages)
        else:
            spec["out_indices"] = list(self.out_indices or (1, 2, 3, 4))
        if self.feature_location:
            spec["feature_location"] = self.feature_location
        spec["norm"] = "frozen_bn"
        if self.freeze_at is not None:
            spec["freeze_at"] = self.freeze_at
        spec["pretrained"] = pretrained
        return spec

    @property
    def detector_params_a(self) -> int:
        """Measured backbone + FPN-256 + A heads: Table 2's #params column, exactly."""
        return self.backbone_params + fpn256_params(self.fpn_channels) + A_HEADS_PARAMS


def _a(
    paper_name: str,
    timm_name: str,
    top1: float,
    params_m: float,
    channels: tuple[int, int, int, int],
    backbone_params: int,
    **kw: Any,
) -> PaperBackbone:
    """A Table 2 row (Model A): stage outputs s1, s2, s3, s5 unless given; v1's freezing
    (detectron2 ``FREEZE_AT=2`` applied to timm blocks: stem + stages 0, 1, 2)."""
    kw.setdefault("stages", (1, 2, 3, 5))
    kw.setdefault("freeze_at", 3)
    return PaperBackbone(paper_name, timm_name, top1, params_m, channels, backbone_params, **kw)


_S0124 = (0, 1, 2, 4)
_SMALL = "first stage already has stride 4: stages s0, s1, s2, s4"

PAPER_BACKBONES: tuple[PaperBackbone, ...] = (
    _a(
        "ResNet-50",
        "resnet50",
        77.15,
        33.61,
        (256, 512, 1024, 2048),
        23_454_912,
        stages=None,
        out_indices=(1, 2, 3, 4),
        freeze_at=1,
        paper_code_name="R-50 (MSRA, detectron2)",
        note="paper: detectron2's MSRA R-50 (BGR caffe weights, stride in the 1×1 conv); "
        "timm resnet50 has the same parameter count (stride in the 3×3 conv)",
    ),
    _a(
        "EfficientNet-B3",
        "tf_efficientnet_b3",
        81.636,
        16.03,
        (32, 48, 96, 232),
        6_751_214,
    ),
    _a(
        "EfficientNet-EdgeTPU-L",
        "tf_efficientnet_el",
        80.534,
        17.89,
        (40, 56, 112, 232),
        8_604_152,
    ),
    _a("MixNet-XL", "mixnet_xl", 80.120, 19.10, (48, 64, 128, 320), 9_787_432),
    _a(
        "EfficientNet-B2",
        "efficientnet_b2",
        79.688,
        13.68,
        (24, 48, 88, 208),
        4_416_838,
    ),
    _a("MixNet-L", "mixnet_l", 78.976, 14.62, (40, 56, 104, 264), 5_332_476),
    _a(
        "EfficientNet-EdgeTPU-M",
        "tf_efficientnet_em",
        78.742,
        14.57,
        (32, 48, 96, 192),
        5_304_928,
    ),
    _a(
        "EfficientNet-B1",
        "efficientnet_b1",
        78.692,
        13.03,
        (24, 40, 80, 192),
        3_774_272,
    ),
    _a(
        "CondConv-EfficientNet-B0",
        "tf_efficientnet_cc_b0_4e",
        77.304,
        18.32,
        (24, 40, 80, 192),
        9_068_168,
        note="CondConv with 4 experts: expert weights and routing layers count as parameters",
    ),
    _a(
        "EfficientNet-EdgeTPU-S",
        "tf_efficientnet_es",
        77.264,
        13.12,
        (32, 48, 96, 192),
        3_860_192,
    ),
    _a("MixNet-M", "mixnet_m", 77.256, 12.39, (32, 40, 80, 200), 3_128_470),
    _a(
        "EfficientNet-B0",
        "efficientnet_b0",
        76.912,
        12.10,
        (24, 40, 80, 192),
        2_843_948,
    ),
    _a("MixNet-S", "mixnet_s", 75.988, 11.52, (24, 40, 80, 200), 2_258_214),
    _a(
        "MobileNetV3-Large-1.0",
        "tf_mobilenetv3_large_100",
        75.516,
        12.04,
        (24, 40, 80, 160),
        2_793_952,
    ),
    _a(
        "MnasNet-A1",
        "semnasnet_100",
        75.448,
        10.94,
        (24, 40, 80, 160),
        1_693_510,
        paper_code_name="mnasnet_a1",
        note="timm renamed mnasnet_a1 to semnasnet_100 (the old name is a deprecated alias)",
    ),
    _a("FBNet-C", "fbnetc_100", 75.124, 11.49, (24, 32, 64, 184), 2_242_784),
    _a(
        "MnasNet-B1",
        "mnasnet_100",
        74.658,
        11.31,
        (24, 40, 80, 192),
        2_054_600,
        paper_code_name="mnasnet_b1",
        note="timm renamed mnasnet_b1 to mnasnet_100 (the old name is a deprecated alias)",
    ),
    _a(
        "Single-Path NAS",
        "spnasnet_100",
        74.084,
        11.35,
        (24, 40, 80, 192),
        2_091_320,
        note="the backbone of Mobile Parsing R-CNN (A) and (B)",
    ),
    _a(
        "MobileNetV3-Large-0.75",
        "tf_mobilenetv3_large_075",
        73.442,
        10.92,
        (24, 32, 64, 120),
        1_684_160,
    ),
    _a(
        "MobileNetV3-Large-1.0 (minimal)",
        "tf_mobilenetv3_large_minimal_100",
        72.244,
        10.48,
        (24, 40, 80, 160),
        1_235_208,
    ),
    _a(
        "MobileNetV3-Small-1.0",
        "tf_mobilenetv3_small_100",
        67.918,
        10.07,
        (16, 24, 40, 96),
        859_600,
        stages=_S0124,
        note=_SMALL,
    ),
    _a(
        "MobileNetV3-Small-0.75",
        "tf_mobilenetv3_small_075",
        65.718,
        9.74,
        (16, 24, 32, 72),
        532_696,
        stages=_S0124,
        note=_SMALL,
    ),
    _a(
        "MobileNetV3-Small-1.0 (minimal)",
        "tf_mobilenetv3_small_minimal_100",
        62.898,
        9.58,
        (16, 24, 40, 96),
        361_480,
        stages=_S0124,
        note=_SMALL,
    ),
)

#: Mobile Parsing R-CNN (B)'s backbone: spnasnet_100 expansion features for the BiFPN.
MOBILE_B_BACKBONE = PaperBackbone(
    "Single-Path NAS (B, expansion features)",
    "spnasnet_100",
    74.084,
    3.35,
    (72, 120, 288, 1152),
    2_691_512,
    out_indices=(1, 2, 3, 4),
    feature_location="expansion",
    note="BiFPN inputs: input of the last conv_pwl per stride; all 7 stages kept; "
    "freezing by the reference rule (stem, blocks 0 and 1)",
)


def paper_backbone(name: str) -> PaperBackbone:
    """Look a Table 2 backbone up by paper name, timm name or the paper code's name."""
    key = name.strip().lower()
    for rec in PAPER_BACKBONES:
        names = (rec.paper_name, rec.timm_name, rec.paper_code_name)
        if key in (n.lower() for n in names if n):
            return rec
    known = ", ".join(r.timm_name for r in PAPER_BACKBONES)
    raise KeyError(f"no paper backbone named {name!r}; known timm names: {known}")


__all__ = [
    "A_HEADS_PARAMS",
    "B_REST_PARAMS",
    "MOBILE_B_BACKBONE",
    "PAPER_BACKBONES",
    "PaperBackbone",
    "fpn256_params",
    "paper_backbone",
]
