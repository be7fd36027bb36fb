"""Learning-rate schedule: linear warm-up then step decay (detectron2's WarmupMultiStepLR).

The LR is a pure function of the iteration, so resuming needs only the iteration number and the
schedule's parameters (kept in the trainer state for a consistency check).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WarmupStepSchedule:
    """LR at iteration ``it`` = base_lr × warm-up factor × gamma^(number of steps ≤ it)."""

    base_lr: float
    steps: tuple[int, ...]
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.1

    def factor(self, it: int) -> float:
        decay = self.gamma ** bisect_right(self.steps, it)
        if it >= self.warmup_iters:
            return decay
        alpha = it / self.warmup_iters
        return decay * (self.warmup_factor * (1 - alpha) + alpha)

    def lr(self, it: int) -> float:
        return self.base_lr * self.factor(it)

    def apply(self, optimizer: Any, it: int) -> float:
        """Set every param group's LR for iteration ``it`` (groups keep their own multiplier)."""
        lr = self.lr(it)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state["steps"] = list(self.steps)
        return state

    @classmethod
    def from_config(cls, config: Any) -> WarmupStepSchedule:
        """The schedule a :class:`~fnl_detector.train.config.TrainConfig` describes."""
        return cls(
            base_lr=config.lr,
            steps=tuple(config.steps),
            gamma=config.gamma,
            warmup_iters=config.warmup_iters,
            warmup_factor=config.warmup_factor,
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> WarmupStepSchedule:
        return cls(**{**state, "steps": tuple(state["steps"])})
