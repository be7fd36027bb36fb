"""Every state-dict layout of the reference model zoo loads into its FnL preset.

``reference-state-dicts/zoo_keys.json`` lists, for the 22 detectron2 DensePose chart configs,
the soft R-50 CSE config and DensePoseFnL's three configs, every state-dict key with its shape,
and the parameter count. For each, the preset named after the config (lower-case file stem;
DensePoseFnL's without ``_s3x``) must have exactly that many ``nn.Parameter``s, and a synthetic
checkpoint with exactly those keys and shapes (each tensor filled with its own index, so a key
landing on the wrong tensor shows) must convert with no missing, unexpected or mis-shaped key.

The default run covers one layout per kind of part; ``-m slow`` runs all of them.
"""

from __future__ import annotations

import json

import pytest
import torch
from zoo_fixture_utils import fixtures_root

ZOO_KEYS = fixtures_root() / "reference-state-dicts" / "zoo_keys.json"
#: The 2022 DensePoseFnL Parsing R-CNN release (see test_reference_fixture.py).
RELEASE_2022_PARSING = ["densepose.head.project_channels=256", "densepose.head.non_local_norm=gn"]
#: One layout per kind of part: FnL chart + confidences, FnL CSE, detectron2 DeepLab + decoder
#: + WC2M, detectron2 V1ConvX + decoder + CSE embedder.
DEFAULT_RUN = {
    "fnl:mobile_parsing_rcnn_b_wc2m_s3x.yaml",
    "fnl:mobile_parsing_rcnn_b_cse_s3x.yaml",
    "d2:densepose_rcnn_R_50_FPN_DL_WC2M_s1x.yaml",
    "d2:cse/densepose_rcnn_R_50_FPN_soft_s1x.yaml",
}


def preset_for(config: str) -> tuple[str, list[str]]:
    """FnL preset (and overrides) of a zoo_keys.json entry such as ``d2:cse/x_s1x.yaml``."""
    origin, path = config.split(":", 1)
    stem = path.rsplit("/", 1)[-1].removesuffix(".yaml").lower()
    if origin == "fnl":
        if stem == "densepose-parsing-rcnn-fpn":
            return "parsing_rcnn_r50_fpn", RELEASE_2022_PARSING
        return stem.removesuffix("_s3x"), []
    return stem, []


def _configs() -> list:
    if not ZOO_KEYS.is_file():
        return [pytest.param("missing", marks=pytest.mark.skip(reason=f"{ZOO_KEYS} not found"))]
    names = json.loads(ZOO_KEYS.read_text())["models"]
    return [
        pytest.param(name, marks=() if name in DEFAULT_RUN else pytest.mark.slow) for name in names
    ]


def test_preset_names_follow_the_config_stems():
    from fnl_core import groups, registry

    if not ZOO_KEYS.is_file():
        pytest.skip(f"{ZOO_KEYS} not found (set FNL_FIXTURES)")
    installed = set(registry.names(groups.PRESETS))
    wanted = {preset_for(name)[0] for name in json.loads(ZOO_KEYS.read_text())["models"]}
    assert len(wanted) == 27
    assert wanted <= installed, sorted(wanted - installed)
    assert {"densepose_rcnn_r_50_fpn_s1x", "densepose_rcnn_r_101_fpn_dl_wc2m_s1x"} <= wanted


@pytest.mark.parametrize("config", _configs())
def test_layout_builds_with_the_exact_count_and_converts_completely(config):
    from fnl_detector import build_detector, load_spec
    from fnl_detector.convert import convert_state_dict

    entry = json.loads(ZOO_KEYS.read_text())["models"][config]
    name, overrides = preset_for(config)
    torch.manual_seed(0)
    model = build_detector(load_spec(name, overrides))
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]

    dtypes = {"float32": torch.float32, "int64": torch.int64}
    synthetic = {
        key: torch.full(shape, float(i + 1), dtype=dtypes[dtype])
        for i, (key, shape, dtype) in enumerate(entry["keys"])
    }
    index = {key: i + 1 for i, (key, _, _) in enumerate(entry["keys"])}
    state, mapping = convert_state_dict(synthetic, model)
    assert mapping.ok, mapping.describe()
    assert not mapping.missing and not mapping.unexpected and not mapping.mismatched
    # only BatchNorm step counters may be absent on either side
    assert all(k.endswith("num_batches_tracked") for k in mapping.dropped + mapping.filled)
    assert len(mapping.mapped) + len(mapping.dropped) == len(entry["keys"])
    model.load_state_dict(state, strict=True)
    own = model.state_dict()
    for fnl_key, ref_key in mapping.mapped.items():
        value = own[fnl_key]
        assert value.numel() == 0 or float(value.flatten()[0]) == index[ref_key], fnl_key
