"""Quantization units: the largest FX-traceable submodules of each model part.

A detector is not one traceable graph (proposal selection, NMS and RoI pooling are
data-dependent Python), and its parts are not all traceable either: timm's
``feature_location="expansion"`` backbones collect their outputs with forward pre-hooks, and a
symbolic trace of such a model silently returns nothing. So the model is cut into *units*:

1. one float pass on an example input records every submodule's first input;
2. starting at each part, a submodule is a unit when ``torch.fx`` traces it and the traced
   graph gives the module's own output on the recorded input (a wrong trace, like the hooked
   timm body, is caught here); otherwise its children are tried. A lone Conv/Linear leaf becomes
   a one-layer unit;
3. each unit is traced again, frozen BatchNorm-like modules (buffers only, e.g. the backbones'
   frozen BN) are folded into the conv before them, and FX graph-mode quantization prepares it.
   A unit takes and returns float tensors: between units, and around float islands (RPN
   outputs, RoI pooling, fusion weights, image pooling), the model runs in float;
4. forward (pre-)hooks registered on modules inside a unit are re-attached to the modules
   that replace them (fused, QAT, quantized), called with dequantized tensors: the paper's
   mechanism that keeps the BiFPN's expansion-feature hooks working after quantization.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.utils._pytree import tree_flatten, tree_map

#: Layers worth quantizing: a unit must contain at least one.
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def is_frozen_batch_norm(module: nn.Module) -> bool:
    """BatchNorm with fixed statistics held in buffers (no parameters), any class."""
    if isinstance(module, _BatchNorm) or any(True for _ in module.parameters(recurse=False)):
        return False
    names = ("running_mean", "running_var", "weight", "bias")
    return all(isinstance(getattr(module, n, None), Tensor) for n in names) and hasattr(
        module, "eps"
    )


def join(prefix: str, name: str) -> str:
    """Qualified name of ``name`` under ``prefix`` (either may be empty)."""
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class FloatIslands:
    """Which submodules stay float: by class name, by qualified name, image-pooling branches."""

    module_types: Sequence[str] = ()
    module_names: Sequence[str] = ()
    pooling_branches: bool = True

    def is_float(self, name: str, module: nn.Module) -> bool:
        if type(module).__name__ in self.module_types or _matches(name, self.module_names):
            return True
        if self.pooling_branches and isinstance(module, nn.Sequential) and len(module) > 1:
            return isinstance(module[0], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
        return False


class UnitTracer(fx.Tracer):
    """Keeps frozen BatchNorms and float islands as single ``call_module`` nodes."""

    def __init__(self, islands: FloatIslands, prefix: str) -> None:
        super().__init__()
        self.islands = islands
        self.prefix = prefix

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_frozen_batch_norm(m) or self.islands.is_float(join(self.prefix, qualname), m):
            return True
        return super().is_leaf_module(m, qualname)


def unit_module(module: nn.Module) -> nn.Module:
    """The module a unit traces: a lone quantizable leaf is wrapped in a Sequential."""
    return nn.Sequential(module) if isinstance(module, QUANTIZABLE) else module


def trace(module: nn.Module, islands: FloatIslands, prefix: str) -> fx.GraphModule:
    root = unit_module(module)
    tracer = UnitTracer(islands, prefix)
    return fx.GraphModule(root, tracer.trace(root), type(root).__name__)


# ---------------------------------------------------------------------- recording inputs
def _clone(tree: Any) -> Any:
    return tree_map(lambda t: t.detach().clone() if isinstance(t, Tensor) else t, tree)


def record_inputs(
    model: nn.Module, roots: Sequence[str], run: Callable[[], Any]
) -> dict[str, tuple[tuple, dict]]:
    """First (args, kwargs) of every submodule under ``roots`` during ``run()``."""
    seen: dict[str, tuple[tuple, dict]] = {}
    handles = []

    def hook_for(name: str) -> Callable:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if name not in seen:
                seen[name] = _clone((args, kwargs))

        return hook

    for root in roots:
        for sub, m in model.get_submodule(root).named_modules(prefix=root):
            handles.append(m.register_forward_pre_hook(hook_for(sub), with_kwargs=True))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def _same_outputs(a: Any, b: Any) -> bool:
    fa, sa = tree_flatten(a)
    fb, sb = tree_flatten(b)
    if sa != sb or not fa:
        return False
    for x, y in zip(fa, fb):
        if isinstance(x, Tensor) != isinstance(y, Tensor):
            return False
        if isinstance(x, Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            tol = 1e-5 * max(float(x.abs().max()) if x.numel() else 0.0, 1.0)
            if x.numel() and float((x.float() - y.float()).abs().max()) > tol:
                return False
        elif x != y:
            return False
    return True


def _has_quantizable(module: nn.Module, name: str, islands: FloatIslands) -> bool:
    return any(
        isinstance(m, QUANTIZABLE) and not islands.is_float(n, m)
        for n, m in module.named_modules(prefix=name)
    )


def traces_correctly(
    module: nn.Module, name: str, example: tuple[tuple, dict], islands: FloatIslands
) -> bool:
    """True when the FX trace of ``module`` reproduces its output on ``example``."""
    try:
        gm = trace(module, islands, name)
        for args, kwargs in (example, _perturbed(example)):
            with torch.no_grad():
                expected = module(*_clone(args), **_clone(kwargs))
                got = gm(*_clone(args), **_clone(kwargs))
            if not _same_outputs(expected, got):
                return False
    except Exception:
        return False
    return True


def _perturbed(example: tuple[tuple, dict]) -> tuple[tuple, dict]:
    """The example with its float tensors changed, so a trace that baked a tensor in as a
    constant (state left by an earlier call, such as a hook's feature store) is caught."""
    gen = torch.Generator().manual_seed(0)

    def change(t: Any) -> Any:
        if isinstance(t, Tensor) and t.is_floating_point():
            return t * 0.75 + 0.1 * torch.randn(t.shape, generator=gen, dtype=t.dtype)
        return t

    return tree_map(change, example)


def plan_units(
    model: nn.Module,
    parts: Sequence[str],
    inputs: dict[str, tuple[tuple, dict]],
    islands: FloatIslands,
) -> list[str]:
    """Qualified names of the units, top-down from each part (see the module docstring)."""
    units: list[str] = []

    def visit(name: str, module: nn.Module) -> None:
        if name not in inputs or islands.is_float(name, module):
            return
        if not _has_quantizable(module, name, islands):
            return
        if traces_correctly(module, name, inputs[name], islands):
            units.append(name)
            return
        for child, sub in module.named_children():
            visit(join(name, child), sub)

    for part in parts:
        visit(part, model.get_submodule(part))
    return units


# ---------------------------------------------------------------------- folding
def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _bn_tail(bn: nn.Module) -> list[nn.Module]:
    """What a frozen BN-with-activation module applies after normalising (timm's drop, act)."""
    tail = [getattr(bn, a, None) for a in ("drop", "act")]
    return [m for m in tail if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]


def _as_batch_norm(bn: nn.Module) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.running_mean.numel(), eps=float(bn.eps)).eval()
    with torch.no_grad():
        for attr in ("running_mean", "running_var", "weight", "bias"):
            getattr(out, attr).copy_(getattr(bn, attr))
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def fold_frozen_batch_norms(gm: fx.GraphModule) -> int:
    """Fold every frozen BN fed only by a Conv2d into that conv; others become ``BatchNorm2d``.

    The BN's activation (timm's ``BatchNormAct2d``) stays as a module after the conv, so FX
    fuses conv + ReLU. Returns the number of folded BNs.
    """
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not is_frozen_batch_norm(modules[node.target]):
            continue
        bn = modules[node.target]
        src = node.args[0]
        conv = (
            modules.get(src.target)
            if isinstance(src, fx.Node) and src.op == "call_module"
            else None
        )
        tail = _bn_tail(bn)
        if type(conv) is nn.Conv2d and len(src.users) == 1:
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean,
                bn.running_var,
                float(bn.eps),
                bn.weight,
                bn.bias,
            )
            conv.bias.requires_grad_(conv.weight.requires_grad)
            folded += 1
            if not tail:
                node.replace_all_uses_with(src)
                gm.graph.erase_node(node)
                _set_submodule(gm, node.target, nn.Identity())
                continue
            _set_submodule(gm, node.target, nn.Sequential(*tail))
        else:
            _set_submodule(gm, node.target, nn.Sequential(_as_batch_norm(bn), *tail))
    gm.graph.lint()
    gm.recompile()
    return folded


