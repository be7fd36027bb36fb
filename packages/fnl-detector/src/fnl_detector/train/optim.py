"""SGD or AdamW with weight decay on every parameter except those of normalisation layers.

Norm layers are recognised by type, as detectron2's ``get_default_optimizer_params`` does
(``SOLVER.WEIGHT_DECAY_NORM`` applies to torch's batch/group/instance/layer norms and their
subclasses, such as timm's ``BatchNormAct2d``). Other parameters, the biases and the BiFPN's
fusion weights (``FastNormalizedFusion``) included, get ``SOLVER.WEIGHT_DECAY``.
"""

from __future__ import annotations

import torch
from torch import nn

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def is_norm(module: nn.Module) -> bool:
    """True for torch's normalisation layers and their subclasses."""
    return isinstance(module, _NORM_TYPES)


def param_groups(
    model: nn.Module, weight_decay: float, weight_decay_norm: float
) -> list[dict[str, object]]:
    """Two groups: norm-layer parameters (``weight_decay_norm``) and the rest."""
    norm_params: list[nn.Parameter] = []
    other_params: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (norm_params if is_norm(module) else other_params).append(param)
    groups = [
        {"params": other_params, "weight_decay": weight_decay},
        {"params": norm_params, "weight_decay": weight_decay_norm},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float,
    weight_decay: float,
    weight_decay_norm: float,
    kind: str = "sgd",
) -> torch.optim.Optimizer:
    """``kind`` ``sgd`` (momentum, L2 decay) or ``adamw`` (beta1 = ``momentum``, decoupled)."""
    groups = param_groups(model, weight_decay, weight_decay_norm)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {kind!r}")
