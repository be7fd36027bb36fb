"""Write the preset spec files of fnl-detector (maintainer tool of the workspace, not shipped).

Usage (from the repository root)::

    uv run python scripts/generate_presets.py [--check]

Writes ``packages/fnl-detector/src/fnl_detector/preset_specs/*.json`` and prints the
``[project.entry-points."fnl.presets"]`` lines for fnl-detector's pyproject.toml. ``--check``
only compares and exits 1 on a difference. The Table 2 backbone rows come from
``fnl_backbones.paper.PAPER_BACKBONES``: this script lives with the workspace, above both
packages, so that fnl-detector (which never imports fnl-backbones) holds only the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = (
    Path(__file__).resolve().parents[1]
    / "packages"
    / "fnl-detector"
    / "src"
    / "fnl_detector"
    / "preset_specs"
)

TIMM_RGB = {
    "format": "RGB",
    "pixel_mean": [123.675, 116.28, 103.53],
    "pixel_std": [58.395, 57.12, 57.375],
}
P2_P5 = ["p2", "p3", "p4", "p5"]
#: detectron2's MSRA ResNet-50 conventions (the reference R-50 models were trained with them).
D2_MSRA_BGR = {
    "format": "BGR",
    "pixel_mean": [103.53, 116.28, 123.675],
    "pixel_std": [1.0, 1.0, 1.0],
}
MSRA_NOTE = (
    " Input and trunk follow detectron2's MSRA ResNet-50 (BGR, mean 103.53/116.28/123.675, std "
    "1, stride in the first 1x1 conv) so detectron2 checkpoints compute the same function; timm's "
    "ImageNet ResNet-50 weights instead need input.format=RGB, input.pixel_mean=[123.675,116.28,"
    "103.53], input.pixel_std=[58.395,57.12,57.375] and backbone.stride_in_1x1=false."
)
PRETRAINED_NOTE = (
    " Backbone weights are random (pretrained false) so nothing downloads; for training start "
    "from ImageNet weights with --set backbone.pretrained=true."
)


def mobile(
    *,
    description: str,
    backbone: dict[str, Any],
    neck: dict[str, Any],
    width: int,
) -> dict[str, Any]:
    """Parsing/Mobile family settings (the reference's v1/v2 configs; docs/paper.md, 'Training
    and test settings')."""
    return {
        "description": description + PRETRAINED_NOTE,
        "spec_version": 1,
        "input": {
            "min_size_train": [512, 864],
            "max_size_train": 1333,
            "min_size_test": 800,
            "max_size_test": 1333,
            **TIMM_RGB,
        },
        "backbone": {"type": "timm", **backbone, "norm": "frozen_bn", "pretrained": False},
        "neck": neck,
        "anchors": {
            "sizes": [[32], [64], [128], [256], [512]],
            "aspect_ratios": [[0.5, 1.0, 2.0]],
            "offset": 0.0,
            "round": False,
        },
        "rpn": {
            "head": {"type": "standard"},
            "in_features": ["p2", "p3", "p4", "p5", "p6"],
            "pre_nms_top_n_train": 2000,
            "pre_nms_top_n_test": 1000,
            "post_nms_top_n_train": 1000,
            "post_nms_top_n_test": 1000,
            "nms_thresh": 0.7,
            "batch_size_per_image": 512,
            "positive_fraction": 0.5,
        },
        "box_pooler": {
            "in_features": P2_P5,
            "resolution": 7,
            "sampling_ratio": 0,
            "aligned": True,
            "op": "roi_align",
        },
        "box_head": {"type": "conv", "num_convs": 2, "channels": width},
        "box_predictor": {"num_classes": 1, "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0]},
        "roi_heads": {
            "batch_size_per_image": 32,
            "positive_fraction": 0.25,
            "iou_threshold": 0.5,
            "proposal_append_gt": True,
        },
        "densepose": {
            "head": {
                "type": "deeplab",
                "aspp_channels": width,
                "channels": width,
                "num_convs": 4,
                "dilations": [6, 12, 18],
                "non_local": False,
                "norm": "",
            },
            "predictor": {"type": "chart", "coarse_channels": 15},
            "loss": {"type": "chart", "index_weight": 2.0, "part_weight": 0.3, "point_weight": 0.1},
            "pooler": {
                "in_features": ["p2"],
                "resolution": 32,
                "sampling_ratio": 0,
                "aligned": True,
                "op": "roi_align",
            },
            "heatmap_size": 64,
            "iou_threshold": 0.7,
        },
        "test": {"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_image": 100},
    }


def spnasnet_expansion() -> dict[str, Any]:
    return {
        "model_name": "spnasnet_100",
        "out_indices": [1, 2, 3, 4],
        "feature_location": "expansion",
    }


def mobile_a(backbone: dict[str, Any], description: str) -> dict[str, Any]:
    return mobile(
        description=description,
        backbone=backbone,
        neck={"type": "fpn", "out_channels": 256},
        width=256,
    )


def bifpn_variant(width: int, description: str) -> dict[str, Any]:
    return mobile(
        description=description,
        backbone=spnasnet_expansion(),
        neck={"type": "bifpn", "out_channels": width},
        width=width,
    )


def resnet_baseline(parsing: bool) -> dict[str, Any]:
    """DensePose R-CNN (legacy head) or the Parsing R-CNN reproduction, ResNet-50 FPN."""
    spec = mobile(
        description="",
        backbone={"model_name": "resnet50", "out_indices": [1, 2, 3, 4]},
        neck={"type": "fpn", "out_channels": 256},
        width=256,
    )
    spec["box_head"] = {"type": "2fc", "num_fc": 2, "fc_dim": 1024}
    legacy_pool = {"sampling_ratio": 2, "aligned": False, "op": "roi_align"}
    spec["box_pooler"].update(legacy_pool)
    spec["input"].update(D2_MSRA_BGR)
    spec["backbone"]["stride_in_1x1"] = True
    if parsing:
        spec["description"] = (
            "Parsing R-CNN reproduction (paper Table 1): ResNet-50 + FPN 256, 2-FC box head, "
            "ASPP 256 + non-local (BN) + 4 conv 512 on P2 32x32 RoIs (ROIAlign, aligned=False), "
            "heatmap 64; 54,555,951 parameters (FnL paper-era code)." + PRETRAINED_NOTE
        )
        spec["densepose"]["head"] = {
            "type": "deeplab",
            "aspp_channels": 256,
            "channels": 512,
            "num_convs": 4,
            "dilations": [6, 12, 18],
            "non_local": True,
            "non_local_norm": "bn",
            "norm": "",
        }
        spec["densepose"]["pooler"].update(legacy_pool)
    else:
        spec["description"] = (
            "DensePose R-CNN baseline (paper Table 1, detectron2 R_50_FPN_s1x_legacy): ResNet-50 "
            "+ FPN 256, 2-FC box head, 8 x conv 512 DensePose head on 14x14 RoIs pooled from "
            "P2-P5 (ROIAlign, aligned=False, sampling 2), heatmap 56; 59,731,247 parameters."
            + PRETRAINED_NOTE
        )
        spec["input"]["min_size_train"] = list(range(640, 801, 32))
        spec["rpn"]["batch_size_per_image"] = 256
        spec["roi_heads"]["batch_size_per_image"] = 512
        spec["densepose"]["head"] = {
            "type": "v1convx",
            "num_convs": 8,
            "channels": 512,
            "kernel_size": 3,
        }
        spec["densepose"]["pooler"] = {"in_features": P2_P5, "resolution": 14, **legacy_pool}
        spec["densepose"]["heatmap_size"] = 56
    spec["description"] += MSRA_NOTE
    return spec


#: detectron2 DensePose model-zoo configs (projects/DensePose/configs, lower-case file stems)
#: and their reference parameter counts (nn.Parameters of the model detectron2 builds).
D2_ZOO_PARAMETERS = {
    "densepose_rcnn_r_50_fpn_s1x_legacy": 59_731_247,
    "densepose_rcnn_r_50_fpn_s1x": 63_821_090,
    "densepose_rcnn_r_50_fpn_wc1_s1x": 64_025_915,
    "densepose_rcnn_r_50_fpn_wc1m_s1x": 64_042_301,
    "densepose_rcnn_r_50_fpn_wc2_s1x": 64_435_565,
    "densepose_rcnn_r_50_fpn_wc2m_s1x": 64_451_951,
    "densepose_rcnn_r_50_fpn_dl_s1x": 66_055_970,
    "densepose_rcnn_r_50_fpn_dl_wc1_s1x": 66_260_795,
    "densepose_rcnn_r_50_fpn_dl_wc1m_s1x": 66_277_181,
    "densepose_rcnn_r_50_fpn_dl_wc2_s1x": 66_670_445,
    "densepose_rcnn_r_50_fpn_dl_wc2m_s1x": 66_686_831,
    "densepose_rcnn_r_101_fpn_s1x_legacy": 78_671_151,
    "densepose_rcnn_r_101_fpn_s1x": 82_760_994,
    "densepose_rcnn_r_101_fpn_wc1_s1x": 82_965_819,
    "densepose_rcnn_r_101_fpn_wc1m_s1x": 82_982_205,
    "densepose_rcnn_r_101_fpn_wc2_s1x": 83_375_469,
    "densepose_rcnn_r_101_fpn_wc2m_s1x": 83_391_855,
    "densepose_rcnn_r_101_fpn_dl_s1x": 84_995_874,
    "densepose_rcnn_r_101_fpn_dl_wc1_s1x": 85_200_699,
    "densepose_rcnn_r_101_fpn_dl_wc1m_s1x": 85_217_085,
    "densepose_rcnn_r_101_fpn_dl_wc2_s1x": 85_610_349,
    "densepose_rcnn_r_101_fpn_dl_wc2m_s1x": 85_626_735,
    "densepose_rcnn_r_50_fpn_soft_s1x": 63_341_799,
}
UV_CONFIDENCE = {"wc1": "iid_iso", "wc2": "indep_aniso"}
ZOO_NOTE = (
    " Backbone weights are random (pretrained false); load the released checkpoint with --weights."
)


def d2_zoo_preset(name: str) -> dict[str, Any]:
    """One detectron2 DensePose model-zoo config, read from its name: R-50/101, ``dl`` = DeepLab
    head (GroupNorm ASPP 6/12/56 + 8 GroupNorm convs of 512), ``wc1``/``wc2`` = UV confidence
    iid_iso / indep_aniso, a trailing ``m`` = segmentation confidence, ``soft`` = CSE, ``legacy``
    = the original layout (no decoder, 15 coarse channels, 14/56). The others have the FPN
    feature decoder, 2 coarse channels, 28x28 RoIs and 112x112 heatmaps."""
    parts = name.removeprefix("densepose_rcnn_").split("_")
    depth = int(parts[1])
    params = D2_ZOO_PARAMETERS[name]
    spec = resnet_baseline(parsing=False)
    spec["backbone"]["model_name"] = f"resnet{depth}"
    head = "V1ConvX head (8 x conv 512)"
    bits = []
    if "legacy" not in parts:
        dp = spec["densepose"]
        if "dl" in parts:
            head = "DeepLab head (GroupNorm ASPP 6/12/56 + 8 conv 512 with GroupNorm)"
            dp["head"] = {
                "type": "deeplab",
                "aspp_channels": 256,
                "project_channels": 256,
                "channels": 512,
                "num_convs": 8,
                "dilations": [6, 12, 56],
                "non_local": False,
                "norm": "gn",
            }
        wc = next((p for p in parts if p.startswith("wc")), "")
        uv = UV_CONFIDENCE.get(wc[:3], "")
        segm = wc.endswith("m")
        if "soft" in parts:
            dp["predictor"] = {"type": "cse", "embed_size": 16, "coarse_channels": 2}
            dp["embedder"] = {
                "type": "vertex_feature",
                "mesh_name": "smpl_27554",
                "num_vertices": 27554,
                "feature_dim": 256,
            }
            bits.append("CSE embeddings (16) + vertex embedder smpl_27554")
        else:
            dp["predictor"] = {
                "type": "chart",
                "coarse_channels": 2,
                "uv_confidence": uv,
                "segm_confidence": segm,
            }
            bits.append("2 coarse channels")
            bits += [f"UV confidence {uv}"] * bool(uv) + ["segmentation confidence"] * segm
        dp["loss"] = {
            "type": "chart",
            "index_weight": 5.0,
            "part_weight": 1.0,
            "point_weight": 0.01,
            "uv_confidence": uv,
        }
        dp["decoder"] = {
            "type": "fpn",
            "conv_dims": 256,
            "num_classes": 256,
            "common_stride": 4,
            "norm": "",
        }
        dp["pooler"]["resolution"] = 28
        dp["heatmap_size"] = 112
    config = name.replace("densepose_rcnn_r_", "densepose_rcnn_R_").replace("_fpn", "_FPN")
    config = config.replace("_dl", "_DL").replace("_wc", "_WC").replace("m_s1x", "M_s1x")
    if "soft" in parts:
        config = "cse/" + config
    desc = [
        f"ResNet-{depth} (detectron2 MSRA: BGR, std 1, stride in 1x1) + FPN 256, 2-FC box head, "
        + head
    ]
    if "legacy" in parts:
        desc.append("no decoder, 14x14 RoIs from P2-P5 (ROIAlign), heatmap 56; 15 coarse channels")
    else:
        desc += ["FPN feature decoder (p2-p5 merged at stride 4)"]
        desc += ["28x28 RoIs (ROIAlign), heatmap 112", *bits]
    spec["description"] = (
        f"detectron2 DensePose {config}.yaml: "
        + "; ".join(desc)
        + f"; {params:,} parameters."
        + ZOO_NOTE
    )
    return spec


def fnl_zoo_presets() -> dict[str, dict[str, Any]]:
    """DensePoseFnL's released Mobile B variants with confidences and with CSE."""
    return {
        "mobile_parsing_rcnn_b_wc2m": {
            "description": (
                "Mobile Parsing R-CNN (B) with UV and segmentation confidences (DensePoseFnL "
                "mobile_parsing_rcnn_b_wc2m_s3x): Mobile B with 2 coarse channels, UV confidence "
                "indep_aniso and segmentation confidence; 3,415,221 parameters."
            ),
            "preset": "mobile_parsing_rcnn_b",
            "densepose": {
                "predictor": {
                    "type": "chart",
                    "coarse_channels": 2,
                    "uv_confidence": "indep_aniso",
                    "segm_confidence": True,
                },
                "loss": {
                    "type": "chart",
                    "index_weight": 2.0,
                    "part_weight": 0.3,
                    "point_weight": 0.1,
                    "uv_confidence": "indep_aniso",
                },
            },
        },
        "mobile_parsing_rcnn_b_cse": {
            "description": (
                "Mobile Parsing R-CNN (B) with continuous surface embeddings (DensePoseFnL "
                "mobile_parsing_rcnn_b_cse_s3x): Mobile B with a CSE predictor (16-d embeddings, "
                "2 coarse channels) and the SMPL vertex embedder smpl_27554; inference only in "
                "FnL (no CSE training loss); 3,279,917 parameters."
            ),
            "preset": "mobile_parsing_rcnn_b",
            "densepose": {
                "predictor": {"type": "cse", "embed_size": 16, "coarse_channels": 2},
                "embedder": {
                    "type": "vertex_feature",
                    "mesh_name": "smpl_27554",
                    "num_vertices": 27554,
                    "feature_dim": 256,
                },
            },
        },
    }


def paper_backbone_presets() -> dict[str, dict[str, Any]]:
    from fnl_backbones.paper import PAPER_BACKBONES

    out = {}
    for entry in PAPER_BACKBONES:
        out[f"mobile_parsing_rcnn_a_{entry.timm_name}"] = mobile_a(
            entry.backbone_spec(pretrained=False),
            f"Mobile Parsing R-CNN (A) with the {entry.paper_name} backbone (paper Table 2, "
            f"{entry.paper_params_m} M; {entry.detector_params_a:,} parameters): FPN 256, "
            "2-conv box head 256, ASPP + 4 conv 256 DensePose head on P2 32x32 RoIs.",
        )
    return out


def all_presets() -> dict[str, dict[str, Any]]:
    presets = {
        "densepose_rcnn_r50_fpn": resnet_baseline(parsing=False),
        "parsing_rcnn_r50_fpn": resnet_baseline(parsing=True),
        "mobile_parsing_rcnn_a": mobile_a(
            {"model_name": "spnasnet_100", "stages": [1, 2, 3, 5], "freeze_at": 3},
            "Mobile Parsing R-CNN (A) (paper Table 1): Single-Path NAS (spnasnet_100 stage "
            "outputs) + FPN 256, 2-conv box head 256, ASPP + 4 conv 256 DensePose head on P2 "
            "32x32 RoIs (ROIAlignV2), heatmap 64; 11,346,855 parameters.",
        ),
        "mobile_parsing_rcnn_b": bifpn_variant(
            64,
            "Mobile Parsing R-CNN (B) (paper Table 1, FnL mobile_parsing_rcnn_b_s3x): "
            "spnasnet_100 expansion features + BiFPN 64, 2-conv box head 64, ASPP + 4 conv 64 "
            "DensePose head on P2 32x32 RoIs (ROIAlignV2), heatmap 64; 3,349,621 parameters.",
        )
        | {"schedule": "s3x"},
        "mobile_parsing_rcnn_b_test_tuned": {
            "preset": "mobile_parsing_rcnn_b",
            "description": (
                "Mobile Parsing R-CNN (B), test-tuned (paper Tables 4-6): 100 RPN proposals "
                "per image after NMS, box NMS 0.3, shortest side 512 at test time."
            ),
            "input": {"min_size_test": 512},
            "rpn": {"post_nms_top_n_test": 100},
            "test": {"nms_thresh": 0.3},
        },
    }
    for width, params in ((256, "10,533,685"), (112, "4,412,965"), (88, "3,820,237")):
        presets[f"mobile_parsing_rcnn_a_bifpn_{width}"] = bifpn_variant(
            width,
            f"Mobile Parsing R-CNN (A) with a BiFPN {width} neck (paper Table 3): spnasnet_100 "
            f"expansion features, box and DensePose heads {width} wide; {params} parameters.",
        )
    presets.update(paper_backbone_presets())
    presets.update({name: d2_zoo_preset(name) for name in D2_ZOO_PARAMETERS})
    presets.update(fnl_zoo_presets())
    return presets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    presets = all_presets()
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, spec in sorted(presets.items()):
        text = json.dumps(spec, indent=2) + "\n"
        path = OUT / f"{name}.json"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    extra = sorted(p.stem for p in OUT.glob("*.json") if p.stem not in presets)
    if args.check:
        for name in stale + extra:
            print(f"out of date: {name}", file=sys.stderr)
        return 1 if stale or extra else 0
    for name in extra:
        (OUT / f"{name}.json").unlink()
    print('[project.entry-points."fnl.presets"]')
    for name in sorted(presets):
        print(f'{name} = "fnl_detector.presets:{name}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