# ---------------------------------------------------------------------- hooks
def _dequantize(tree: Any) -> Any:
    return tree_map(
        lambda t: t.dequantize() if isinstance(t, Tensor) and t.is_quantized else t, tree
    )


@dataclass
class ModuleHooks:
    """Forward pre-hooks and forward hooks of one module, with their ``with_kwargs`` flags."""

    pre: list[tuple[Callable, bool]] = field(default_factory=list)
    post: list[tuple[Callable, bool]] = field(default_factory=list)

    @classmethod
    def of(cls, m: nn.Module) -> ModuleHooks:
        pre_kw = getattr(m, "_forward_pre_hooks_with_kwargs", {})
        post_kw = getattr(m, "_forward_hooks_with_kwargs", {})
        return cls(
            pre=[(h, k in pre_kw) for k, h in m._forward_pre_hooks.items()],
            post=[(h, k in post_kw) for k, h in m._forward_hooks.items()],
        )

    def __bool__(self) -> bool:
        return bool(self.pre or self.post)


def collect_hooks(module: nn.Module) -> dict[str, ModuleHooks]:
    """Hooks of every submodule (relative names; ``""`` is ``module`` itself)."""
    found = {name: ModuleHooks.of(m) for name, m in module.named_modules()}
    return {name: h for name, h in found.items() if h}


