"""BatchNorm conversion for timm backbones: frozen, trainable or synchronised.

timm fuses BatchNorm and its activation into one ``BatchNormAct2d`` module (a ``BatchNorm2d``
subclass carrying ``drop`` and ``act`` submodules). Replacing it by a plain frozen BatchNorm
silently drops the activation, so :class:`FrozenBatchNormAct2d` takes the ``drop`` and ``act``
modules over; a plain ``BatchNorm2d`` becomes the same class with identity ``drop``/``act``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import convert_sync_batchnorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class FrozenBatchNormAct2d(nn.Module):
    """BatchNorm2d (+ timm's fused drop/activation) with fixed statistics and affine values.

    ``weight``, ``bias``, ``running_mean`` and ``running_var`` are buffers, not parameters. The
    state-dict keys are exactly ``nn.BatchNorm2d``'s (``num_batches_tracked`` included, kept
    only for checkpoint compatibility; a missing one is tolerated), so checkpoints move freely
    between ``frozen_bn`` and ``bn`` backbones. The forward pass is ``F.batch_norm`` in
    inference mode, so the output equals the original module's in ``eval()`` bit for bit.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        *,
        drop: nn.Module | None = None,
        act: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    @classmethod
    def from_batch_norm(cls, bn: _BatchNorm) -> FrozenBatchNormAct2d:
        """Frozen copy of ``bn`` (values copied, fused ``drop``/``act`` modules reused)."""
        frozen = cls(
            bn.num_features, bn.eps, drop=getattr(bn, "drop", None), act=getattr(bn, "act", None)
        )
        ref = bn.weight if bn.affine else bn.running_mean
        if ref is not None:
            frozen = frozen.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats and bn.running_mean is not None:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
            if bn.num_batches_tracked is not None:
                frozen.num_batches_tracked.copy_(bn.num_batches_tracked)
        return frozen

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.setdefault(prefix + "num_batches_tracked", self.num_batches_tracked)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )
        return self.act(self.drop(x))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _is_bn2d(module: nn.Module) -> bool:
    return isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm))


def _replace(module: nn.Module, convert: Callable[[_BatchNorm], nn.Module]) -> nn.Module:
    """Replace every 2-D BatchNorm below ``module`` (or ``module`` itself) by ``convert(bn)``."""
    if _is_bn2d(module):
        return convert(module)  # type: ignore[arg-type]
    for name, child in module.named_children():
        new = _replace(child, convert)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Turn every BatchNorm2d/SyncBatchNorm (incl. timm's fused variants) into a frozen one.

    Works in place on the children of ``module``; returns ``module`` (or its replacement when
    ``module`` itself is a BatchNorm).
    """
    return _replace(module, FrozenBatchNormAct2d.from_batch_norm)


def set_batch_norm_hyperparams(
    module: nn.Module, *, eps: float | None = None, momentum: float | None = None
) -> None:
    """Set eps and/or momentum on every BatchNorm below ``module`` (None keeps the value)."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            if eps is not None:
                m.eps = eps
            if momentum is not None:
                m.momentum = momentum


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Apply the backbone ``norm`` option: ``frozen_bn``, ``bn`` (unchanged) or ``sync_bn``."""
    if norm == "frozen_bn":
        return freeze_batch_norm(module)
    if norm == "bn":
        return module
    if norm == "sync_bn":
        return convert_sync_batchnorm(module)
    raise ValueError(f"norm must be 'frozen_bn', 'bn' or 'sync_bn', got {norm!r}")


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (frozen-BN values are buffers and do not count)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "FrozenBatchNormAct2d",
    "convert_norm",
    "count_parameters",
    "freeze_batch_norm",
    "set_batch_norm_hyperparams",
]
