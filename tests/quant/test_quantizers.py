"""PTQ / QAT quantizers on small modules shaped like detector parts (no detector needed)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from fnl_core import registry
from fnl_quant.artifact import load_quantized, read_metadata, save_quantized
from fnl_quant.config import PTQConfig, QATConfig
from fnl_quant.quantizers import quantization_plan

torch.set_num_threads(1)
warnings.filterwarnings("ignore", module="torch.ao")


def sqnr(ref: torch.Tensor, other: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - other).pow(2).mean()))


class FrozenBNAct(nn.Module):
    """Buffers-only BatchNorm with an activation, like fnl-backbones' frozen BN."""

    def __init__(self, c: int, act: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(c)
        self.register_buffer("weight", 1 + 0.1 * torch.rand(c, generator=g))
        self.register_buffer("bias", 0.1 * torch.randn(c, generator=g))
        self.register_buffer("running_mean", 0.1 * torch.randn(c, generator=g))
        self.register_buffer("running_var", 1 + 0.1 * torch.rand(c, generator=g))
        self.eps = 1e-5
        self.drop = nn.Identity()
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False)
        return self.act(self.drop(x))


class Block(nn.Module):
    """Inverted residual: 1x1 expand → dw 3x3 → 1x1 project (+ skip)."""

    def __init__(self, c: int, e: int) -> None:
        super().__init__()
        self.conv_pw, self.bn1 = nn.Conv2d(c, e, 1, bias=False), FrozenBNAct(e)
        self.conv_dw = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False)
        self.bn2 = FrozenBNAct(e)
        self.conv_pwl, self.bn3 = nn.Conv2d(e, c, 1, bias=False), FrozenBNAct(c, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        return self.bn3(self.conv_pwl(y)) + x


class HookedBackbone(nn.Module):
    """Features taken by a forward pre-hook on an inner conv (timm's "expansion" features):
    a symbolic trace of this module silently returns no features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(Block(8, 16), Block(8, 16))
        self.store: dict[str, torch.Tensor] = {}
        self.blocks[1].conv_pwl.register_forward_pre_hook(self._collect)

    def _collect(self, _m: nn.Module, args: tuple) -> None:
        self.store["expansion"] = args[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.blocks(self.stem(x))
        feats = dict(self.store)
        feats["out"] = out
        return feats


class Fusion(nn.Module):
    """BiFPN-style fast normalised fusion (kept float by type name)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weight)
        return (inputs[0] * w[0] + inputs[1] * w[1]) / (w.sum() + 1e-4)


