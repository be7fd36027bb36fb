"""Reference checkpoint conversion: key mapping, safe reading, strict loading, ``fnl convert``."""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from detector_standins import tiny_spec

from fnl_detector.build import build_detector
from fnl_detector.commands.convert import command
from fnl_detector.convert import (
    ConversionError,
    candidate_keys,
    convert_checkpoint,
    convert_state_dict,
    d2_resnet_to_timm,
    map_keys,
    read_checkpoint,
)
from fnl_detector.loading import load_weights


def to_reference_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FnL keys -> detectron2 keys (backbone under bottom_up, the neck under backbone)."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            key = "backbone.bottom_up." + key[len("backbone.") :]
        elif key.startswith("neck."):
            key = "backbone." + key[len("neck.") :]
        out[key] = value
    return out


@pytest.fixture
def tiny_model(tiny_components):
    torch.manual_seed(0)
    return build_detector(tiny_spec()).eval()


def _outputs(model, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 96, 128, generator=gen) * 255
    with torch.inference_mode():
        return model([image])[0]


# ------------------------------------------------------------------ key rules
@pytest.mark.parametrize(
    ("d2", "timm"),
    [
        ("stem.conv1.weight", "conv1.weight"),
        ("stem.conv1.norm.running_var", "bn1.running_var"),
        ("res2.0.conv1.weight", "layer1.0.conv1.weight"),
        ("res3.3.conv2.norm.bias", "layer2.3.bn2.bias"),
        ("res5.0.shortcut.weight", "layer4.0.downsample.0.weight"),
        ("res4.0.shortcut.norm.weight", "layer3.0.downsample.1.weight"),
        ("blocks.1.2.conv_pwl.weight", "blocks.1.2.conv_pwl.weight"),
    ],
)
def test_d2_resnet_names_become_timm_names(d2, timm):
    assert d2_resnet_to_timm(d2) == timm


def test_candidates_route_trunk_and_neck():
    assert (
        candidate_keys("backbone.bottom_up.conv_stem.weight")[1] == "backbone.body.conv_stem.weight"
    )
    assert "backbone.body.layer1.0.bn1.weight" in candidate_keys(
        "backbone.bottom_up.res2.0.conv1.norm.weight"
    )
    assert candidate_keys("backbone.fpn_lateral2.weight") == [
        "backbone.fpn_lateral2.weight",
        "neck.fpn_lateral2.weight",
    ]
    assert candidate_keys("roi_heads.box_predictor.cls_score.weight") == [
        "roi_heads.box_predictor.cls_score.weight"
    ]


def test_map_keys_reports_every_kind_of_problem():
    target = {
        "backbone.body.conv.weight": (4, 3, 3, 3),
        "backbone.body.bn.weight": (4,),
        "neck.l2.weight": (8, 4, 1, 1),
        "neck.p2_out.1.num_batches_tracked": (),
        "roi_heads.box_predictor.cls_score.weight": (2, 16),
        "roi_heads.box_predictor.bbox_pred.weight": (4, 16),
    }
    source = {
        "backbone.bottom_up.conv.weight": (4, 3, 3, 3),
        "backbone.bottom_up.bn.weight": (4,),
        "backbone.bottom_up.bn.num_batches_tracked": (),
        "backbone.l2.weight": (8, 4, 1, 1),
        "roi_heads.box_predictor.cls_score.weight": (3, 16),
        "roi_heads.mask_head.weight": (1,),
        "pixel_mean": (3, 1, 1),
    }
    m = map_keys(source, target)
    assert m.mapped == {
        "backbone.body.conv.weight": "backbone.bottom_up.conv.weight",
        "backbone.body.bn.weight": "backbone.bottom_up.bn.weight",
        "neck.l2.weight": "backbone.l2.weight",
    }
    assert m.dropped == ["backbone.bottom_up.bn.num_batches_tracked"]
    assert m.filled == ["neck.p2_out.1.num_batches_tracked"]
    assert m.normalisation == ["pixel_mean"]
    assert m.missing == ["roi_heads.box_predictor.bbox_pred.weight"]
    assert m.unexpected == ["roi_heads.mask_head.weight"]
    assert m.mismatched == [
        (
            "roi_heads.box_predictor.cls_score.weight",
            "roi_heads.box_predictor.cls_score.weight",
            (3, 16),
            (2, 16),
        )
    ]
    assert not m.ok
    text = m.describe()
    for word in ("missing", "unexpected", "mis-shaped", "bbox_pred", "mask_head", "[3, 16]"):
        assert word in text


