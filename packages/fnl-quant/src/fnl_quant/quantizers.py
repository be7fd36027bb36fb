"""Post-training (static int8) and quantization-aware quantizers built on FX graph mode.

Both follow ``prepare`` → (``calibrate`` | ``fit``) → ``convert``; see :mod:`fnl_quant.units`
for how a model is cut into quantized units with float islands between them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fnl_quant.units import (
    QUANTIZABLE,
    FloatIslands,
    ModuleHooks,
    collect_hooks,
    fold_frozen_batch_norms,
    iter_calls,
    join,
    plan_units,
    record_inputs,
    restore_hooks,
    trace,
)

#: Layers kept float per backend. torch 2.15's x86/fbgemm int8 transposed convolution returns
#: wrong values (SQNR about -3 dB against float on the DensePose predictor, 37 dB with
#: qnnpack), so the chart predictor's deconvolutions stay float there.
X86_FLOAT_TYPES = {"x86": ["ConvTranspose2d"], "fbgemm": ["ConvTranspose2d"]}

#: Attribute of a prepared/converted model describing its quantization (JSON-ready).
PLAN_ATTR = "fnl_quantization"


@contextmanager
def quiet() -> Iterator[None]:
    """Silence torch.ao's deprecation notices and empty-observer warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def set_engine(backend: str) -> None:
    """Select the quantized kernel library (``x86``, ``fbgemm``, ``qnnpack``) for this process."""
    engines = torch.backends.quantized.supported_engines
    if backend not in engines:
        raise ValueError(
            f"quantization backend {backend!r} is not available in this torch build; "
            f"supported: {', '.join(e for e in engines if e != 'none')}"
        )
    torch.backends.quantized.engine = backend


_HOOKS_KEY = "fnl_quantization_hooks"


def _store(model: nn.Module, key: str, value: Any) -> None:
    # a GraphModule's deepcopy keeps only its ``meta`` dict of extra attributes
    if isinstance(model, torch.fx.GraphModule):
        model.meta[key] = value
    else:
        setattr(model, key, value)


def _load(model: nn.Module, key: str) -> Any:
    if isinstance(model, torch.fx.GraphModule):
        return model.meta.get(key)
    return getattr(model, key, None)


def quantization_plan(model: nn.Module) -> dict[str, Any] | None:
    """What a quantizer recorded on a prepared/converted model (method, backend, units), or
    None for a model no quantizer touched."""
    return _load(model, PLAN_ATTR)