class Neck(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.fuse = Fusion()
        self.out = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        a, b = self.l1(feats["fine"]), self.l2(feats["coarse"])
        up = F.interpolate(b, size=a.shape[-2:], mode="nearest")
        return {"p": self.out(self.fuse([a, up]))}


class ASPPHead(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c, c, 3, padding=d, dilation=d), nn.ReLU()) for d in (1, 2)]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(3 * c, c, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        pooled = F.interpolate(
            self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.project(torch.cat([*outs, pooled], 1))


class Predictor(nn.Module):
    """Not traceable as a whole (shape-dependent branch): its convs become one-layer units."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"a": self.a(x), "b": self.b(x)}
        if x.shape[-1] != 16:
            out = {k: F.interpolate(v, size=(16, 16)) for k, v in out.items()}
        return out


class TinyModel(nn.Module):
    """backbone (hooked) → float glue → neck (fusion) → head (ASPP) → predictor."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = HookedBackbone()
        self.neck = Neck()
        self.head = ASPPHead()
        self.predictor = Predictor()
        self.to_coarse = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        fine = feats["out"] + 0.0 * feats["expansion"].mean()
        p = self.neck({"fine": fine, "coarse": self.to_coarse(fine)})["p"]
        return {**self.predictor(self.head(p)), "expansion": feats["expansion"]}


PARTS = ["backbone", "neck", "head", "predictor"]


def is_int8(module: nn.Module) -> bool:
    return type(module).__module__.startswith(
        ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
    )


def images(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(n)]


def calibrated(config: PTQConfig, model: nn.Module | None = None) -> tuple[nn.Module, nn.Module]:
    model = (model or TinyModel()).eval()
    quantizer = config.build()
    return model, quantizer.quantize(model, images(4))


def size_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def test_registered_and_validated() -> None:
    assert set(registry.names("fnl.quantizers")) >= {"ptq", "qat"}
    assert registry.get("fnl.quantizers", "ptq") is PTQConfig
    with pytest.raises(ValidationError, match="num_calibration_images"):
        PTQConfig(num_calibration_images=0)
    with pytest.raises(ValidationError, match="backend"):
        PTQConfig(backend="tpu")
    with pytest.raises(ValidationError, match="freeze_observers_after"):
        QATConfig(freeze_bn_after=10, freeze_observers_after=5)


def test_units_skip_untraceable_and_keep_float_islands() -> None:
    model = TinyModel().eval()
    config = PTQConfig(parts=PARTS, float_module_types=["Fusion"])
    prepared = config.build().prepare(model, images(1)[0])
    units = quantization_plan(prepared)["units"]
    # the hooked backbone traces to a graph without its hooked feature: its children are used
    assert "backbone" not in units and "backbone.blocks" in units
    assert "neck" in units and "head" in units
    assert "predictor" not in units and {"predictor.a", "predictor.b"} <= set(units)
    int8 = config.build().convert(prepared)
    # the fusion op and the image-pooling branch stay float modules
    assert type(int8.neck.fuse).__name__ == "Fusion"
    assert isinstance(int8.head.pool[1], nn.Conv2d)
    assert is_int8(int8.get_submodule("head.project.0"))
    assert is_int8(int8.get_submodule("backbone.blocks.0.conv_pw"))


def test_ptq_keeps_outputs_hooks_and_shrinks() -> None:
    model, int8 = calibrated(PTQConfig(parts=PARTS, float_module_types=["Fusion"]))
    x = images(1, seed=5)[0]
    with torch.no_grad():
        ref, got = model(x), int8(x)
    assert ref.keys() == got.keys()
    for k in ref:
        assert got[k].shape == ref[k].shape and not got[k].is_quantized
        assert sqnr(ref[k], got[k]) > 20, k
    # the pre-hook feature comes from the int8 conv's (dequantized) input, not a stale tensor
    assert got["expansion"].data_ptr() != ref["expansion"].data_ptr()


def test_int8_weights_are_smaller() -> None:
    torch.manual_seed(0)
    wide = nn.Sequential(
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()
    ).eval()
    int8 = PTQConfig(parts=[""]).build().quantize(wide, [torch.randn(1, 64, 8, 8)])
    assert size_bytes(int8) < 0.35 * size_bytes(wide)


def test_frozen_batch_norm_is_folded() -> None:
    _, int8 = calibrated(PTQConfig(parts=["backbone"]))
    assert not any(type(m).__name__ == "FrozenBNAct" for m in int8.backbone.blocks.modules())
    conv_pw = int8.get_submodule("backbone.blocks.0.conv_pw")
    assert "ConvReLU" in type(conv_pw).__name__  # conv + folded BN + ReLU fused


def test_whole_model_part_and_calibration_count() -> None:
    head = ASPPHead().eval()
    quantizer = PTQConfig(parts=[""], num_calibration_images=2).build()
    prepared = quantizer.prepare(head, torch.randn(2, 8, 16, 16))
    assert quantizer.calibrate(prepared, [torch.randn(2, 8, 16, 16) for _ in range(5)]) == 2
    int8 = quantizer.convert(prepared)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert sqnr(head(x), int8(x)) > 20


def test_bad_parts_and_missing_inputs() -> None:
    quantizer = PTQConfig(parts=["backbone", "nope"]).build()
    with pytest.raises(ValueError, match="nope"):
        quantizer.prepare(TinyModel(), images(1)[0])
    with pytest.raises(ValueError, match="example_inputs"):
        PTQConfig(parts=["backbone"]).build().prepare(TinyModel())
    with pytest.raises(ValueError, match="prepare"):
        PTQConfig().build().convert(TinyModel())


def test_save_and_load_weights_only(tmp_path) -> None:
    config = PTQConfig(parts=PARTS, float_module_types=["Fusion"])
    _, int8 = calibrated(config)
    save_quantized(int8, tmp_path, config, extra={"note": "tiny"})
    meta = read_metadata(tmp_path)
    assert meta["quantizer"]["type"] == "ptq" and meta["note"] == "tiny"
    fresh = TinyModel()  # other (random) float weights: every value must come from the file
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_quantized(fresh, tmp_path)
    assert not [w for w in caught if "TypedStorage" in str(w.message)]  # torch's, not ours
    x = images(1, seed=7)[0]
    with torch.no_grad():
        a, b = int8(x), loaded(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


class QATNet(nn.Module):
    """conv+BN+ReLU stack with trainable BN, returning a loss dict in training mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        y = self.out(self.body(x))
        if self.training:
            return {"loss": F.mse_loss(y, target)}
        return y


def test_qat_trains_freezes_and_converts() -> None:
    model = QATNet()
    config = QATConfig(
        parts=["body", "out"], iterations=30, lr=0.05, freeze_bn_after=10, freeze_observers_after=20
    )
    quantizer = config.build()
    x = torch.rand(4, 3, 16, 16)
    target = x.mean(1, keepdim=True)
    prepared = quantizer.prepare(model, x)
    fused = [m for m in prepared.modules() if type(m).__name__ == "ConvBnReLU2d"]
    assert len(fused) == 2  # QAT keeps BN inside the fused conv until conversion
    losses = quantizer.fit(prepared, ((x, target) for _ in range(100)))
    assert len(losses) == 30 and losses[-1] < losses[0]
    assert all(m.freeze_bn for m in fused)  # BN statistics frozen
    with torch.no_grad():
        fake = prepared.eval()(x)
    int8 = quantizer.convert(prepared)
    assert is_int8(int8.get_submodule("body.0"))
    with torch.no_grad():
        got = int8(x)
    assert got.shape == (4, 1, 16, 16)
    assert sqnr(fake, got) > 20