def _originals(m: nn.Module) -> set[int]:
    hooks = [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]
    return {id(getattr(h, "__wrapped__", h)) for h in hooks}


class DequantizingHook:
    """A recorded hook re-attached to a quantized module: it sees dequantized tensors.

    A callable object rather than a closure, so that ``copy.deepcopy`` of the model copies the
    hook together with whatever it is bound to (timm's feature collector).
    """

    def __init__(self, hook: Callable, pre: bool, with_kwargs: bool) -> None:
        self.__wrapped__ = hook
        self.pre = pre
        self.with_kwargs = with_kwargs

    def __call__(self, module: nn.Module, *args: Any) -> Any:
        return self.__wrapped__(module, *(_dequantize(a) for a in args))


def restore_hooks(module: nn.Module, hooks: dict[str, ModuleHooks]) -> int:
    """Re-attach recorded hooks to the modules now at those names (skipping ones still there).

    Hooks see dequantized tensors; a hook on a module that no longer exists (folded away) is
    an error, since the feature it collected would silently vanish.
    """
    present = dict(module.named_modules())
    attached = 0
    for name, recorded in hooks.items():
        target = present.get(name)
        if target is None:
            raise RuntimeError(
                f"quantization removed module {name!r}, which has forward hooks; keep it "
                "float (float_modules) so that its hooks keep working"
            )
        have = _originals(target)
        for hook, kw in recorded.pre:
            if id(hook) not in have:
                target.register_forward_pre_hook(DequantizingHook(hook, True, kw), with_kwargs=kw)
                attached += 1
        for hook, kw in recorded.post:
            if id(hook) not in have:
                target.register_forward_hook(DequantizingHook(hook, False, kw), with_kwargs=kw)
                attached += 1
    return attached


def iter_calls(model: nn.Module, inputs: Iterable[Any]) -> int:
    """Run ``model`` on each input (a tuple is unpacked into arguments); returns the count."""
    n = 0
    for item in inputs:
        model(*item) if isinstance(item, tuple) else model(item)
        n += 1
    return n


__all__ = [
    "QUANTIZABLE",
    "DequantizingHook",
    "FloatIslands",
    "ModuleHooks",
    "UnitTracer",
    "collect_hooks",
    "fold_frozen_batch_norms",
    "is_frozen_batch_norm",
    "iter_calls",
    "join",
    "plan_units",
    "record_inputs",
    "restore_hooks",
    "trace",
    "traces_correctly",
    "unit_module",
]
