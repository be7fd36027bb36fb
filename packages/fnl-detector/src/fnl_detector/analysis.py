"""Model size, FLOPs and latency helpers shared by ``fnl info`` and ``fnl bench``.

Benchmarking a randomly initialised detector needs care (docs: "Performance habits"): with
untrained BatchNorm statistics the activations blow up and NMS leaves one box. The benchmark
model is therefore prepared by :func:`prepare_benchmark_model`: score threshold 0, exactly K
detections per image, BatchNorm running statistics calibrated on the benchmark input (weights
stay random, compute is unchanged), and a check that K detections reach the DensePose head.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fnl_detector.build import build_detector
from fnl_detector.modeling.detector import DensePoseRCNN
from fnl_detector.spec import DetectorSpec, load_spec

#: Model parts reported by :func:`parameter_counts`: name -> submodule paths.
PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone",),
    "neck": ("neck",),
    "rpn": ("proposal_generator",),
    "box_head": ("roi_heads.box_head", "roi_heads.box_predictor"),
    "densepose_head": ("roi_heads.densepose_head", "roi_heads.densepose_predictor"),
}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``nn.Parameter`` counts (frozen-BN values are buffers, not counted): total and per part."""
    out = {"total": sum(p.numel() for p in model.parameters())}
    for part, paths in PARTS.items():
        out[part] = sum(p.numel() for path in paths for p in model.get_submodule(path).parameters())
    return out


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of every state-dict tensor (parameters and persistent buffers)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def feature_shapes(model: DensePoseRCNN) -> dict[str, dict[str, dict[str, int]]]:
    """Channels and strides of the backbone and neck outputs."""
    return {
        part: {
            name: {"channels": int(s.channels), "stride": int(s.stride)}
            for name, s in getattr(model, part).output_shape().items()
        }
        for part in ("backbone", "neck")
    }


