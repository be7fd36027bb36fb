"""fnl-backbones: feature-extractor backbones for FnL.

Any timm CNN (``TimmBackbone``, registered as the ``timm`` backbone), the paper's backbones
(:data:`fnl_backbones.paper.PAPER_BACKBONES`), BatchNorm conversion (frozen / trainable /
synchronised) and freezing. Importing this package does not import torch; the torch-based
names below load on first access.
"""

from __future__ import annotations

from typing import Any

from fnl_backbones.config import TimmBackboneConfig
from fnl_backbones.paper import MOBILE_B_BACKBONE, PAPER_BACKBONES, PaperBackbone, paper_backbone

_LAZY = {
    "TimmBackbone": "fnl_backbones.timm_backbone",
    "FrozenBatchNormAct2d": "fnl_backbones.norm",
    "count_parameters": "fnl_backbones.norm",
    "WeightsFileError": "fnl_backbones.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fnl_backbones' has no attribute {name!r}")


__all__ = [
    "MOBILE_B_BACKBONE",
    "PAPER_BACKBONES",
    "FrozenBatchNormAct2d",
    "PaperBackbone",
    "TimmBackbone",
    "TimmBackboneConfig",
    "WeightsFileError",
    "count_parameters",
    "paper_backbone",
]