def _replace(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``name`` in ``root``; returns the new root (``module`` when name is '')."""
    if not name:
        return module
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
    return root


class Quantizer:
    """Shared machinery of :class:`PostTrainingQuantizer` and :class:`QATQuantizer`.

    Args:
        backend: quantized kernels (``x86``/``fbgemm`` for servers, ``qnnpack`` for ARM).
        parts: qualified names of the submodules to quantize (``""``: the whole model).
        float_module_types: class names kept float (run on dequantized tensors).
        float_modules: fnmatch patterns of qualified module names kept float.
        float_pooling_branches: keep Sequentials starting with a global pooling float.
        float_resampling: run ``F.interpolate`` on dequantized tensors.
    """

    is_qat = False

    def __init__(
        self,
        *,
        backend: str = "x86",
        parts: Sequence[str] = ("",),
        float_module_types: Sequence[str] = (),
        float_modules: Sequence[str] = (),
        float_pooling_branches: bool = True,
        float_resampling: bool = True,
    ) -> None:
        self.backend = backend
        self.parts = list(parts)
        types = list(float_module_types)
        if backend in X86_FLOAT_TYPES:
            types += [t for t in X86_FLOAT_TYPES[backend] if t not in types]
        self.islands = FloatIslands(
            module_types=types,
            module_names=list(float_modules),
            pooling_branches=float_pooling_branches,
        )
        self.float_resampling = float_resampling

    # ------------------------------------------------------------------ configuration
    def _qconfig_mapping(self) -> Any:
        from torch.ao.quantization import (
            get_default_qat_qconfig_mapping,
            get_default_qconfig_mapping,
        )

        make = get_default_qat_qconfig_mapping if self.is_qat else get_default_qconfig_mapping
        mapping = make(self.backend)
        # never set torch.cat to None here: FX would pass int8 tensors with different scales to
        # a float cat (wrong values); by default it gives every input of a cat one shared scale
        if self.float_resampling:
            import torch.nn.functional as F

            mapping.set_object_type(F.interpolate, None)
            mapping.set_object_type(nn.Upsample, None)
        return mapping

    def _check_parts(self, model: nn.Module) -> list[str]:
        names = {n for n, _ in model.named_modules()}
        missing = [p for p in self.parts if p not in names]
        if missing:
            tops = ", ".join(n for n, _ in model.named_children())
            raise ValueError(
                f"quantizer parts {missing} are not submodules of {type(model).__name__} "
                f"(its children: {tops})"
            )
        return self.parts

    # ------------------------------------------------------------------ prepare
    def prepare(
        self,
        model: nn.Module,
        example_inputs: Any = None,
        *,
        units: Sequence[str] | None = None,
    ) -> nn.Module:
        """A copy of ``model`` with observers (PTQ) or fake quantization (QAT) in every unit.

        ``example_inputs`` (a tuple of arguments, or one argument) drives one float pass in
        eval mode that finds the units; ``units`` skips that search (rebuilding a saved model).
        """
        from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
        from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

        set_engine(self.backend)
        parts = self._check_parts(model)
        was_training = model.training
        model = copy.deepcopy(model).eval()
        if units is None:
            if example_inputs is None:
                raise ValueError("prepare() needs example_inputs to find the quantization units")
            # tracing may leave state behind (a failed trace of timm's hooked body stores
            # proxies in its feature dict), so the search runs on a throwaway copy
            probe = copy.deepcopy(model)
            with torch.no_grad():
                inputs = record_inputs(probe, parts, lambda: iter_calls(probe, [example_inputs]))
                units = plan_units(probe, parts, inputs, self.islands)
            del probe, inputs
        if not units:
            raise ValueError(
                f"nothing to quantize in parts {parts}: no traceable submodule with a "
                "Conv/Linear layer ran on the example input"
            )
        mapping = self._qconfig_mapping()
        unit_hooks: dict[str, dict[str, ModuleHooks]] = {}
        for name in units:
            module = model.get_submodule(name)
            gm = trace(module, self.islands, name)
            hooks = collect_hooks(gm)
            if gm is not module and ModuleHooks.of(module) and not isinstance(module, QUANTIZABLE):
                hooks[""] = ModuleHooks.of(module)
            fold_frozen_batch_norms(gm)
            custom = PrepareCustomConfig()
            floats = [
                (rel, m)
                for rel, m in gm.named_modules()
                if rel and self.islands.is_float(join(name, rel), m)
            ]
            custom.set_non_traceable_module_names([rel for rel, _ in floats])
            unit_mapping = copy.deepcopy(mapping)
            for rel, _ in floats:
                unit_mapping.set_module_name(rel, None)
            gm.train(self.is_qat)
            with quiet():
                prepare = prepare_qat_fx if self.is_qat else prepare_fx
                prepared = prepare(
                    gm, unit_mapping, example_inputs=(), prepare_custom_config=custom
                )
            restore_hooks(prepared, hooks)
            unit_hooks[name] = hooks
            model = _replace(model, name, prepared)
        model.train(was_training and self.is_qat)
        _store(model, PLAN_ATTR, self.describe(list(units)))
        _store(model, _HOOKS_KEY, unit_hooks)
        return model

    def describe(self, units: list[str]) -> dict[str, Any]:
        return {"method": "qat" if self.is_qat else "ptq", "backend": self.backend, "units": units}

    # ------------------------------------------------------------------ convert
    def convert(self, model: nn.Module) -> nn.Module:
        """Turn a prepared model into its int8 version, in place (the prepared model is
        consumed), in eval mode; float islands stay float.

        Not a copy: a model whose hooked modules were swapped cannot always be deep-copied
        (timm keeps handles to the swapped modules' hook dicts).
        """
        from torch.ao.quantization.quantize_fx import convert_fx

        plan = quantization_plan(model)
        if plan is None:
            raise ValueError("convert() needs a model returned by prepare()")
        set_engine(self.backend)
        model.eval()
        all_hooks = _load(model, _HOOKS_KEY)
        for name in plan["units"]:
            prepared = model.get_submodule(name)
            hooks = all_hooks[name]
            with quiet():
                converted = convert_fx(prepared)
            restore_hooks(converted, hooks)
            model = _replace(model, name, converted)
        _store(model, PLAN_ATTR, {**plan, "converted": True})
        _store(model, _HOOKS_KEY, all_hooks)
        return model


class PostTrainingQuantizer(Quantizer):
    """Static int8 post-training quantization: observers collect activation ranges on a few
    calibration inputs, then :meth:`convert` quantizes weights (per channel) and activations."""

    def __init__(self, *, num_calibration_images: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_calibration_images = num_calibration_images

    def calibrate(self, model: nn.Module, inputs: Iterable[Any]) -> int:
        """Run the prepared model (eval, no grad) on at most ``num_calibration_images`` inputs
        (a tuple is unpacked into arguments); returns how many ran."""
        model.eval()
        limited = (x for i, x in zip(range(self.num_calibration_images), inputs))
        with torch.no_grad(), quiet():
            return iter_calls(model, limited)

    def quantize(self, model: nn.Module, inputs: Sequence[Any]) -> nn.Module:
        """prepare (on the first input) → calibrate → convert."""
        if not inputs:
            raise ValueError("post-training quantization needs at least one calibration input")
        prepared = self.prepare(model, inputs[0])
        self.calibrate(prepared, inputs)
        return self.convert(prepared)


class QATQuantizer(Quantizer):
    """Quantization-aware fine-tuning: fake-quantized training, BN statistics frozen after
    ``freeze_bn_after`` iterations, observers after ``freeze_observers_after``, then convert."""

    is_qat = True

    def __init__(
        self,
        *,
        iterations: int = 100,
        lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        freeze_bn_after: int = 50,
        freeze_observers_after: int = 80,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.iterations = iterations
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.freeze_bn_after = freeze_bn_after
        self.freeze_observers_after = freeze_observers_after

    def on_iteration(self, model: nn.Module, iteration: int) -> None:
        """Freeze BN statistics / observers when ``iteration`` reaches their thresholds."""
        from torch.ao.nn.intrinsic.qat import freeze_bn_stats
        from torch.ao.quantization import disable_observer

        if iteration == self.freeze_bn_after:
            model.apply(freeze_bn_stats)
        if iteration == self.freeze_observers_after:
            model.apply(disable_observer)

    def fit(
        self,
        model: nn.Module,
        batches: Iterable[Any],
        *,
        loss_fn: Callable[[Any], torch.Tensor] | None = None,
        log: Callable[[int, float], None] | None = None,
    ) -> list[float]:
        """Fine-tune a prepared model for ``iterations`` steps of SGD; returns the losses.

        Each batch is passed to the model like an input of :meth:`calibrate`; the output (a
        dict of losses is summed, as detectors return) goes through ``loss_fn`` if given.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("QAT fine-tuning: the prepared model has no trainable parameters")
        opt = torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        model.train()
        losses: list[float] = []
        with quiet():
            for it, batch in zip(range(self.iterations), batches):
                self.on_iteration(model, it)
                out = model(*batch) if isinstance(batch, tuple) else model(batch)
                if loss_fn is not None:
                    out = loss_fn(out)
                loss = sum(out.values()) if isinstance(out, dict) else out
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"QAT fine-tuning: loss is {float(loss)} at step {it}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss))
                if log is not None:
                    log(it, losses[-1])
        model.eval()
        return losses

    def describe(self, units: list[str]) -> dict[str, Any]:
        return {**super().describe(units), "iterations": self.iterations}


__all__ = [
    "PLAN_ATTR",
    "PostTrainingQuantizer",
    "QATQuantizer",
    "Quantizer",
    "quantization_plan",
    "quiet",
    "set_engine",
]