def test_map_keys_accepts_a_complete_match():
    m = map_keys({"backbone.bottom_up.a": (2,)}, {"backbone.body.a": (2,)})
    assert m.ok and m.mapped == {"backbone.body.a": "backbone.bottom_up.a"}


# ------------------------------------------------------------------ reading files
def _write_d2_pth(model, path: Path, extra: dict | None = None) -> None:
    state = to_reference_layout(model.state_dict())
    torch.save({"model": state, "iteration": 7, **(extra or {})}, path)


def test_reference_pth_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    _write_d2_pth(tiny_model, tmp_path / "model_final.pth")
    expected = _outputs(tiny_model)
    torch.manual_seed(123)
    fresh = build_detector(tiny_spec()).eval()
    assert not torch.equal(fresh.backbone.convs[0].weight, tiny_model.backbone.convs[0].weight)
    mapping = load_weights(fresh, tmp_path / "model_final.pth")
    assert mapping.ok and not mapping.unexpected
    got = _outputs(fresh)
    assert torch.equal(got["boxes"], expected["boxes"])
    assert torch.equal(got["densepose"]["fine_segm"], expected["densepose"]["fine_segm"])


def test_model_zoo_pickle_of_numpy_arrays_loads(tiny_model, tmp_path):
    state = OrderedDict(
        (k, v.numpy()) for k, v in to_reference_layout(tiny_model.state_dict()).items()
    )
    with (tmp_path / "model_final_abc.pkl").open("wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    torch.manual_seed(5)
    fresh = build_detector(tiny_spec()).eval()
    load_weights(fresh, tmp_path / "model_final_abc.pkl")
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"a": _Boom()}}))
    with pytest.raises(ConversionError, match=r"posix\.system|os\.system") as info:
        read_checkpoint(path)
    assert "torch.save" in str(info.value)  # tells how to convert a trusted file


def test_pth_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "cfg": argparse.Namespace(x=1)}, path)
    with pytest.raises(ConversionError, match=r"argparse\.Namespace") as info:
        read_checkpoint(path)
    assert "weights_only" not in str(info.value)  # torch's advice is never passed on


@pytest.mark.parametrize(
    "content",
    [b"hello, these are my notes\n", bytes(range(256)) * 8, b"\x80\x02garbage"],
    ids=["text", "binary", "broken-pickle"],
)
def test_non_checkpoints_are_one_line_without_torch_advice(tmp_path, content):
    """Issue #24, item 5: torch's several lines of advice to set weights_only=False must not
    reach the user (nor the backbones' pretrained-weights reader, where fnl-backbones is
    installed)."""
    readers = [(read_checkpoint, ConversionError)]
    if importlib.util.find_spec("fnl_backbones") is not None:
        from fnl_backbones.weights import WeightsFileError, read_state_dict

        readers.append((read_state_dict, WeightsFileError))
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    for read, error in readers:
        with pytest.raises(error) as info:
            read(path)
        message = str(info.value)
        assert "\n" not in message and "weights_only" not in message, message
        assert str(path) in message


def test_module_prefix_and_plain_state_dicts(tmp_path):
    path = tmp_path / "ddp.pt"
    torch.save({"module.a": torch.ones(2), "module.b": torch.zeros(1)}, path)
    assert sorted(read_checkpoint(path)) == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("w.ckpt", b"", "unknown checkpoint type"),
        ("w.pkl", pickle.dumps({"blobs": {}}), "Caffe2"),
        ("w.pkl", pickle.dumps([1, 2]), "expected a dict"),
        ("w.pkl", pickle.dumps({"model": {"a": 3}}), "not tensors"),
        ("w.safetensors", b"garbage", "safetensors"),
    ],
)
def test_bad_files_fail_clearly(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=message):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


