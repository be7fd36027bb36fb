"""Shipped presets with the real components (skipped when the zoo packages are not installed,
e.g. in the isolated fnl-detector venv; tests/integration covers them there too)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fake_batch

from fnl_core import groups, registry
from fnl_core.cli import main
from fnl_detector import build_detector, load_spec
from fnl_detector.analysis import parameter_counts

NEEDED = {
    groups.BACKBONES: "timm",
    groups.NECKS: "bifpn",
    groups.BOX_HEADS: "conv",
    groups.DENSEPOSE_HEADS: "deeplab",
    groups.DENSEPOSE_LOSSES: "chart",
}
pytestmark = pytest.mark.skipif(
    any(name not in registry.names(g) for g, name in NEEDED.items()),
    reason="needs the fnl zoo components (fnl-backbones, fnl-necks, fnl-heads)",
)

#: docs/paper.md, Tables 1 and 3, 'Counting parameters' (checked to the parameter; the paper
#: prints 2 decimals).
PAPER_TOTALS = {
    "densepose_rcnn_r50_fpn": 59_731_247,
    "parsing_rcnn_r50_fpn": 54_555_951,
    "mobile_parsing_rcnn_a": 11_346_855,
    "mobile_parsing_rcnn_b": 3_349_621,
    "mobile_parsing_rcnn_b_test_tuned": 3_349_621,
    "mobile_parsing_rcnn_a_bifpn_256": 10_533_685,
    "mobile_parsing_rcnn_a_bifpn_112": 4_412_965,
    "mobile_parsing_rcnn_a_bifpn_88": 3_820_237,
}
FAST = ["mobile_parsing_rcnn_b", "mobile_parsing_rcnn_a_bifpn_88"]
#: docs/paper.md, Table 2 (#params column, M) for the Table 2 presets.
TABLE2_M = {
    "resnet50": 33.61,
    "tf_efficientnet_b3": 16.03,
    "tf_efficientnet_el": 17.89,
    "mixnet_xl": 19.10,
    "efficientnet_b2": 13.68,
    "mixnet_l": 14.62,
    "tf_efficientnet_em": 14.57,
    "efficientnet_b1": 13.03,
    "tf_efficientnet_cc_b0_4e": 18.32,
    "tf_efficientnet_es": 13.12,
    "mixnet_m": 12.39,
    "efficientnet_b0": 12.10,
    "mixnet_s": 11.52,
    "tf_mobilenetv3_large_100": 12.04,
    "semnasnet_100": 10.94,
    "fbnetc_100": 11.49,
    "mnasnet_100": 11.31,
    "spnasnet_100": 11.35,
    "tf_mobilenetv3_large_075": 10.92,
    "tf_mobilenetv3_large_minimal_100": 10.48,
    "tf_mobilenetv3_small_100": 10.07,
    "tf_mobilenetv3_small_075": 9.74,
    "tf_mobilenetv3_small_minimal_100": 9.58,
}


def _slow_unless(fast: list[str], names: list[str]):
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _slow_unless(FAST, sorted(PAPER_TOTALS)))
def test_paper_parameter_totals(name):
    counts = parameter_counts(build_detector(name))
    assert counts["total"] == PAPER_TOTALS[name]
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


@pytest.mark.slow
@pytest.mark.parametrize("timm_name", sorted(TABLE2_M))
def test_table2_parameter_totals(timm_name):
    total = parameter_counts(build_detector(f"mobile_parsing_rcnn_a_{timm_name}"))["total"]
    assert total / 1e6 == pytest.approx(TABLE2_M[timm_name], abs=0.005 + 1e-9)


def test_mobile_b_parts_match_the_paper_breakdown():
    counts = parameter_counts(build_detector("mobile_parsing_rcnn_b"))
    assert counts == {
        "total": 3_349_621,
        "backbone": 2_691_512,
        "neck": 147_918,
        "rpn": 37_903,
        "box_head": 92_678,
        "densepose_head": 287_360 + 92_250,
    }


def test_test_tuned_preset_overrides_b():
    spec = load_spec("mobile_parsing_rcnn_b_test_tuned")
    assert spec.rpn.post_nms_top_n_test == 100
    assert spec.test.nms_thresh == 0.3 and spec.input.min_size_test == 512
    base = load_spec("mobile_parsing_rcnn_b")
    assert spec.neck == base.neck and spec.densepose == base.densepose


def test_mobile_b_inference_and_training_step():
    torch.manual_seed(0)
    model = build_detector(load_spec("mobile_parsing_rcnn_b", ["input.min_size_test=256"]))
    model.eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 256, 320) * 255])[0]
    k = len(out["boxes"])
    assert out["densepose"]["coarse_segm"].shape == (k, 15, 64, 64)
    assert out["densepose"]["u"].shape == (k, 25, 64, 64)
    model.train()
    model.transform.min_size_train = (128,)
    images, targets = fake_batch()
    losses = model(images, targets)
    assert len(losses) == 8 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    head = model.roi_heads.densepose_predictor
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(registry.names(groups.PRESETS)))
def test_every_preset_builds(name):
    model = build_detector(name)
    assert parameter_counts(model)["total"] > 1e6


def test_info_json_of_mobile_b(capsys):
    assert (
        main(["info", "mobile_parsing_rcnn_b", "--json", "--size", "128", "--detections", "2"]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["total"] == 3_349_621
    assert {"weights_mb", "gflops", "features", "state_dict_mb"} <= set(info)
    assert info["weights_mb"] == pytest.approx(13.398, abs=1e-3)


def test_preset_files_match_the_generator():
    import importlib.util
    from pathlib import Path

    pytest.importorskip("fnl_backbones", reason="the generator reads fnl_backbones.paper")
    script = Path(__file__).parents[2] / "scripts" / "generate_presets.py"
    if not script.is_file():
        pytest.skip("generator script not in this checkout")
    spec = importlib.util.spec_from_file_location("generate_presets", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run scripts/generate_presets.py"
