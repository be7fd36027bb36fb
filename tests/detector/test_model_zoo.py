"""fnl-detector's named models: the shipped cards, their presets, and the toy model's weights."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from fnl_core import registry
from fnl_core.groups import MODELS, PRESETS
from fnl_core.models import get_card
from fnl_detector import model_zoo

REPO = Path(__file__).resolve().parents[2]
TOY = "mobile_parsing_rcnn_b_toy"


def _fixtures_root() -> Path:
    env = os.environ.get("FNL_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


ZOO_KEYS = _fixtures_root() / "reference-state-dicts" / "zoo_keys.json"


def test_every_shipped_card_is_registered_and_valid() -> None:
    names = model_zoo.builtin_model_names()
    advertised = {i.name for i in registry.entries(MODELS) if i.distribution == "fnl-detector"}
    assert advertised == set(names)
    for name in names:
        card = get_card(name)
        assert card.name == name
        assert card.source, name
        if name != TOY:
            assert set(card.reported) == {"bbox", "segm", "gps", "gpsm"}, name
            assert card.license and card.reported_on, name


def test_detectron2_cards_name_their_file_hash_and_config() -> None:
    d2 = [get_card(n) for n in model_zoo.builtin_model_names() if n.startswith("densepose_rcnn_")]
    assert len(d2) == 23  # 22 chart-based configs + the soft R-50 CSE one
    for card in d2:
        match = re.search(r"/(densepose_rcnn_[A-Za-z0-9_]+)/\d+/model_final_([0-9a-f]{6})\.pkl$",
                          card.weights)  # fmt: skip
        assert match, card.weights
        assert match.group(1).lower() == card.name == card.preset
        assert card.sha256_prefix == match.group(2)


@pytest.mark.skipif(not ZOO_KEYS.is_file(), reason=f"shared fixture {ZOO_KEYS} not present")
def test_card_presets_are_the_reference_config_stems() -> None:
    configs = json.loads(ZOO_KEYS.read_text())["models"]
    stems = {Path(c.split(":", 1)[1]).stem.lower() for c in configs}
    d2 = {n for n in model_zoo.builtin_model_names() if n.startswith("densepose_rcnn_")}
    assert d2 == {s for s in stems if s.startswith("densepose_rcnn_")}
    fnl_cards = {"mobile_parsing_rcnn_b_s3x", "mobile_parsing_rcnn_b_wc2m_s3x",
                 "mobile_parsing_rcnn_b_cse_s3x"}  # fmt: skip
    assert fnl_cards <= stems and fnl_cards <= set(model_zoo.builtin_model_names())


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fnl_backbones", "fnl_necks", "fnl_heads")),
    reason="validating presets needs the component packages (fnl-backbones, -necks, -heads)",
)
def test_installed_presets_of_cards_validate() -> None:
    from fnl_detector.spec import load_spec

    installed = set(registry.names(PRESETS))
    checked = 0
    for name in model_zoo.builtin_model_names():
        card = get_card(name)
        if card.preset is not None and card.preset in installed:
            load_spec({"preset": card.preset})
            checked += 1
    assert checked >= 1  # mobile_parsing_rcnn_b is always there


def test_toy_card_points_into_the_package() -> None:
    card = get_card(TOY)
    assert card.preset is None and card.spec is None
    assert card.packaged_weights() == Path(model_zoo.__file__).parent / f"{TOY}.safetensors"


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fnl_backbones", "fnl_necks", "fnl_heads")),
    reason="building the toy model needs the component packages (fnl-backbones, -necks, -heads)",
)
@pytest.mark.skipif(
    not (Path(model_zoo.__file__).parent / f"{TOY}.safetensors").is_file(),
    reason="the toy model's weights are not in the package yet (added from the training run)",
)
def test_toy_model_loads_with_the_spec_from_its_weights() -> None:
    from fnl_detector.loading import load_model, resolve_model

    resolved = resolve_model(model=TOY)
    assert resolved.weights == get_card(TOY).packaged_weights()
    model = load_model(resolved.spec, resolved.weights)  # strict load: every key fits
    assert not model.training


def test_pack_run_writes_weights_with_spec_and_updates_the_card(
    tiny_components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from detector_standins import tiny_spec

    from fnl_core.models import ModelCard, safetensors_metadata
    from fnl_detector import build_detector, load_spec
    from fnl_detector.loading import load_model, resolve_model
    from fnl_detector.model_zoo.pack import pack_run
    from fnl_detector.weights import save_weights

    run = tmp_path / "run"
    (run / "checkpoints" / "iter_0000002").mkdir(parents=True)
    spec = load_spec(tiny_spec())
    (run / "spec.json").write_text(json.dumps(spec.to_dict()))
    torch.manual_seed(0)
    model = build_detector(spec)
    save_weights(model.state_dict(), run / "checkpoints" / "iter_0000002" / "model.safetensors")
    (run / "checkpoints" / "last_checkpoint").write_text("iter_0000002\n")
    scores = tmp_path / "eval.json"
    scores.write_text(json.dumps({"bbox": {"AP": 71.234}, "gps": {"AP": 40.06}}))
    dest = tmp_path / "zoo"
    dest.mkdir()
    card = pack_run(run, name="toy_test", dest_dir=dest, eval_json=scores, reported_on="toy val")
    weights = dest / "toy_test.safetensors"
    assert json.loads(safetensors_metadata(weights)["spec"]) == json.loads(
        json.dumps(spec.to_dict(), sort_keys=True)
    )
    assert card["reported"] == {"bbox": 71.2, "gps": 40.1}
    assert json.loads((dest / "toy_test.json").read_text()) == card
    from fnl_core.download import file_sha256

    assert card["sha256"] == file_sha256(weights)
    # the packed model resolves and loads like the shipped one would
    shipped = ModelCard(name="toy_test", weights=str(weights), sha256=card["sha256"])
    with registry.registered(MODELS, "toy_test", shipped):
        resolved = resolve_model(model="toy_test")
        loaded = load_model(resolved.spec, resolved.weights)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