def test_convert_command_refuses_a_missing_checkpoint_before_importing_torch(tmp_path):
    code = (
        "import sys; from fnl_core.cli import main; "
        f"rc = main(['convert', {str(tmp_path / 'nope.pth')!r}, '--spec', "
        f"'mobile_parsing_rcnn_b', '--out', {str(tmp_path / 'w.safetensors')!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert done.stderr.strip().endswith("nope.pth does not exist")
    assert len(done.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ strict loading
def test_checkpoint_for_another_spec_fails_listing_keys(tiny_model, tmp_path, tiny_components):
    _write_d2_pth(tiny_model, tmp_path / "m.pth")
    other = build_detector(tiny_spec(box_head={"type": "tiny_box", "dim": 24}))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ConversionError, match="mis-shaped") as info:
        load_weights(other, tmp_path / "m.pth")
    assert "roi_heads.box_head" in str(info.value)
    for key, value in other.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[key]), key


def test_extra_and_missing_keys_fail(tiny_model):
    state = to_reference_layout(tiny_model.state_dict())
    state["roi_heads.mask_head.predictor.weight"] = torch.zeros(3)
    del state["roi_heads.box_predictor.bbox_pred.bias"]
    with pytest.raises(ConversionError) as info:
        convert_state_dict(state, tiny_model)
    text = str(info.value)
    assert "roi_heads.mask_head.predictor.weight" in text
    assert "roi_heads.box_predictor.bbox_pred.bias" in text


def test_pixel_statistics_in_old_checkpoints_are_checked(tiny_model):
    state = to_reference_layout(tiny_model.state_dict())
    state["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    state["pixel_std"] = torch.ones(3, 1, 1)
    with pytest.raises(ConversionError, match=r"input\.pixel_mean"):
        convert_state_dict(state, tiny_model)
    state["pixel_mean"] = tiny_model.transform.pixel_mean.clone()
    state["pixel_std"] = tiny_model.transform.pixel_std.clone()
    _, mapping = convert_state_dict(state, tiny_model)
    assert mapping.normalisation == ["pixel_mean", "pixel_std"]


# ------------------------------------------------------------------ fnl convert
def test_convert_writes_safetensors_that_load(tiny_model, tmp_path, capsys):
    from safetensors import safe_open

    _write_d2_pth(tiny_model, tmp_path / "model_final.pth")
    spec_path = tmp_path / "spec.json"
    import json

    spec_path.write_text(json.dumps(tiny_spec()))
    parser = argparse.ArgumentParser()
    command.configure(parser)
    out = tmp_path / "w.safetensors"
    args = parser.parse_args(
        [str(tmp_path / "model_final.pth"), "--spec", str(spec_path), "--out", str(out)]
    )
    assert command.run(args) == 0
    assert "tensors mapped" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["source"] == "model_final.pth" and json.loads(meta["spec"])["backbone"]
    fresh = build_detector(tiny_spec()).eval()
    load_weights(fresh, out)
    assert torch.equal(_outputs(fresh)["scores"], _outputs(tiny_model)["scores"])


def test_convert_command_fails_on_a_misfit(tiny_model, tmp_path, capsys):
    _write_d2_pth(tiny_model, tmp_path / "m.pth")
    with pytest.raises(ConversionError):
        convert_checkpoint(
            tmp_path / "m.pth",
            tiny_spec(box_head={"type": "tiny_box", "dim": 24}),
            tmp_path / "w.safetensors",
        )
    assert not (tmp_path / "w.safetensors").exists()
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args([str(tmp_path / "m.pth"), "--spec", "x", "--out", "w.bin"])
    assert command.run(args) == 2
    assert ".safetensors" in capsys.readouterr().err


def test_numpy_scalars_and_buffers_are_read(tmp_path):
    buf = io.BytesIO()
    pickle.dump({"model": {"x": np.float32(2.0), "y": np.arange(3)}}, buf, protocol=5)
    (tmp_path / "s.pkl").write_bytes(buf.getvalue())
    state = read_checkpoint(tmp_path / "s.pkl")
    assert state["x"].item() == 2.0 and state["y"].tolist() == [0, 1, 2]
