"""Training options (the solver and the loop), validated by pydantic; no torch import.

Defaults are the reference's s1x schedule (docs/paper.md, "Training and test settings"): SGD,
momentum 0.9, weight decay 1e-4 (none on norm parameters), LR 0.002 for a batch of 16, 130k
iterations with ×0.1 at 100k and 120k, linear warm-up over 1000 iterations from 0.1 × LR, float32.
:meth:`TrainConfig.scaled` stretches a schedule (``s1x``, or ``s3x``: 390k iterations with ×0.1 at
330k and 370k) proportionally to another run length.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The paper's s1x schedule, used to scale steps and warm-up to other run lengths.
PAPER_ITERS = 130_000
PAPER_STEPS = (100_000, 120_000)
PAPER_WARMUP = 1000
#: The reference's schedules by name (a detector spec's ``schedule``): iterations, LR steps.
SCHEDULES: dict[str, tuple[int, tuple[int, ...]]] = {
    "s1x": (PAPER_ITERS, PAPER_STEPS),
    "s3x": (390_000, (330_000, 370_000)),
}


class TrainConfig(BaseModel):
    """Everything the trainer needs besides the model spec and the data."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    iters: int = Field(PAPER_ITERS, gt=0, description="total optimiser steps")
    batch_size: int = Field(16, gt=0, description="images per step, summed over all processes")
    lr: float = Field(0.002, gt=0, description="base learning rate")
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd",
        description="sgd (the paper's: momentum, L2 weight decay) or adamw (decoupled weight "
        "decay; trains much faster from random weights, see the CPU toy recipe)",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (adamw: beta1)")
    weight_decay: float = Field(1e-4, ge=0)
    weight_decay_norm: float = Field(0.0, ge=0, description="weight decay of norm parameters")
    warmup_iters: int = Field(PAPER_WARMUP, ge=0)
    warmup_factor: float = Field(0.1, gt=0, le=1, description="LR multiplier at iteration 0")
    steps: tuple[int, ...] = Field(PAPER_STEPS, description="iterations where LR is × gamma")
    gamma: float = Field(0.1, gt=0, le=1)
    clip_grad_norm: float | None = Field(None, gt=0, description="max global gradient L2 norm")
    amp: bool = Field(
        False,
        description="mixed precision (CUDA only; ignored on CPU). Off by default, as the "
        "reference trains in float32 (SOLVER.AMP.ENABLED false)",
    )
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0, description="data-loading worker processes per rank")
    log_period: int = Field(20, gt=0)
    checkpoint_period: int = Field(5000, gt=0)
    eval_period: int = Field(0, ge=0, description="evaluate every N iterations (0: at end only)")
    eval_at_start: bool = Field(False, description="also evaluate the untrained model")
    eval_max_images: int | None = Field(None, gt=0, description="cap on held-out images")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="wall-clock budget: iterations are fitted to it after a short "
        "speed measurement (the schedule is rescaled once, before warm-up ends)",
    )
    num_threads: int | None = Field(
        None, gt=0, description="torch CPU threads (default: torch's choice, one per core)"
    )
    sync_bn: bool = Field(
        False, description="convert BatchNorm layers to SyncBatchNorm when running distributed"
    )

    @model_validator(mode="after")
    def _check_steps(self) -> TrainConfig:
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"steps must be increasing, got {list(self.steps)}")
        if any(s <= 0 for s in self.steps):
            raise ValueError(f"steps must be positive, got {list(self.steps)}")
        return self

    @classmethod
    def scaled(cls, iters: int, schedule: str = "s1x", **options: object) -> TrainConfig:
        """The reference ``schedule`` (``s1x`` or ``s3x``) stretched to ``iters`` steps;
        ``options`` override any field."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
        total, steps = SCHEDULES[schedule]
        factor = iters / total
        defaults: dict[str, object] = {
            "iters": iters,
            "steps": tuple(max(1, round(s * factor)) for s in steps),
            "warmup_iters": min(PAPER_WARMUP, max(1, round(PAPER_WARMUP * factor))),
            "checkpoint_period": max(1, min(5000, iters // 4 or 1)),
        }
        defaults.update(options)
        return cls(**defaults)

    def rescaled(self, iters: int) -> TrainConfig:
        """This config with its steps and warm-up stretched proportionally to ``iters``."""
        factor = iters / self.iters
        return self.model_copy(
            update={
                "iters": iters,
                "steps": tuple(max(1, round(s * factor)) for s in self.steps),
                "warmup_iters": round(self.warmup_iters * factor),
                "checkpoint_period": max(1, min(self.checkpoint_period, iters)),
            }
        )
