"""TimmBackbone: outputs, parameter counts, frozen BN, freezing, gradients, export, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fnl_backbones.norm import FrozenBatchNormAct2d, count_parameters
from fnl_backbones.timm_backbone import TimmBackbone
from fnl_core.spec import ShapeSpec

B_SHAPES = {
    "c2": ShapeSpec(72, 4),
    "c3": ShapeSpec(120, 8),
    "c4": ShapeSpec(288, 16),
    "c5": ShapeSpec(1152, 32),
}


def _shapes(out: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in out.items()}


def test_mobile_b_outputs(mobile_b):
    assert mobile_b.output_shape() == B_SHAPES
    with torch.inference_mode():
        out = mobile_b(torch.randn(2, 3, 64, 96))
    assert list(out) == ["c2", "c3", "c4", "c5"]
    assert _shapes(out) == {
        "c2": (2, 72, 16, 24),
        "c3": (2, 120, 8, 12),
        "c4": (2, 288, 4, 6),
        "c5": (2, 1152, 2, 3),
    }


def test_mobile_b_parameter_count_and_frozen_bn(mobile_b):
    assert count_parameters(mobile_b) == 2_691_512
    bns = [m for m in mobile_b.modules() if isinstance(m, FrozenBatchNormAct2d)]
    assert len(bns) == 63  # the reference checkpoint's 63 trunk BatchNorms
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in mobile_b.modules())
    params = {id(p) for p in mobile_b.parameters()}
    for bn in bns:
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(bn, name)
            assert not isinstance(t, nn.Parameter) and id(t) not in params
    # the fused activations survive freezing: every ReLU of the trunk is still there
    acts = [bn.act for bn in bns if not isinstance(bn.act, nn.Identity)]
    assert len(acts) == sum(isinstance(m, nn.ReLU) for m in mobile_b.modules()) > 40


def test_mobile_a_stage_outputs_and_count(build):
    bb = build(model_name="spnasnet_100", stages=[1, 2, 3, 5])
    assert bb.output_shape() == {
        "c2": ShapeSpec(24, 4),
        "c3": ShapeSpec(40, 8),
        "c4": ShapeSpec(80, 16),
        "c5": ShapeSpec(192, 32),
    }
    assert count_parameters(bb) == 2_091_320
    assert len(bb.body.blocks) == 6  # stage 6 and the head are pruned
    with torch.inference_mode():
        out = bb.eval()(torch.randn(1, 3, 64, 64))
    assert _shapes(out) == {
        "c2": (1, 24, 16, 16),
        "c3": (1, 40, 8, 8),
        "c4": (1, 80, 4, 4),
        "c5": (1, 192, 2, 2),
    }


def test_resnet50_body(build):
    bb = build(model_name="resnet50")
    assert count_parameters(bb) == 23_454_912
    assert bb.output_shape() == {
        "c2": ShapeSpec(256, 4),
        "c3": ShapeSpec(512, 8),
        "c4": ShapeSpec(1024, 16),
        "c5": ShapeSpec(2048, 32),
    }
    assert bb.freeze_at == 1 and bb.frozen_parts == ["conv1", "bn1", "act1", "maxpool", "layer1"]
    with torch.inference_mode():
        out = bb.eval()(torch.randn(1, 3, 32, 32))
    assert _shapes(out)["c5"] == (1, 2048, 1, 1)


def test_stride_in_1x1_moves_resnet_downsampling(build):
    msra = build(model_name="resnet26", stride_in_1x1=True)
    plain = build(model_name="resnet26")
    block = msra.body.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert plain.body.layer2[0].conv2.stride == (2, 2)
    assert msra.output_shape() == plain.output_shape()
    assert count_parameters(msra) == count_parameters(plain)
    with torch.inference_mode():
        out = msra.eval()(torch.randn(1, 3, 64, 64))
    assert _shapes(out)["c3"] == (1, 512, 8, 8)
    with pytest.raises(ValueError, match="needs a ResNet"):
        build(model_name="tf_mobilenetv3_small_minimal_100", stride_in_1x1=True)


def test_prune_feature_model_and_keep_option(build):
    name = "tf_mobilenetv3_small_minimal_100"
    pruned = build(model_name=name, out_indices=[1, 2])
    full = build(model_name=name, out_indices=[1, 2], prune=False)
    assert list(pruned.output_shape()) == ["c2", "c3"]
    assert len(pruned.body.blocks) == 2 and len(full.body.blocks) == 6
    assert count_parameters(pruned) < count_parameters(full)


def test_frozen_bn_equals_trainable_bn_in_eval(mobile_b, build, randomize_batch_norm):
    trainable = build(model_name="spnasnet_100", feature_location="expansion", norm="bn")
    randomize_batch_norm(trainable)
    frozen = mobile_b  # same architecture with frozen BN; takes the trainable model's values
    # same state-dict keys as trainable BN (num_batches_tracked included): checkpoints move freely
    assert list(frozen.state_dict()) == list(trainable.state_dict())
    missing = frozen.load_state_dict(trainable.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = trainable.eval()(x), frozen.eval()(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.all(b["c2"] >= 0)  # the expansion feature ends with the fused ReLU
    # training mode does not change frozen BN (statistics are fixed)
    with torch.no_grad():
        c = frozen.train()(x)
    frozen.eval()
    for k in a:
        assert torch.equal(c[k], b[k]), k


def test_sync_bn_keeps_activation_and_values(build, randomize_batch_norm):
    ref = build(model_name="tf_mobilenetv3_small_100", stages=[0, 1, 2, 4], norm="bn")
    randomize_batch_norm(ref)
    sync = build(
        model_name="tf_mobilenetv3_small_100", stages=[0, 1, 2, 4], norm="sync_bn", freeze_at=0
    )
    sync.load_state_dict(ref.state_dict())
    syncs = [m for m in sync.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert syncs and all(m.eps == 1e-3 and m.momentum == 0.01 for m in syncs)
    assert any(not isinstance(getattr(m, "act", nn.Identity()), nn.Identity) for m in syncs)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = ref.eval()(x), sync.eval()(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bn_norm_is_trainable_with_tf_defaults_and_frozen_stages(build):
    bb = build(model_name="tf_mobilenetv3_small_100", stages=[0, 1, 2, 4], norm="bn")
    assert bb.freeze_at == 1  # stride 4 is reached in blocks.0
    trainable = [m for m in bb.modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = [m for m in bb.modules() if isinstance(m, FrozenBatchNormAct2d)]
    assert trainable and frozen  # BNs of the frozen stem/stage 0 are frozen, the others train
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in trainable)
    assert all(m.eps == 1e-3 for m in frozen)
    assert count_parameters(bb) > 859_600
    plain = build(model_name="mobilenetv3_small_050", stages=[0, 1, 2, 4], norm="bn", bn_eps=2e-5)
    bns = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 and m.eps == 2e-5 for m in bns)


def _grad_check(bb: TimmBackbone, frozen_prefixes: tuple[str, ...]) -> None:
    bb.train()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = bb(x)
    sum(v.float().mean() for v in out.values()).backward()
    n_frozen = 0
    for name, p in bb.body.named_parameters():
        is_frozen = name.startswith(frozen_prefixes)
        n_frozen += is_frozen
        assert p.requires_grad is not is_frozen, name
        if is_frozen:
            assert p.grad is None, name
        else:
            assert p.grad is not None, name
    assert n_frozen > 0


def test_gradients_reach_every_trainable_parameter(mobile_b):
    bb = mobile_b
    assert bb.freeze_at == 2
    assert bb.frozen_parts == ["conv_stem", "bn1", "blocks.0", "blocks.1"]
    # the last conv_pwl feeds no output; it is kept in the graph with a zero-weighted term
    assert bb.unused_parameters == ["blocks.6.0.conv_pwl.weight"]
    try:
        _grad_check(bb, ("conv_stem.", "bn1.", "blocks.0.", "blocks.1."))
        grad = bb.body.get_parameter("blocks.6.0.conv_pwl.weight").grad
        assert grad is not None and torch.count_nonzero(grad) == 0
        # the extra term is numerically a no-op
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            ev = bb.eval()(x)
        tr = bb.train()(x)
        for k in ev:
            assert torch.equal(ev[k], tr[k].detach()), k
    finally:
        bb.zero_grad(set_to_none=True)
        bb.eval()


def test_freeze_at_options(build):
    name = "tf_mobilenetv3_small_minimal_100"
    bb = build(model_name=name, stages=[0, 1, 2, 4], freeze_at=3, norm="bn")
    _grad_check(bb, ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2."))
    none = build(model_name=name, stages=[0, 1, 2, 4], freeze_at=0)
    assert none.frozen_parts == []
    assert all(p.requires_grad for p in none.parameters())
    with pytest.raises(ValueError, match="only 5 stages"):
        build(model_name=name, stages=[0, 1, 2, 4], freeze_at=6)


def test_torch_export(mobile_b):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = mobile_b(x)
        program = torch.export.export(mobile_b, (x,))
        out = program.module()(x)
    assert list(out) == list(ref)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k])


def test_build_in_inference_mode(build):
    with torch.inference_mode():
        bb = build(model_name="tf_mobilenetv3_small_minimal_100", stages=[0, 1, 2, 4])
        out = bb.eval()(torch.randn(1, 3, 64, 64))
    assert bb.unused_parameters == [] and list(out) == ["c2", "c3", "c4", "c5"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_torch_jit_trace_stage_model(build):
    bb = build(model_name="tf_mobilenetv3_small_100", stages=[0, 1, 2, 4]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(bb, x, strict=False, check_trace=False)
        ref, out = bb(x), traced(x)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_name": "spnasnet_101"}, "similar timm models: .*spnasnet_100"),
        ({"model_name": "spnasnet_100", "out_indices": [1, 7]}, r"out of range.*5 features"),
        ({"model_name": "resnet50", "feature_location": "expansion"}, "does not support"),
        ({"model_name": "resnet18", "stages": [1, 2]}, "use out_indices"),
        ({"model_name": "spnasnet_100", "stages": [1, 9]}, r"out of range.*7 stages"),
        ({"model_name": "spnasnet_100", "stages": [3, 4]}, "share a stride"),
        ({"model_name": "spnasnet_100", "feature_location": "bottleneck"}, "feature_location"),
        ({"model_name": "spnasnet_100", "norm": "gn"}, "norm must be"),
    ],
)
def test_invalid_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        TimmBackbone(**options)
