"""Training: solver, schedule, deterministic data order, checkpoints, DDP, evaluation, hooks.

Importing this package stays light (``fnl --help`` reaches it through the ``train`` command);
the torch-based pieces load on first use::

    from fnl_detector.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig.scaled(2000, batch_size=4), train_set, "runs/b", spec=spec)
    summary = trainer.train()
"""

from __future__ import annotations

from typing import Any

from fnl_detector.train.config import TrainConfig

_LAZY = {
    "Trainer": "fnl_detector.train.loop",
    "HookBase": "fnl_detector.train.hooks",
    "NonFiniteLossError": "fnl_detector.train.loop",
    "CheckpointError": "fnl_detector.train.checkpoint",
    "WarmupStepSchedule": "fnl_detector.train.schedule",
    "evaluate_model": "fnl_detector.train.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fnl_detector.train' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "HookBase",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "WarmupStepSchedule",
    "evaluate_model",
]