def benchmark_image(size: int, seed: int = 0) -> Tensor:
    """A fixed RGB test image, ``size`` x ``round(4 size / 3)``: smooth colour blobs and noise
    (values 0..255), so that proposals spread like on a natural photo."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size, round(size * 4 / 3)
    low = torch.rand(1, 3, 6, 8, generator=gen)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
    img = img + 0.1 * torch.rand(3, h, w, generator=gen)
    return (img.clamp(0, 1) * 255).contiguous()


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    """Modules that normalise with running statistics (BatchNorm2d, frozen and fused kinds)."""
    out = []
    for m in model.modules():
        mean, var = getattr(m, "running_mean", None), getattr(m, "running_var", None)
        if isinstance(mean, Tensor) and isinstance(var, Tensor) and mean.dim() == 1:
            out.append(m)
    return out


@torch.no_grad()
def calibrate_batch_norm(model: DensePoseRCNN, images: Sequence[Tensor]) -> int:
    """Set every BatchNorm's running mean / (biased) variance from its own input on ``images``,
    in forward order (each layer sees the calibrated layers before it); variance >= 1e-3.
    Returns the number of layers set. The model is left in eval mode."""
    model.eval()
    done: set[int] = set()

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        if id(module) in done or not isinstance(x, Tensor) or x.dim() != 4:
            return
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False).clamp(min=1e-3))
        done.add(id(module))

    handles = [m.register_forward_pre_hook(hook) for m in _batch_norms(model)]
    try:
        model(list(images))
    finally:
        for h in handles:
            h.remove()
    return len(done)


def _bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """(scale, shift) with bn(x) = x * scale + shift in eval mode."""
    weight = (
        bn.weight if getattr(bn, "weight", None) is not None else torch.ones_like(bn.running_var)
    )
    bias = bn.bias if getattr(bn, "bias", None) is not None else torch.zeros_like(bn.running_mean)
    scale = weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bias - bn.running_mean * scale


def _after_bn(bn: nn.Module) -> nn.Module:
    """What is left of a BN module once folded: its fused dropout/activation (timm), if any."""
    rest = [getattr(bn, k) for k in ("drop", "act") if isinstance(getattr(bn, k, None), nn.Module)]
    rest = [m for m in rest if not isinstance(m, nn.Identity)]
    if not rest:
        return nn.Identity()
    return rest[0] if len(rest) == 1 else nn.Sequential(*rest)


@torch.no_grad()
def fold_batch_norm(model: DensePoseRCNN, images: Sequence[Tensor], *, rtol: float = 1e-3) -> int:
    """Fold every BatchNorm that directly follows a ``Conv2d`` into that conv (eval mode).

    Pairs are found by running the model once with hooks (a BN whose input tensor *is* a
    conv's output); each BN is replaced by its fused activation (or identity). The features
    (backbone + neck) before and after are compared on ``images``; on a mismatch the model is
    restored and a ``RuntimeError`` is raised. Returns the number of folded BNs.
    """
    model.eval()
    bns = {id(m) for m in _batch_norms(model)}
    names = {id(m): n for n, m in model.named_modules()}
    produced: dict[int, tuple[nn.Conv2d, Tensor]] = {}
    pairs: dict[int, tuple[nn.Conv2d, nn.Module]] = {}

    def conv_hook(module: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            produced[id(out)] = (module, out)

    def bn_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        hit = produced.get(id(args[0]))
        if hit is not None and hit[1] is args[0]:
            pairs.setdefault(id(module), (hit[0], module))

    handles = [
        m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)
    ]
    handles += [m.register_forward_pre_hook(bn_hook) for m in model.modules() if id(m) in bns]
    try:
        model(list(images))
    finally:
        for h in handles:
            h.remove()
        produced.clear()
    convs = [conv for conv, _ in pairs.values()]
    if len({id(c) for c in convs}) != len(convs):  # a conv feeding two BNs: leave all alone
        return 0
    batch = model.transform(list(images))[0]
    reference = model.extract_features(batch)
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    replaced: list[tuple[nn.Module, str, nn.Module, nn.Conv2d, Any]] = []
    for conv, bn in pairs.values():
        scale, shift = _bn_affine(bn)
        old_bias = conv.bias
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(shift)
        conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
        conv.bias = nn.Parameter(bias * scale + shift, requires_grad=conv.weight.requires_grad)
        parent_name, _, child = names[id(bn)].rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, _after_bn(bn))
        replaced.append((parent, child, bn, conv, old_bias))
    after = model.extract_features(batch)
    if not _features_close(reference, after, rtol):
        for parent, child, bn, conv, old_bias in replaced:
            setattr(parent, child, bn)
            conv.bias = old_bias
        model.load_state_dict(backup, strict=False)
        raise RuntimeError("folding BatchNorm changed the model's outputs; model restored")
    return len(replaced)


def _features_close(a: dict[str, Tensor], b: dict[str, Tensor], rtol: float) -> bool:
    """Every feature map equal up to ``rtol`` of its largest magnitude."""
    for k, x in a.items():
        scale = float(x.abs().max()) if x.numel() else 0.0
        if float((x - b[k]).abs().max()) > rtol * max(scale, 1e-6):
            return False
    return True


def benchmark_overrides(size: int, detections: int) -> list[str]:
    """Spec overrides of a latency benchmark: fixed input size, exactly K detections."""
    return [
        f"input.min_size_test={size}",
        f"input.max_size_test={max(1333, 2 * size)}",
        "test.score_thresh=0.0",
        f"test.detections_per_image={detections}",
    ]


def prepare_benchmark_model(
    spec: DetectorSpec | dict[str, Any] | str | Path,
    image: Tensor,
    detections: int,
    *,
    overrides: Sequence[str] = (),
    fold_bn: bool = True,
    channels_last: bool = False,
    device: str | torch.device = "cpu",
) -> DensePoseRCNN:
    """A model ready to time on ``image``: K forced detections (verified), BN calibrated, and
    optionally BN folded and channels_last."""
    size = min(image.shape[-2:])
    spec = load_spec(spec, [*overrides, *benchmark_overrides(size, detections)])
    model = build_detector(spec).to(device).eval()
    image = image.to(device)
    #: parameters as specified (folding BN adds conv biases)
    model.spec_params = parameter_counts(model)["total"]
    calibrate_batch_norm(model, [image])
    if fold_bn:
        fold_batch_norm(model, [image])
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    with torch.inference_mode():
        got = len(model([image])[0]["boxes"])
    if got != detections:
        raise RuntimeError(
            f"{spec.description or 'model'}: {got} detections reach the DensePose head instead "
            f"of {detections} (too few proposals survive NMS at this input size)"
        )
    return model


def time_models(
    models: Sequence[Callable[[], Any]],
    *,
    runs: int,
    warmup: int = 2,
    sync: Callable[[], None] = lambda: None,
) -> list[list[float]]:
    """Milliseconds of each call of each model, models alternating run by run."""
    for _ in range(warmup):
        for fn in models:
            fn()
    sync()
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for k, fn in enumerate(models):
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def count_flops(model: nn.Module, images: Sequence[Tensor]) -> int:
    """FLOPs (2 per multiply-add) of one inference pass, as counted by FlopCounterMode
    (convolutions, matmuls, ...; RoIAlign and NMS are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(list(images))
    return int(counter.get_total_flops())


__all__ = [
    "PARTS",
    "benchmark_image",
    "benchmark_overrides",
    "calibrate_batch_norm",
    "count_flops",
    "feature_shapes",
    "fold_batch_norm",
    "median",
    "parameter_counts",
    "prepare_benchmark_model",
    "state_dict_bytes",
    "time_models",
]
