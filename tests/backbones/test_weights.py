"""Local pretrained weights (pretrained=path): values, wrappers, clear mismatch errors."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from fnl_backbones.config import TimmBackboneConfig
from fnl_backbones.weights import WeightsFileError

NAME = "tf_mobilenetv3_small_minimal_100"


@pytest.fixture(scope="module")
def classifier_state() -> dict[str, torch.Tensor]:
    """State dict of the full timm classification model (head included), seeded."""
    torch.manual_seed(3)
    model = timm.create_model(NAME)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and "running_var" in name:
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _build(path, **options):
    cfg = TimmBackboneConfig(model_name=NAME, stages=[0, 1, 2, 4], pretrained=str(path), **options)
    return cfg.build()


def _assert_loaded(bb, state):
    body = bb.body.state_dict()
    checked = 0
    for key, value in body.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, state[key]), key
        checked += 1
    assert checked > 100
    assert "classifier.weight" in state and not any(k.startswith("conv_head") for k in body)


def test_load_pth_with_head_and_pruned_stages(tmp_path, classifier_state):
    path = tmp_path / "weights.pth"
    torch.save(classifier_state, path)
    bb = _build(path)
    _assert_loaded(bb, classifier_state)  # frozen BN buffers hold the file's values
    assert bb.body.bn1.running_var.tolist() == classifier_state["bn1.running_var"].tolist()


def test_load_safetensors_into_trainable_bn(tmp_path, classifier_state):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in classifier_state.items()}, str(path))
    bb = _build(path, norm="bn", freeze_at=0)
    _assert_loaded(bb, classifier_state)


def test_load_wrapped_checkpoint(tmp_path, classifier_state):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": classifier_state, "iteration": 3}, path)
    _assert_loaded(_build(path), classifier_state)


def test_mismatched_file_names_keys(tmp_path, classifier_state):
    state = dict(classifier_state)
    del state["blocks.1.0.conv_pw.weight"]
    state["blocks.1.0.conv_extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsFileError) as err:
        _build(path)
    text = str(err.value)
    assert "bad.pth" in text and NAME in text
    assert "missing keys (1: blocks.1.0.conv_pw.weight)" in text
    assert "unexpected keys (1: blocks.1.0.conv_extra.weight)" in text


def test_shape_mismatch(tmp_path, classifier_state):
    state = dict(classifier_state)
    state["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(WeightsFileError, match=r"shape mismatches .*conv_stem.weight"):
        _build(path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(WeightsFileError, match="does not exist"):
        _build(tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsFileError, match="does not hold a state dict"):
        _build(path)
